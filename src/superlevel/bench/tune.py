"""The tuning protocol: equal budgets, validation-only selection, then a multi-seed rerun.

For every optimizer on a task:

1. **Search.** ``trials`` runs over the optimizer's search space, all with the same seed
   (``trial_seed``). Two modes:

   - ``optuna``: a seeded TPE sampler; the study lives in Optuna's RDB storage (by
     default SQLite next to the results database, ``<db stem>.optuna.db``; any
     SQLAlchemy URL for a cluster), so an interrupted search resumes and counts the
     trials it already has. With an executor of ``N`` workers, trials are asked for
     ``N`` at a time and evaluated in parallel; the batch is told back in trial order, so
     a search is reproducible for a given ``N`` (it is a different search for another
     ``N``: the sampler sees fewer results before it proposes).
   - ``grid`` (DeepOBS): only the learning rate, on ``trials`` log-spaced points of its
     range; other hyperparameters keep their defaults. This is what the LR-sensitivity
     plot shows.

2. **Select** the setting with the best *validation* metric of the last epoch. The test
   split is never looked at. Diverged trials are never selected; if all diverge, the
   defaults are used and a warning says so.

3. **Rerun** the selected setting over seeds ``1..seeds`` (tag ``tuned``); the report
   compares these.

Each trial is an ordinary run in the results store (tag ``trial`` or ``grid``), so a
trial that is also a final seed is not computed twice. Grid points of every optimizer,
and then the reruns of every optimizer, go to the executor as one batch each.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from superlevel.bench.optimizers import OptimizerSpec, get_optimizer
from superlevel.bench.run import (
    WARNING,
    Log,
    RunConfig,
    RunOutcome,
    check_positive,
    executor_or_default,
    make_config,
    run_many,
)
from superlevel.bench.store import Store
from superlevel.bench.tasks import get_task

if TYPE_CHECKING:
    import optuna

    from superlevel.bench.executors import Executor

MODES = ("optuna", "grid")


@dataclass
class TuneResult:
    """The outcome of tuning one optimizer on one task.

    Attributes:
        optimizer: optimizer name.
        mode: ``optuna`` or ``grid``.
        trials: one dict per trial: ``hparams``, ``status``, ``val_metric``.
        best_hparams: the selected (complete) hyperparameters.
        best_val: its validation metric (``None`` when every trial diverged).
        final: the reruns over seeds.
    """

    optimizer: str
    mode: str
    trials: list[dict[str, Any]] = field(default_factory=list)
    best_hparams: dict[str, Any] = field(default_factory=dict)
    best_val: float | None = None
    final: list[RunOutcome] = field(default_factory=list)


def study_path_for(db: str | Path) -> Path:
    """Default Optuna storage file for results database ``db``: ``<stem>.optuna.db``."""
    db = Path(db)
    return db.with_name(f"{db.stem}.optuna.db")


def _better(a: float, b: float, higher: bool) -> bool:
    return a > b if higher else a < b


def _finished_value(trial: Mapping[str, Any]) -> float | None:
    """A trial record's validation metric, or ``None`` unless it finished with a finite one."""
    v = trial["val_metric"]
    if trial["status"] != "finished" or v is None or not math.isfinite(v):
        return None
    return float(v)


def tune(
    task: str,
    optimizers: Sequence[str],
    *,
    trials: int,
    seeds: int,
    store: Store,
    budget: str = "quick",
    epochs: int | None = None,
    task_options: Mapping[str, Any] | None = None,
    mode: str = "optuna",
    study_path: str | Path | None = None,
    storage: str | None = None,
    sampler_seed: int = 0,
    trial_seed: int = 1,
    executor: Executor | None = None,
    device: str = "cpu",
    data_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = False,
    log: Log | None = None,
    retry_failed: bool = False,
) -> dict[str, TuneResult]:
    """Tune every optimizer in ``optimizers`` on ``task`` with the same number of trials.

    Args:
        task: task name.
        optimizers: optimizer names.
        trials: trials per optimizer (>= 1); grid points in ``grid`` mode.
        seeds: seeds ``1..seeds`` for the rerun of the selected setting (>= 1).
        store: results store for every run.
        budget: task budget name.
        epochs: epochs per run (``None``: the budget's).
        task_options: task options.
        mode: ``optuna`` or ``grid``.
        study_path: Optuna SQLite file (default: next to the store's database).
        storage: Optuna storage URL (any SQLAlchemy URL), instead of ``study_path``.
        sampler_seed: seed of the TPE sampler.
        trial_seed: run seed used by every trial.
        executor: where runs train (default: this process); its ``workers`` trials are
            evaluated at once.
        device, data_dir, checkpoint_dir, progress, retry_failed: as for
            :func:`~superlevel.bench.run.run_many`.
        log: receives one line per trial and per rerun (and every warning).

    Returns:
        ``{optimizer: TuneResult}``.
    """
    check_positive("trials", trials)
    check_positive("seeds", seeds)
    check_positive("trial_seed", trial_seed)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if storage is not None and study_path is not None:
        raise ValueError("give an Optuna storage URL or a study file, not both")
    specs = [get_optimizer(name) for name in optimizers]
    # Validates the task, budget, epochs and options before any work; resolves epochs.
    epochs = make_config(
        task, specs[0].name, trial_seed, budget=budget, epochs=epochs, task_options=task_options
    ).epochs
    higher = get_task(task).higher_is_better  # static metadata: no task is built here
    say = log or (lambda _msg: None)

    def config(spec: OptimizerSpec, seed: int, hp: Mapping[str, Any]) -> RunConfig:
        return make_config(
            task, spec.name, seed, budget=budget, epochs=epochs, hparams=hp,
            task_options=task_options,
        )  # fmt: skip

    results = {spec.name: TuneResult(spec.name, mode) for spec in specs}
    with executor_or_default(executor) as ex:

        def run(configs: Sequence[RunConfig], tag: str, bar: bool) -> list[RunOutcome]:
            return run_many(
                configs,
                store,
                executor=ex,
                device=device,
                data_dir=data_dir,
                checkpoint_dir=checkpoint_dir,
                tags=(tag,),
                progress=progress and bar,
                log=lambda msg: say(msg) if msg.startswith(WARNING) else None,
                retry_failed=retry_failed,
            )

        def run_trials(
            points: Sequence[tuple[OptimizerSpec, Mapping[str, Any]]], tag: str, bar: bool
        ) -> list[dict[str, Any]]:
            outs = run([config(spec, trial_seed, hp) for spec, hp in points], tag, bar)
            recs = []
            for (spec, hp), out in zip(points, outs, strict=True):
                row = store.get_run(out.config.run_id) or {}
                val = row.get("val_metric")
                recs.append(
                    {"hparams": out.config.hparams, "status": row.get("status"), "val_metric": val}
                )
                shown = ", ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in hp.items()
                )
                say(f"  {task}/{spec.name} trial [{shown}]: {row.get('status')}, val={val}")
            return recs

        if mode == "grid":  # every optimizer's grid in one batch
            say(f"tuning {', '.join(s.name for s in specs)} on {task}: {trials} grid points each")
            points = [(spec, {"lr": lr}) for spec in specs for lr in spec.space["lr"].grid(trials)]
            for (spec, _), rec in zip(points, run_trials(points, "grid", True), strict=True):
                results[spec.name].trials.append(rec)
        else:
            for spec in specs:
                say(f"tuning {spec.name} on {task}: {trials} optuna trials")
                study = _study(
                    spec, task, budget, epochs, task_options, higher, sampler_seed,
                    _storage(storage, study_path, store),
                )  # fmt: skip
                results[spec.name].trials = _optuna(spec, study, trials, ex.workers, run_trials)
        for spec in specs:
            res = results[spec.name]
            res.best_hparams, res.best_val = _select(spec, res.trials, higher)
            if res.best_val is None:
                say(f"  WARNING: every {spec.name} trial diverged; rerunning its defaults")
            else:
                say(f"  {spec.name}: selected {res.best_hparams} (val {res.best_val:.4g})")
        reruns = [(spec, seed) for spec in specs for seed in range(1, seeds + 1)]
        outs = run(
            [config(s, seed, results[s.name].best_hparams) for s, seed in reruns], "tuned", True
        )
        for (spec, _), out in zip(reruns, outs, strict=True):
            results[spec.name].final.append(out)
            say(f"  rerun {out.config.label()}: {out.status}")
    return results


def _select(
    spec: OptimizerSpec, trials: Sequence[Mapping[str, Any]], higher: bool
) -> tuple[dict[str, Any], float | None]:
    best_hp, best_val = spec.resolve(), None
    for t in trials:
        v = _finished_value(t)
        if v is not None and (best_val is None or _better(v, best_val, higher)):
            best_hp, best_val = dict(t["hparams"]), v
    return best_hp, best_val


def _storage(storage: str | None, study_path: str | Path | None, store: Store) -> Any:
    """Optuna's RDB storage: ``storage`` (a URL), else SQLite at ``study_path`` or next to
    the results database."""
    import optuna

    if storage is not None:
        return optuna.storages.RDBStorage(storage)
    path = Path(study_path) if study_path is not None else study_path_for(store.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(
        f"sqlite:///{path}", engine_kwargs={"connect_args": {"timeout": 30}}
    )


def _study(
    spec: OptimizerSpec,
    task: str,
    budget: str,
    epochs: int,
    task_options: Mapping[str, Any] | None,
    higher: bool,
    sampler_seed: int,
    storage: Any,
) -> optuna.Study:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    options = ",".join(f"{k}={v}" for k, v in sorted((task_options or {}).items()))
    return optuna.create_study(
        study_name=f"{task}|{budget}|{epochs}|{options}|{spec.name}",
        storage=storage,
        direction="maximize" if higher else "minimize",
        sampler=optuna.samplers.TPESampler(seed=sampler_seed),
        load_if_exists=True,
    )


def _suggest(spec: OptimizerSpec, trial: optuna.Trial) -> dict[str, Any]:
    hp: dict[str, Any] = {}
    for key, p in spec.space.items():
        if p.integer:
            hp[key] = trial.suggest_int(key, int(p.low), int(p.high), log=p.log)
        else:
            hp[key] = trial.suggest_float(key, p.low, p.high, log=p.log)
    return hp


def _optuna(
    spec: OptimizerSpec,
    study: optuna.Study,
    trials: int,
    batch: int,
    run_trials: Callable[..., list[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """``trials`` trials of ``study`` (counting those it has), ``batch`` at a time.

    Asked in order, evaluated together, told back in order: for a given ``batch`` the
    search is reproducible (with ``batch=1`` it is ``study.optimize`` exactly).
    """
    from optuna.trial import TrialState

    records: list[dict[str, Any]] = []
    # Trials from an earlier, interrupted search count towards the budget.
    previous = [
        t
        for t in study.trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    ]
    for t in previous:
        if t.state == TrialState.COMPLETE:
            records.append(
                {"hparams": spec.resolve(t.params), "status": "finished", "val_metric": t.value}
            )
    remaining = trials - len(previous)
    while remaining > 0:
        asked = [study.ask() for _ in range(min(batch, remaining))]
        points = [(spec, _suggest(spec, t)) for t in asked]
        for t, rec in zip(asked, run_trials(points, "trial", False), strict=True):
            records.append(rec)
            v = _finished_value(rec)
            if v is None:  # a diverged setting is a failed trial: it counts, never selected
                study.tell(t, state=TrialState.PRUNED)
            else:
                study.tell(t, v)
        remaining -= len(asked)
    return records
