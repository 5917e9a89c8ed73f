"""The tuning protocol: one for ``bench tune``, the demo, the report and the study.

For every optimizer on a setting (task, budget, epochs, options), with the same
:class:`Protocol` for all of them (Choi et al. 2019; AlgoPerf's external tuning):

1. **Search space.** The optimizer's own: every hyperparameter that defines it (lr for
   all; ``decay_total`` for the exponentially decayed ones; weight decay for AdamW;
   ``T_0``, ``T_mult`` for SGDR; ``max_norm`` for clipping), each a range with an
   extension step and hard limits (:class:`~superlevel.bench.optimizers.Param`).
2. **Trials.** ``trials`` points, the same number for every optimizer: a scrambled Halton
   sequence over the space (scipy's ``qmc``; the same sequence for every optimizer with
   as many dimensions), or, in one dimension, ``trials`` evenly spaced points (a grid is
   the lowest-discrepancy set on a line). ``lr-grid`` searches the lr alone, others at
   their defaults (DeepOBS).
3. **Every trial in full** (``halving=1``, the default), or **successive halving**
   (``halving=eta > 1``, opt-in): all trials train to the first rung (a fraction of the
   epochs), the best ``1/eta`` go on to the next, the last rung is the full run; a
   promoted trial resumes from its checkpoint (:mod:`superlevel.bench.run`), so no epoch
   is trained twice. Rungs: ``K = floor(log_eta(trials))`` halvings at epochs
   ``max(1, round(E / eta^(K - r)))`` (equal ones merged). Halving is not the default
   because it ranks schedules by their early progress: a trial whose lr decays over
   the whole run is judged at a rung long before its schedule has done its work
   (short-horizon bias); ``benchmarks/halving_bias.py`` measures what it changes.
4. **Selection on validation**, on the tuning seed (1001 by default), which is never a
   final seed: the best validation metric at the last rung. Diverged trials rank last
   and are never selected. The test split is never looked at.
5. **Edge rule.** While the selection lies less than one step from an end of its range
   (the optimum may lie beyond), that end is extended by one step (up to the hard
   limit) and the selection, moved to the new end, is trained in full; the better of the
   two is kept. Every extension is recorded, and so is every selection that still sits
   on an edge (at its hard limit, or when the rounds ran out).
6. **Finals** on seeds ``1..seeds``. A final that diverged is **scored**, not dropped:
   with the metric of the untrained model (epoch 0: chance accuracy, the starting
   suboptimality), counted in the tables. A final that *failed* (an error, not a
   divergence) stops the protocol with :class:`TuneError`.

The protocol is a function of the store: run again on a store that holds its runs, it
trains nothing and returns the same result, so an interrupted search resumes and a
report can *replay* it without training (``train=False``). Each tuning's result is kept
in the store (``tunings``) for the report.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from superlevel.bench.optimizers import OptimizerSpec, Param, get_optimizer
from superlevel.bench.run import (
    WARNING,
    Log,
    RunConfig,
    check_positive,
    checkpoint_path,
    executor_or_default,
    make_config,
    run_many,
)
from superlevel.bench.store import Store
from superlevel.bench.tasks import get_task

if TYPE_CHECKING:
    from superlevel.bench.executors import Executor

SEARCHES = ("halton", "lr-grid")
TRIAL, FINAL = "trial", "tuned"  # the tags of search runs and final runs


class TuneError(RuntimeError):
    """The protocol cannot go on: a run failed with an error (not a divergence)."""


class Incomplete(RuntimeError):  # noqa: N818 (a state, not a failure of the code)
    """Replaying (``train=False``): runs the protocol needs are not in the store."""

    def __init__(self, done: int, total: int) -> None:
        super().__init__(f"{done} of {total} runs of this step are stored")
        self.done, self.total = done, total


@dataclass(frozen=True)
class Protocol:
    """The tuning protocol every optimizer gets (see the module docstring).

    Attributes:
        trials: search points per optimizer (>= 1), the same for all.
        seeds: final seeds ``1..seeds`` (>= 1).
        tuning_seed: the seed every search run uses; must not be a final seed.
        search: ``halton`` (the whole space) or ``lr-grid`` (lr only).
        halving: successive-halving factor ``eta`` (1, the default: every trial in full;
            see the module docstring for why).
        sampler_seed: seed of the scrambled Halton sequence.
        max_rounds: at most this many rounds of edge extension.
    """

    trials: int = 9
    seeds: int = 5
    tuning_seed: int = 1001
    search: str = "halton"
    halving: int = 1
    sampler_seed: int = 0
    max_rounds: int = 8

    def __post_init__(self) -> None:
        for name in ("trials", "seeds", "tuning_seed", "halving"):
            check_positive(name, getattr(self, name))
        if self.search not in SEARCHES:
            raise ValueError(f"search must be one of {SEARCHES}, got {self.search!r}")
        if self.tuning_seed <= self.seeds:
            raise ValueError(
                f"tuning_seed {self.tuning_seed} is one of the final seeds 1..{self.seeds}: "
                "a seed that selected the setting must never be scored"
            )
        if (
            isinstance(self.sampler_seed, bool)
            or not isinstance(self.sampler_seed, int)
            or (self.sampler_seed < 0)
        ):
            raise ValueError(f"sampler_seed must be an integer >= 0, got {self.sampler_seed!r}")
        if (
            isinstance(self.max_rounds, bool)
            or not isinstance(self.max_rounds, int)
            or (self.max_rounds < 0)
        ):
            raise ValueError(f"max_rounds must be an integer >= 0, got {self.max_rounds!r}")

    @property
    def final_seeds(self) -> list[int]:
        return list(range(1, self.seeds + 1))


@dataclass(frozen=True)
class Setting:
    """What makes runs comparable across optimizers: task, budget, epochs, options."""

    task: str
    budget: str = "quick"
    epochs: int | None = None
    options: tuple[tuple[str, Any], ...] = ()

    def resolved(self) -> Setting:
        """This setting with its epochs resolved and checked (``make_config`` validates)."""
        cfg = make_config(self.task, "sgd", 1, budget=self.budget, epochs=self.epochs,
                          task_options=dict(self.options))  # fmt: skip
        return Setting(self.task, self.budget, cfg.epochs, tuple(sorted(self.options)))

    def config(self, optimizer: str, seed: int, hparams: Mapping[str, Any]) -> RunConfig:
        return make_config(self.task, optimizer, seed, budget=self.budget, epochs=self.epochs,
                           hparams=hparams, task_options=dict(self.options))  # fmt: skip

    def key(self) -> dict[str, Any]:
        return {"task": self.task, "budget": self.budget, "epochs": self.epochs,
                "task_options": dict(self.options)}  # fmt: skip


@dataclass
class Extension:
    """One extension of a range: ``dim``'s ``side`` moved from ``before`` to ``after``;
    the selection moved there scored ``value`` (``None``: diverged); ``kept`` when it
    became the selection."""

    dim: str
    side: str
    before: list[float]
    after: list[float]
    hparams: dict[str, Any]
    value: float | None
    kept: bool


@dataclass
class TuneResult:
    """The outcome of tuning one optimizer on one setting.

    Attributes:
        optimizer: its name.
        setting: task, budget, epochs, options.
        protocol: the :class:`Protocol`, as a dict.
        space: per searched hyperparameter, its range ``[low, high]`` after extensions.
        initial_space: the ranges the search started from.
        rungs: ``[[epochs, trials trained to them], ...]``.
        trials: per trial ``{"hparams", "run_id", "values": {epochs: val or None}}``.
        best_hparams: the selected (complete) hyperparameters.
        best_val: its validation metric (``None``: every trial diverged, defaults kept).
        extensions: every :class:`Extension`, in order.
        edges: per hyperparameter whose selection still lies on an edge, why.
        finals: run ids of the final seeds ``1..seeds``, in seed order.
        compute: ``{"runs", "steps", "train_s", "full_runs"}`` of the search (finals not
            included): ``full_runs`` is steps over the steps of one full run.
    """

    optimizer: str
    setting: dict[str, Any]
    protocol: dict[str, Any]
    space: dict[str, list[float]] = field(default_factory=dict)
    initial_space: dict[str, list[float]] = field(default_factory=dict)
    rungs: list[list[int]] = field(default_factory=list)
    trials: list[dict[str, Any]] = field(default_factory=list)
    best_hparams: dict[str, Any] = field(default_factory=dict)
    best_val: float | None = None
    extensions: list[Extension] = field(default_factory=list)
    edges: dict[str, str] = field(default_factory=dict)
    finals: list[str] = field(default_factory=list)
    compute: dict[str, float] = field(default_factory=dict)

    @property
    def tuning_id(self) -> str:
        return tuning_id(self.setting, self.optimizer, self.protocol)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TuneResult:
        d = dict(data)
        d["extensions"] = [Extension(**e) for e in d.get("extensions", [])]
        return cls(**d)


def tuning_id(setting: Mapping[str, Any], optimizer: str, protocol: Mapping[str, Any]) -> str:
    """16 hex digits of ``sha256`` over setting, optimizer and protocol."""
    text = json.dumps({"setting": setting, "optimizer": optimizer, "protocol": protocol},
                      sort_keys=True)  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ------------------------------------------------------------------ pieces of the protocol


def rung_ladder(epochs: int, trials: int, eta: int) -> list[tuple[int, int]]:
    """``[(epochs_r, trials trained to epochs_r), ...]``, the last rung the full run.

    ``K = floor(log_eta(trials))`` halvings; rung ``r`` at ``max(1, round(E / eta^(K-r)))``
    epochs with ``ceil(trials / eta^r)`` trials; rungs of equal epochs are merged (the
    first kept), so a short run has fewer rungs.
    """
    check_positive("epochs", epochs)
    check_positive("trials", trials)
    check_positive("halving", eta)
    halvings = 0
    while eta > 1 and eta ** (halvings + 1) <= trials:
        halvings += 1
    distinct: list[int] = []
    for r in range(halvings + 1):
        e = max(1, round(epochs / eta ** (halvings - r)))
        if not distinct or e > distinct[-1]:
            distinct.append(e)
    distinct[-1] = epochs
    return [(e, math.ceil(trials / eta**r)) for r, e in enumerate(distinct)]


def searched_space(spec: OptimizerSpec, search: str) -> dict[str, Param]:
    """The dimensions ``search`` tunes: the whole space, or the lr alone (``lr-grid``)."""
    if search == "lr-grid":
        return {"lr": spec.space["lr"]}
    return dict(spec.space)


def candidates(space: Mapping[str, Param], trials: int, sampler_seed: int) -> list[dict[str, Any]]:
    """The search points: a grid in one dimension, a scrambled Halton sequence in more."""
    dims = list(space)
    if len(dims) == 1:
        (dim,) = dims
        return [{dim: v} for v in space[dim].grid(trials)]
    from scipy.stats import qmc

    units = qmc.Halton(d=len(dims), scramble=True, seed=sampler_seed).random(trials)
    return [{d: space[d].at(float(u[j])) for j, d in enumerate(dims)} for u in units]


def final_score(row: Mapping[str, Any]) -> float | None:
    """A final run's score: its test metric, or, when it diverged, the untrained model's
    (``initial_test_metric``); ``None`` when the run is not done."""
    if row.get("status") == "finished":
        return row.get("test_metric")
    if row.get("status") == "diverged":
        return row.get("initial_test_metric")
    return None


def _better(a: float, b: float, higher: bool) -> bool:
    return a > b if higher else a < b


def _rank_key(value: float | None, higher: bool) -> float:
    if value is None or not math.isfinite(value):
        return math.inf  # diverged: last
    return -value if higher else value


@dataclass
class _Request:
    configs: list[RunConfig]
    until_epoch: int | None
    tag: str
    discard: list[str] = field(default_factory=list)  # trials eliminated: drop checkpoints


def _check_failures(rows: Sequence[Mapping[str, Any]], configs: Sequence[RunConfig]) -> None:
    failed = [(c, r) for c, r in zip(configs, rows, strict=True) if r["status"] == "failed"]
    if failed:
        shown = "; ".join(f"{c.label()}: {r['info'].get('error')}" for c, r in failed[:3])
        raise TuneError(
            f"{len(failed)} of {len(configs)} runs failed with an error (an error is not a "
            f"divergence; fix it and rerun with --retry-failed): {shown}"
        )


def _val_at(store: Store, row: Mapping[str, Any], epochs: int) -> float | None:
    """The validation metric of a stored run after ``epochs`` epochs (``None``: diverged)."""
    if row["status"] == "diverged":
        return None
    if row["epochs_done"] == epochs or (row["status"] == "finished" and epochs >= row["epochs"]):
        return row["val_metric"]
    for rec in store.epoch_metrics(row["run_id"]):
        if rec["epoch"] == epochs and rec["split"] == "val":
            return rec["metric"]
    return None


def _protocol(
    setting: Setting, spec: OptimizerSpec, protocol: Protocol, store: Store
) -> Generator[_Request, None, TuneResult]:
    """The protocol for one optimizer, as a generator of run requests (see :func:`tune`).

    It yields what it needs trained; once resumed, the runs are in the store and it
    reads them from there.
    """
    higher = get_task(setting.task).higher_is_better
    epochs = setting.epochs
    assert epochs is not None
    space = searched_space(spec, protocol.search)
    result = TuneResult(
        spec.name, setting.key(), asdict(protocol),
        initial_space={d: [p.low, p.high] for d, p in space.items()},
    )  # fmt: skip

    def config(hp: Mapping[str, Any], seed: int) -> RunConfig:
        return setting.config(spec.name, seed, spec.resolve(hp))

    def rows(configs: Sequence[RunConfig]) -> list[dict[str, Any]]:
        out = [store.get_run(c.run_id) for c in configs]
        assert all(r is not None for r in out)
        return out  # type: ignore[return-value]

    points = candidates(space, protocol.trials, protocol.sampler_seed)
    trial_configs = [config(p, protocol.tuning_seed) for p in points]
    result.trials = [{"hparams": p, "run_id": c.run_id, "values": {}}
                     for p, c in zip(points, trial_configs, strict=True)]  # fmt: skip
    ladder = rung_ladder(epochs, protocol.trials, protocol.halving)
    result.rungs = [[e, n] for e, n in ladder]
    alive = list(range(len(points)))
    dropped: list[str] = []
    for r, (rung_epochs, n) in enumerate(ladder):
        alive = alive[:n]
        configs = [trial_configs[i] for i in alive]
        yield _Request(configs, None if rung_epochs == epochs else rung_epochs, TRIAL, dropped)
        got = rows(configs)
        _check_failures(got, configs)
        for i, row in zip(alive, got, strict=True):
            result.trials[i]["values"][str(rung_epochs)] = _val_at(store, row, rung_epochs)
        alive.sort(key=lambda i, e=rung_epochs: _rank_key(result.trials[i]["values"][str(e)],
                                                          higher))  # fmt: skip
        nxt = ladder[r + 1][1] if r + 1 < len(ladder) else 1
        dropped = [trial_configs[i].run_id for i in alive[nxt:]]
    best_i = alive[0]
    best_hp = dict(points[best_i])
    best_val = result.trials[best_i]["values"][str(epochs)]
    if best_val is not None:
        for _round in range(protocol.max_rounds):
            moves = []
            for dim, param in space.items():
                side = param.edge(best_hp[dim])
                wider = None if side is None else param.extended(side)
                if wider is None:
                    continue
                space[dim] = wider
                moved = {**best_hp, dim: wider.low if side == "low" else wider.high}
                moves.append((dim, side, param, wider, moved))
            if not moves:
                break
            configs = [config(m[4], protocol.tuning_seed) for m in moves]
            yield _Request(configs, None, TRIAL)
            got = rows(configs)
            _check_failures(got, configs)
            for (dim, side, before, after, moved), row in zip(moves, got, strict=True):
                value = _val_at(store, row, epochs)
                kept = value is not None and _better(value, best_val, higher)
                if kept:
                    best_hp, best_val = moved, value
                result.extensions.append(Extension(
                    dim, side, [before.low, before.high], [after.low, after.high], moved,
                    value, kept))  # fmt: skip
        for dim, param in space.items():
            side = param.edge(best_hp[dim])
            if side is not None:
                at_limit = param.extended(side) is None
                result.edges[dim] = (f"{side} edge at its hard limit" if at_limit else
                                     f"{side} edge, extension rounds used up")  # fmt: skip
    result.space = {d: [p.low, p.high] for d, p in space.items()}
    result.best_hparams = spec.resolve(best_hp if best_val is not None else None)
    result.best_val = best_val
    finals = [config(result.best_hparams, s) for s in protocol.final_seeds]
    yield _Request(finals, None, FINAL)
    final_rows = rows(finals)
    _check_failures(final_rows, finals)
    result.finals = [c.run_id for c in finals]
    search = [r for r in (store.get_run(rid) for rid in _search_run_ids(result)) if r]
    steps = sum(int(r["steps"] or 0) for r in search)
    full = max((int(r["steps"] or 0) for r in final_rows if r["status"] == "finished"),
               default=0)  # fmt: skip
    result.compute = {
        "runs": len(search),
        "steps": steps,
        "train_s": float(sum(r["train_s"] or 0.0 for r in search)),
        "full_runs": steps / full if full else math.nan,
    }
    return result


def _search_run_ids(result: TuneResult) -> list[str]:
    """Every distinct run the search trained (trials and extensions), finals excluded."""
    setting = Setting(result.setting["task"], result.setting["budget"],
                      result.setting["epochs"], tuple(sorted(result.setting["task_options"]
                                                             .items())))  # fmt: skip
    ids = [t["run_id"] for t in result.trials]
    seed = result.protocol["tuning_seed"]
    spec = get_optimizer(result.optimizer)
    ids += [setting.config(spec.name, seed, spec.resolve(e.hparams)).run_id
            for e in result.extensions]  # fmt: skip
    return list(dict.fromkeys(ids))


# ------------------------------------------------------------------ the driver


def tune_settings(
    settings: Sequence[Setting],
    optimizers: Sequence[str],
    protocol: Protocol,
    store: Store,
    *,
    train: bool = True,
    executor: Executor | None = None,
    device: str = "cpu",
    data_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = False,
    log: Log | None = None,
    retry_failed: bool = False,
    other_code: str = "refuse",
    tags: Sequence[str] = (),
    on_outcome: Callable[[Any], None] | None = None,
) -> dict[tuple[str, str], TuneResult]:
    """Run :class:`Protocol` for every optimizer on every setting, all in step.

    Every step's runs, over all settings and optimizers, go to the executor as one batch
    (per rung epoch), so a pool trains them in parallel; the results do not depend on
    the number of workers.

    Args:
        settings: the settings (epochs resolved here).
        optimizers: optimizer names.
        protocol: the protocol, the same for all.
        store: where every run goes, and the tuning results.
        train: ``False`` replays the protocol from the store and trains nothing;
            :class:`Incomplete` says how far the store is.
        executor, device, data_dir, checkpoint_dir, progress, retry_failed, other_code:
            as for :func:`~superlevel.bench.run.run_many`.
        log: receives one line per selection, and every warning.
        tags: extra tags for every run (the study's section).
        on_outcome: called with each run's outcome as it is stored (``run_many``'s).

    Returns:
        ``{(setting key json, optimizer): TuneResult}``.

    Raises:
        TuneError: a run failed with an error.
        Incomplete: ``train=False`` and a step's runs are not all stored.
    """
    settings = [s.resolved() for s in settings]
    specs = [get_optimizer(name) for name in optimizers]
    say = log or (lambda _msg: None)
    gens = {(json.dumps(s.key(), sort_keys=True), sp.name): _protocol(s, sp, protocol, store)
            for s in settings for sp in specs}  # fmt: skip
    results: dict[tuple[str, str], TuneResult] = {}
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else store.path.parent / "checkpoints"
    with executor_or_default(executor if train else None) as ex:

        def ensure(configs: list[RunConfig], until: int | None, tag: str) -> None:
            if train:
                run_many(configs, store, executor=ex, device=device, data_dir=data_dir,
                         checkpoint_dir=checkpoint_dir, tags=(tag, *tags), progress=progress,
                         log=lambda m: say(m) if m.startswith(WARNING) else None,
                         retry_failed=retry_failed, until_epoch=until,
                         other_code=other_code, on_outcome=on_outcome)  # fmt: skip
                return
            done = 0
            for c in configs:
                row = store.get_run(c.run_id)
                st = None if row is None else row["status"]
                ok = st in ("finished", "diverged", "failed") or (
                    st == "paused" and until is not None and row["epochs_done"] >= until
                )
                done += ok
            if done < len(configs):
                raise Incomplete(done, len(configs))

        pending: dict[tuple[str, str], _Request] = {}
        for key, gen in gens.items():
            pending[key] = next(gen)
        while pending:
            groups: dict[tuple[int | None, str], list[tuple[str, str]]] = defaultdict(list)
            for key, req in pending.items():
                groups[(req.until_epoch, req.tag)].append(key)
            for (until, tag), keys in sorted(groups.items(), key=lambda g: (g[0][0] or 0, g[0][1])):
                configs = list({c.run_id: c for k in keys for c in pending[k].configs}.values())
                ensure(configs, until, tag)
                if train:
                    for k in keys:
                        for run_id in pending[k].discard:
                            checkpoint_path(ckpt_dir, run_id).unlink(missing_ok=True)
            advanced: dict[tuple[str, str], _Request] = {}
            for key in pending:
                try:
                    advanced[key] = gens[key].send(None)
                except StopIteration as stop:
                    results[key] = stop.value
            pending = advanced
    for (_, name), res in sorted(results.items()):
        what = (f"val {res.best_val:.4g}" if res.best_val is not None else
                "every trial diverged: its defaults")  # fmt: skip
        edges = f"; still on an edge: {res.edges}" if res.edges else ""
        say(f"  {res.setting['task']}/{name}: selected {_hp_text(res.best_hparams)} ({what}, "
            f"{len(res.extensions)} extension(s){edges})")  # fmt: skip
        if res.best_val is None:
            say(f"{WARNING}every {name} trial on {res.setting['task']} diverged; its finals "
                "use its defaults")  # fmt: skip
        if train:
            store.save_tuning(res.tuning_id, res.setting, name, res.protocol, res.to_json())
    return results


def tune(
    task: str,
    optimizers: Sequence[str],
    protocol: Protocol,
    store: Store,
    *,
    budget: str = "quick",
    epochs: int | None = None,
    task_options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, TuneResult]:
    """:func:`tune_settings` on one setting; ``{optimizer: TuneResult}``."""
    setting = Setting(task, budget, epochs, tuple(sorted((task_options or {}).items())))
    out = tune_settings([setting], optimizers, protocol, store, **kwargs)
    return {name: res for (_, name), res in out.items()}


def _hp_text(hp: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in sorted(hp.items())) + "}"  # fmt: skip
