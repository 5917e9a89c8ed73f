"""The tuning protocol: equal budgets, validation-only selection, then a multi-seed rerun.

For every optimizer on a task:

1. **Search.** ``trials`` runs over the optimizer's search space, all with the same seed
   (``trial_seed``). Two modes:

   - ``optuna``: a seeded TPE sampler; the study lives in SQLite (by default next to
     the results database, ``<db stem>.optuna.db``), so an interrupted search resumes
     and counts the trials it already has.
   - ``grid`` (DeepOBS): only the learning rate, on ``trials`` log-spaced points of its
     range; other hyperparameters keep their defaults. This is what the LR-sensitivity
     plot shows.

2. **Select** the setting with the best *validation* metric of the last epoch. The test
   split is never looked at. Diverged trials are never selected; if all diverge, the
   defaults are used and a warning says so.

3. **Rerun** the selected setting over seeds ``1..seeds`` (tag ``tuned``); the report
   compares these.

Each trial is an ordinary run in the results store (tag ``trial`` or ``grid``), so a
trial that is also a final seed is not computed twice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from superlevel.bench.optimizers import OptimizerSpec, get_optimizer
from superlevel.bench.runner import (
    RunOutcome,
    check_positive,
    make_config,
    resolve_device,
    run_one,
)
from superlevel.bench.store import Store

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
    sampler_seed: int = 0,
    trial_seed: int = 1,
    device: str = "cpu",
    data_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
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
        sampler_seed: seed of the TPE sampler.
        trial_seed: run seed used by every trial.
        device, data_dir, checkpoint_dir, progress: as for :func:`~superlevel.bench.runner.run_one`.
        log: receives one line per trial and per rerun.

    Returns:
        ``{optimizer: TuneResult}``.
    """
    from superlevel.bench.runner import environment
    from superlevel.bench.tasks import build_task

    check_positive("trials", trials)
    check_positive("seeds", seeds)
    check_positive("trial_seed", trial_seed)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    specs = [get_optimizer(name) for name in optimizers]
    # Validates the task, budget, epochs and options before any work; resolves epochs.
    epochs = make_config(
        task, specs[0].name, trial_seed, budget=budget, epochs=epochs, task_options=task_options
    ).epochs
    probe = build_task(
        task, seed=trial_seed, budget=budget, data_dir=data_dir, **dict(task_options or {})
    )
    higher = probe.higher_is_better
    del probe
    dev = resolve_device(device)
    env_id = store.environment_id(environment(dev))
    say = log or (lambda _msg: None)

    def run(spec: OptimizerSpec, seed: int, hp: Mapping[str, Any], tag: str) -> RunOutcome:
        cfg = make_config(
            task,
            spec.name,
            seed,
            budget=budget,
            epochs=epochs,
            hparams=hp,
            task_options=task_options,
        )
        return run_one(
            cfg,
            store,
            device=dev,
            data_dir=data_dir,
            checkpoint_dir=checkpoint_dir,
            tags=(tag,),
            progress=progress,
            env_id=env_id,
        )

    def run_trial(spec: OptimizerSpec, hp: Mapping[str, Any], tag: str) -> dict[str, Any]:
        cfg = run(spec, trial_seed, hp, tag).config
        row = store.get_run(cfg.run_id) or {}
        val = row.get("val_metric")
        rec = {"hparams": cfg.hparams, "status": row.get("status"), "val_metric": val}
        shown = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in hp.items()
        )
        say(f"  {task}/{spec.name} trial [{shown}]: {rec['status']}, val={val}")
        return rec

    results: dict[str, TuneResult] = {}
    for spec in specs:
        say(f"tuning {spec.name} on {task}: {trials} {mode} trials")
        if mode == "grid":
            res = _grid(spec, trials, run_trial)
        else:
            res = _optuna(
                spec,
                task,
                budget,
                epochs,
                task_options,
                trials,
                higher,
                study_path or study_path_for(store.path),
                sampler_seed,
                run_trial,
            )
        res.best_hparams, res.best_val = _select(spec, res.trials, higher)
        if res.best_val is None:
            say(f"  WARNING: every {spec.name} trial diverged; rerunning its defaults")
        else:
            say(f"  selected {res.best_hparams} (val {res.best_val:.4g})")
        for seed in range(1, seeds + 1):
            out = run(spec, seed, res.best_hparams, "tuned")
            res.final.append(out)
            say(f"  rerun {out.config.label()}: {out.status}")
        results[spec.name] = res
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


def _grid(spec: OptimizerSpec, points: int, run_trial: Callable[..., dict[str, Any]]) -> TuneResult:
    res = TuneResult(spec.name, "grid")
    for lr in spec.space["lr"].grid(points):
        res.trials.append(run_trial(spec, {"lr": lr}, "grid"))
    return res


def _optuna(
    spec: OptimizerSpec,
    task: str,
    budget: str,
    epochs: int,
    task_options: Mapping[str, Any] | None,
    trials: int,
    higher: bool,
    study_path: str | Path,
    sampler_seed: int,
    run_trial: Callable[..., dict[str, Any]],
) -> TuneResult:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study_path = Path(study_path)
    study_path.parent.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(
        f"sqlite:///{study_path}", engine_kwargs={"connect_args": {"timeout": 30}}
    )
    options = ",".join(f"{k}={v}" for k, v in sorted((task_options or {}).items()))
    name = f"{task}|{budget}|{epochs}|{options}|{spec.name}"
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize" if higher else "minimize",
        sampler=optuna.samplers.TPESampler(seed=sampler_seed),
        load_if_exists=True,
    )
    res = TuneResult(spec.name, "optuna")
    done_states = (
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
        optuna.trial.TrialState.FAIL,
    )

    def objective(trial: optuna.Trial) -> float:
        hp: dict[str, Any] = {}
        for key, p in spec.space.items():
            if p.integer:
                hp[key] = trial.suggest_int(key, int(p.low), int(p.high), log=p.log)
            else:
                hp[key] = trial.suggest_float(key, p.low, p.high, log=p.log)
        rec = run_trial(spec, hp, "trial")
        res.trials.append(rec)
        v = _finished_value(rec)
        if v is None:
            # A diverged setting is a failed trial: it counts, and is never selected.
            raise optuna.TrialPruned(f"run {rec['status']}")
        return v

    # Trials from an earlier, interrupted search count towards the budget.
    previous = [t for t in study.trials if t.state in done_states]
    for t in previous:
        if t.state == optuna.trial.TrialState.COMPLETE:
            hp = spec.resolve(t.params)
            res.trials.append({"hparams": hp, "status": "finished", "val_metric": t.value})
    remaining = trials - len(previous)
    if remaining > 0:
        study.optimize(objective, n_trials=remaining, catch=())
    return res
