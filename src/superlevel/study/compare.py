"""The study's tuned comparisons, on the benchmark's one protocol and one statistics module.

A :class:`Comparison` is optimizers on settings under
:class:`superlevel.bench.tune.Protocol` (equal trials, each in full, edge
extension, a tuning seed never scored, finals on seeds ``1..n``); :func:`run_comparison`
trains it through :func:`superlevel.bench.tune.tune_settings` and
:func:`load_comparison` replays it from the store without training. :func:`summarize`
compares a reference with every other optimizer through
:func:`superlevel.bench.stats.compare_family`: one Holm family per section, TOST against
the task's margin, the detectable difference when inconclusive. A diverged final seed is
scored as the untrained model (:func:`superlevel.bench.tune.final_score`), never dropped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from superlevel.bench.executors import make_executor
from superlevel.bench.report.render import Block, Paragraph
from superlevel.bench.stats import Comparison as PairedVerdict
from superlevel.bench.stats import compare_family
from superlevel.bench.tasks import get_task
from superlevel.bench.tune import Incomplete, Protocol, TuneResult, final_score, tune_settings
from superlevel.bench.tune import Setting as BenchSetting
from superlevel.study.common import Context, Tally, fmt, paired_tally


def protocol_text(trials: int, seeds: int, metric: str = "the validation metric") -> str:
    """The one sentence every tuned section says about how it tuned."""
    return (
        f"Each (setting, optimizer): the bench tuning protocol (docs/benchmark.md), {trials} "
        "quasi-random trials over the optimizer's whole search space, the same number for "
        "every optimizer, each trained for the full budget, ranges extended while the "
        "selection sits on "
        f"an edge, selected by {metric} of the tuning seed 1001; then the final seeds "
        f"1..{seeds}, never looked at during selection. A diverged final seed is scored as "
        "the untrained model. The test split selects nothing."
    )


@dataclass(frozen=True)
class Setting:
    """One problem a comparison is run on: a label, a harness task and its options, and
    its own budget and epochs where they differ from the comparison's."""

    label: str
    task: str
    options: tuple[tuple[str, Any], ...] = ()
    budget: str | None = None
    epochs: int | None = None


@dataclass(frozen=True)
class Comparison:
    """Optimizers tuned with the bench protocol on settings, then run on final seeds.

    ``trials`` search points per (setting, optimizer), the same for all; finals on seeds
    ``1..seeds``; ``halving`` is the successive-halving factor (the protocol's default:
    every trial in full).
    """

    settings: tuple[Setting, ...]
    optimizers: tuple[str, ...]
    trials: int
    seeds: int
    budget: str = "quick"
    epochs: int | None = None
    halving: int = Protocol.halving

    @property
    def protocol(self) -> Protocol:
        return Protocol(trials=self.trials, seeds=self.seeds, halving=self.halving)

    def bench_settings(self) -> list[BenchSetting]:
        return [BenchSetting(s.task, s.budget or self.budget,
                             s.epochs if s.budget or s.epochs else self.epochs,
                             tuple(sorted(s.options)))
                for s in self.settings]  # fmt: skip

    def label_of(self, key: str) -> str:
        """The label of the setting whose bench key (JSON) is ``key``."""
        for s, b in zip(self.settings, self.bench_settings(), strict=True):
            if json.dumps(b.resolved().key(), sort_keys=True) == key:
                return s.label
        raise KeyError(key)


def tasks_text(tasks: Sequence[tuple[Any, ...]], budget: str, epochs: int | None) -> str:
    """``"`name` (options; budget `b`, E epochs), ..."``: each task with its own budget and
    epochs where it has them, else the section's ``budget`` and ``epochs``."""

    def one(t: tuple[Any, ...]) -> str:
        opts = [f"{k}={v}" for k, v in (t[1] if len(t) > 1 else ())]
        b = t[2] if len(t) > 2 and t[2] else budget
        e = t[3] if len(t) > 3 and t[3] else (None if len(t) > 2 and t[2] else epochs)
        opts.append(f"budget `{b}`" + (f", {e} epochs" if e else ""))
        return f"`{t[0]}` ({'; '.join(opts)})"

    return ", ".join(one(t) for t in tasks)


@dataclass(frozen=True)
class TasksConfig:
    """A section that compares optimizers on harness tasks, one setting per task (Q1, Q3):
    tasks (with fixed options, and optionally their own budget and epochs:
    ``(name, options, budget, epochs)``), optimizers, trials, seeds, budget and epochs."""

    tasks: tuple[tuple[Any, ...], ...]
    optimizers: tuple[str, ...]
    trials: int
    seeds: int
    budget: str = "quick"
    epochs: int | None = None

    def comparison(self, tasks: tuple[str, ...] | None = None) -> Comparison:
        """The comparison over ``tasks`` (default: all of them)."""
        settings = tuple(
            Setting(t[0], t[0], *t[1:]) for t in self.tasks if tasks is None or t[0] in tasks
        )
        return Comparison(
            settings, self.optimizers, self.trials, self.seeds, self.budget, self.epochs
        )


@dataclass
class Outcome:
    """A finished comparison: per (setting label, optimizer) its tuning and final runs."""

    tunings: dict[tuple[str, str], TuneResult]
    runs: dict[tuple[str, str], list[dict[str, Any]]]  # seeds 1..n in order
    all_runs: list[dict[str, Any]]

    @property
    def chosen(self) -> dict[tuple[str, str], dict[str, Any] | None]:
        return {k: (t.best_hparams if t.best_val is not None else None)
                for k, t in self.tunings.items()}  # fmt: skip


def run_comparison(ctx: Context, comp: Comparison, section: str) -> None:
    """Tune and finish every (setting, optimizer) of ``comp``, tagging runs ``study:<id>``."""
    with make_executor("local", workers=ctx.workers) as executor:
        tune_settings(
            comp.bench_settings(), comp.optimizers, comp.protocol, ctx.store, executor=executor,
            device=ctx.device, data_dir=ctx.data_dir, checkpoint_dir=ctx.checkpoint_dir,
            log=ctx.log, tags=(f"study:{section}",), on_outcome=_progress(ctx),
            other_code=ctx.other_code,
        )  # fmt: skip


def _progress(ctx: Context) -> Callable[[Any], None]:
    def say(out: Any) -> None:
        if not out.previous:
            ctx.log(f"  {out.config.label()}: {out.status}")

    return say


def load_comparison(ctx: Context, comp: Comparison) -> Outcome | str:
    """The stored :class:`Outcome` (replayed, nothing trained), or a sentence saying what
    is missing."""
    try:
        results = tune_settings(comp.bench_settings(), comp.optimizers, comp.protocol,
                                ctx.store, train=False)  # fmt: skip
    except Incomplete as exc:
        return f"the tuning protocol is not complete in the store ({exc})."
    tunings = {(comp.label_of(key), opt): res for (key, opt), res in results.items()}
    runs = {k: [ctx.store.get_run(rid) for rid in t.finals] for k, t in tunings.items()}
    seen: dict[str, dict[str, Any]] = {}
    for t in tunings.values():
        for rid in [*(x["run_id"] for x in t.trials), *t.finals]:
            row = ctx.store.get_run(rid)
            if row is not None:
                seen[rid] = row
    return Outcome(tunings, runs, list(seen.values()))  # type: ignore[arg-type]


def per_seed_scores(runs: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Per-seed scores: the test metric, a diverged seed scored as the untrained model."""
    return np.asarray([final_score(r) for r in runs], dtype=float)


@dataclass
class Summary:
    """A comparison in numbers: per (setting, optimizer) scores (scaled), the table rows,
    the paired verdicts (``"<setting>|<optimizer>"``) and per competitor their tally."""

    values: dict[tuple[str, str], np.ndarray]
    rows: list[list[str]]
    verdicts: dict[str, PairedVerdict]
    tally: dict[str, Tally]


@dataclass
class Compared:
    """What a comparison section's ``load`` returns: its config restricted to the complete
    tasks, their outcome and summary, and a sentence naming the incomplete ones (or "")."""

    cfg: Any
    out: Outcome
    summ: Summary
    missing: str = ""


def missing_blocks(missing: str) -> list[Block]:
    """The paragraph that names the parts of a partial section (none when complete)."""
    if not missing:
        return []
    return [Paragraph(f"**Not yet run:** {missing} They are left out below.")]


def hparams_text(hp: Mapping[str, Any] | None, keys: Sequence[str]) -> str:
    if hp is None:
        return "all diverged"
    return ", ".join(f"{k}={fmt(hp[k])}" for k in keys if k in hp)


def summarize(
    ctx: Context,
    comp: Comparison,
    out: Outcome,
    reference: str,
    extra: Callable[[list[dict[str, Any]]], list[str]] = lambda runs: [],
    scale: float = 100.0,
) -> Summary:
    """Rows ``setting, optimizer, selection, score mean (min..max) [k diverged], *extra,
    reference minus optimizer [CI], verdict``.

    The verdicts are one Holm family over every (setting, competitor) of ``comp``; the
    margin is the task's (:attr:`~superlevel.bench.tasks.registry.TaskSpec.comparison`),
    in the scaled units (``scale`` multiplies the metric: 100 for accuracies in percent).
    """
    from superlevel.bench.optimizers import get_optimizer

    values: dict[tuple[str, str], np.ndarray] = {}
    rows: list[list[str]] = []
    for s in comp.settings:
        for o in comp.optimizers:
            runs = out.runs[(s.label, o)]
            t = out.tunings[(s.label, o)]
            x = values[(s.label, o)] = scale * per_seed_scores(runs)
            bad = sum(r["status"] == "diverged" for r in runs)
            keys = sorted(get_optimizer(o).space)
            cell = f"{x.mean():.2f} ({x.min():.2f}..{x.max():.2f})"
            cell += f", {bad} diverged" if bad else ""
            chosen = t.best_hparams if t.best_val is not None else None
            rows.append([s.label, o, hparams_text(chosen, keys), cell, *extra(runs)])
    pairs, margins = {}, {}
    for s in comp.settings:
        how = get_task(s.task).comparison
        for o in comp.optimizers:
            if o == reference:
                continue
            a, b = values[(s.label, reference)], values[(s.label, o)]
            if how.log10:
                a, b = np.log10(np.maximum(a, 1e-30)), np.log10(np.maximum(b, 1e-30))
            if len(a) >= 2 and np.all(np.isfinite(a)) and np.all(np.isfinite(b)):
                pairs[f"{s.label}|{o}"] = (a.tolist(), b.tolist())
                margins[f"{s.label}|{o}"] = how.margin * (1.0 if how.log10 else scale)
    verdicts = compare_family(pairs, margin=margins) if pairs else {}
    for row in rows:
        c = verdicts.get(f"{row[0]}|{row[1]}")
        row += ["", ""] if c is None else [c.paired.text(), c.text()]
    competitors = [o for o in comp.optimizers if o != reference]
    tally = paired_tally(verdicts, lambda k: k.rsplit("|", 1)[1], competitors)
    return Summary(values, rows, verdicts, tally)  # type: ignore[arg-type]


def tally_text(reference: str, tally: Mapping[str, Tally], n: int, what: str) -> str:
    """``vs X: higher in a, lower in b, equivalent in c, inconclusive in d of n <what>``."""
    return "; ".join(f"vs {o}: {t.phrase()} of {n} {what}" for o, t in tally.items())


def load_complete_tasks(ctx: Context, cfg: Any) -> tuple[Any, Outcome, str] | str:
    """The stored outcome over the tasks whose comparison is complete.

    ``cfg`` has ``tasks`` (``((name, options), ...)``) and ``comparison(tasks=None)``;
    sections run task by task, so an interrupted study has whole tasks to report.

    Returns:
        ``(cfg restricted to the complete tasks, their outcome, a sentence naming the
        incomplete ones or "")``, or only that sentence when no task is complete.
    """
    status = {t[0]: load_comparison(ctx, cfg.comparison((t[0],))) for t in cfg.tasks}
    missing = "; ".join(
        f"`{t}`: {out.rstrip('.')}" for t, out in status.items() if isinstance(out, str)
    )
    missing += "." if missing else ""
    done = {t for t, out in status.items() if not isinstance(out, str)}
    if not done:
        return missing
    if missing:
        cfg = replace(cfg, tasks=tuple(tb for tb in cfg.tasks if tb[0] in done))  # type: ignore
    out = load_comparison(ctx, cfg.comparison())
    assert not isinstance(out, str)  # every part of it was loaded above
    return cfg, out, missing


def compute_minutes(out: Outcome) -> float:
    """Minutes of training in the search and finals of ``out``."""
    return sum(float(r.get("train_s") or 0.0) for r in out.all_runs) / 60 if out.all_runs else (
        math.nan)  # fmt: skip


def stability_evidence(section: str, what: str, per_seed: Mapping[str, np.ndarray],
                       reference: str, margin: float) -> Any:  # fmt: skip
    """Evidence for a stability claim from a per-seed quantity where smaller is steadier (a
    drop, a spread), compared by paired intervals (Holm over the competitors, TOST).

    Rule (before the numbers): supported when the reference's quantity is lower than or
    equivalent to every competitor's; not supported when it is higher than any; mixed
    otherwise. ``None`` without the reference or a competitor.
    """
    from superlevel.study.common import ClaimEvidence

    if reference not in per_seed or len(per_seed) < 2:
        return None
    pairs = {o: (per_seed[reference].tolist(), v.tolist()) for o, v in per_seed.items()
             if o != reference and len(v) == len(per_seed[reference]) >= 2}  # fmt: skip
    if not pairs:
        return None
    out = compare_family(pairs, margin=margin)
    t = paired_tally(out)[None]
    steady = t.lower + t.equivalent == t.total
    verdict = "not supported" if t.higher else "supported" if steady else "mixed"
    ours = float(np.mean(per_seed[reference]))
    detail = "; ".join(f"vs {o}: {c.paired.text()} {c.text()}" for o, c in out.items())
    return ClaimEvidence(verdict, f"{section}: {what} {ours:.2f} points for {reference} "
                                  f"({reference} minus other, paired: {detail})")  # fmt: skip


def headline(reference: str, tally: Mapping[str, Tally], n: int, what: str) -> str:
    """One sentence over every competitor: how many of the comparisons came out which way."""
    t = sum(tally.values(), Tally())
    m = len(tally) * n
    return (
        f"Against {len(tally)} competitors on {n} {what}, {reference} is higher in "
        f"{t.higher}, lower in {t.lower}, equivalent in {t.equivalent} and inconclusive in "
        f"{t.inconclusive} of {m} comparisons (Holm, TOST margins)."
    )
