"""The selection rule every tuned section shares: the best lr of a grid on validation.

A grid is run on one seed (the trial seed, 1); the selected lr minimises ``score(run)``
over the *finished* runs (diverged ones are never selected; ties go to the smaller lr).
``score`` reads validation metrics only: the test split never selects anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from superlevel.bench.run import RunConfig
from superlevel.study import harness
from superlevel.study.common import Context, fmt, paired_ci


def best_lr(
    lrs: Sequence[float],
    rows: Sequence[Mapping[str, Any]],
    score: Callable[[Mapping[str, Any]], float],
) -> float | None:
    """The lr of ``rows`` (one stored run per lr) with the lowest finite ``score``; ``None``
    when every run diverged or scored ``inf``/NaN."""
    if len(lrs) != len(rows):
        raise ValueError(f"need one run per lr, got {len(lrs)} lrs and {len(rows)} runs")
    scored = [(score(r), lr) for lr, r in zip(lrs, rows, strict=True)]
    finite = [s for s in scored if math.isfinite(s[0])]
    return min(finite)[1] if finite else None


def neg_val_metric(row: Mapping[str, Any]) -> float:
    """``-val_metric`` of a finished run (higher-is-better metrics), ``inf`` otherwise."""
    v = row.get("val_metric")
    if row.get("status") != "finished" or v is None or not math.isfinite(v):
        return math.inf
    return -float(v)


@dataclass(frozen=True)
class Setting:
    """One problem a comparison is run on: a label, a harness task and its options."""

    label: str
    task: str
    options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Comparison:
    """Optimizers tuned with equal budgets on settings, then rerun over seeds.

    Each (setting, optimizer): ``grid_points`` log-spaced lrs over the optimizer's own
    search range (the harness's, DeepOBS-style; other hyperparameters at their defaults)
    run on seed 1; the lr with the best validation metric runs on seeds ``1..seeds``.
    """

    settings: tuple[Setting, ...]
    optimizers: tuple[str, ...]
    grid_points: int
    seeds: int
    budget: str = "quick"
    epochs: int | None = None

    def lrs(self, optimizer: str) -> tuple[float, ...]:
        """The optimizer's own lr range on ``grid_points`` log-spaced points."""
        from superlevel.bench.optimizers import get_optimizer

        return tuple(get_optimizer(optimizer).space["lr"].grid(self.grid_points))

    def config(self, s: Setting, optimizer: str, lr: float, seed: int) -> RunConfig:
        return harness.config(
            s.task,
            optimizer,
            seed,
            budget=self.budget,
            epochs=self.epochs,
            hparams={"lr": lr},
            task_options=dict(s.options),
        )

    def grid(self) -> list[RunConfig]:
        return [
            self.config(s, o, lr, 1)
            for s in self.settings
            for o in self.optimizers
            for lr in self.lrs(o)
        ]

    def select(self, grid: Mapping[str, Mapping[str, Any]]) -> dict[tuple[str, str], float | None]:
        """The selected lr per (setting label, optimizer), by validation metric of seed 1."""
        return {
            (s.label, o): best_lr(
                self.lrs(o),
                [grid[self.config(s, o, lr, 1).run_id] for lr in self.lrs(o)],
                neg_val_metric,
            )
            for s in self.settings
            for o in self.optimizers
        }

    def finals(self, chosen: Mapping[tuple[str, str], float | None]) -> list[RunConfig]:
        by_label = {s.label: s for s in self.settings}
        return [
            self.config(by_label[label], o, lr, seed)
            for (label, o), lr in chosen.items()
            if lr is not None
            for seed in range(1, self.seeds + 1)
        ]


@dataclass(frozen=True)
class TasksConfig:
    """A section that compares optimizers on harness tasks, one setting per task (Q1, Q3):
    tasks (with fixed options), optimizers, grid points, seeds, budget and epochs."""

    tasks: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]
    optimizers: tuple[str, ...]
    grid_points: int
    seeds: int
    budget: str = "quick"
    epochs: int | None = None

    def comparison(self, tasks: tuple[str, ...] | None = None) -> Comparison:
        """The comparison over ``tasks`` (default: all of them)."""
        settings = tuple(
            Setting(t, t, opts) for t, opts in self.tasks if tasks is None or t in tasks
        )
        return Comparison(
            settings, self.optimizers, self.grid_points, self.seeds, self.budget, self.epochs
        )


@dataclass
class Outcome:
    """A finished comparison: the selected lrs and the stored runs at them, per seed."""

    chosen: dict[tuple[str, str], float | None]
    runs: dict[tuple[str, str], list[dict[str, Any]]]  # seeds 1..n in order
    all_runs: list[dict[str, Any]]


def run_comparison(ctx: Context, comp: Comparison, section: str) -> None:
    """The grid of every (setting, optimizer) on seed 1, then the selected lrs on every seed."""
    harness.run(ctx, comp.grid(), f"study:{section}:grid")
    grid = harness.results(ctx, comp.grid())
    assert grid is not None  # every grid run is done now
    harness.run(ctx, comp.finals(comp.select(grid)), f"study:{section}:final")


def load_comparison(ctx: Context, comp: Comparison) -> Outcome | str:
    """The stored :class:`Outcome`, or a sentence saying what is missing."""
    grid = harness.results(ctx, comp.grid())
    if grid is None:
        done, total = harness.count_done(ctx, comp.grid())
        return f"{done} of {total} grid runs are stored."
    chosen = comp.select(grid)
    finals = harness.results(ctx, comp.finals(chosen))
    if finals is None:
        return "the runs at the selected lr are not all stored."
    by_label = {s.label: s for s in comp.settings}
    runs = {
        key: [
            finals[comp.config(by_label[key[0]], key[1], lr, seed).run_id]
            for seed in range(1, comp.seeds + 1)
        ]
        for key, lr in chosen.items()
        if lr is not None
    }
    return Outcome(chosen, runs, list(grid.values()) + list(finals.values()))


def per_seed_test(runs: Sequence[Mapping[str, Any]]) -> np.ndarray | None:
    """Per-seed test metrics, or ``None`` when a seed diverged."""
    vals = [r["test_metric"] if r["status"] == "finished" else None for r in runs]
    if any(v is None for v in vals):
        return None
    return np.asarray(vals, dtype=float)


@dataclass
class Summary:
    """A comparison in numbers: per (setting, optimizer) test values in percent, the table
    rows, and against ``reference`` the count of settings where it is higher / lower /
    not different, per competitor."""

    values: dict[tuple[str, str], np.ndarray]
    rows: list[list[str]]
    tally: dict[str, list[int]]


def summarize(
    ctx: Context,
    comp: Comparison,
    out: Outcome,
    reference: str,
    extra: Callable[[list[dict[str, Any]]], list[str]] = lambda runs: [],
    scale: float = 100.0,
) -> Summary:
    """Table rows ``setting, optimizer, lr, test % mean (min..max), *extra(runs), paired CI``.

    The paired column is ``reference`` minus the optimizer over seeds (95% t interval).
    ``scale`` multiplies the test metric (100: accuracies in percent; 1: returns).
    """
    values: dict[tuple[str, str], np.ndarray] = {}
    rows: list[list[str]] = []
    for s in comp.settings:
        for o in comp.optimizers:
            lr = out.chosen[(s.label, o)]
            runs = out.runs.get((s.label, o))
            vals = None if runs is None else per_seed_test(runs)
            if vals is None:
                bad = sum(r["status"] != "finished" for r in runs or [])
                note = "all diverged" if lr is None else f"{bad} of {len(runs)} seeds diverged"
                rows.append([s.label, o, fmt(lr), note])
                continue
            x = values[(s.label, o)] = scale * vals
            rows.append(
                [s.label, o, fmt(lr), f"{x.mean():.2f} ({x.min():.2f}..{x.max():.2f})"]
                + extra(runs)
            )
    tally = {o: [0, 0, 0] for o in comp.optimizers if o != reference}
    for row in rows:
        label, o = row[0], row[1]
        ref, other = values.get((label, reference)), values.get((label, o))
        if o == reference or ref is None or other is None:
            row.append("")
            continue
        d = paired_ci(ref, other)
        row.append(d.text())
        tally[o][0 if d.low > 0 else 1 if d.high < 0 else 2] += 1
    width = max(len(r) for r in rows)
    for row in rows:
        row += ["-"] * (width - len(row))
    return Summary(values, rows, tally)


def tally_text(reference: str, tally: Mapping[str, list[int]], n: int, what: str) -> str:
    """``vs X: higher in a, lower in b, no difference in c of n <what>; ...``."""
    return "; ".join(
        f"vs {o}: higher in {t[0]}, lower in {t[1]}, no difference in {t[2]} of {n} {what}"
        + (f" (not compared in {n - sum(t)}: a seed diverged)" if sum(t) < n else "")
        for o, t in tally.items()
    )


def load_complete_tasks(ctx: Context, cfg: Any) -> tuple[Any, Outcome, str] | str:
    """The stored outcome over the tasks whose comparison is complete.

    ``cfg`` has ``tasks`` (``((name, options), ...)``) and ``comparison(tasks=None)``;
    sections run task by task, so an interrupted study has whole tasks to report.

    Returns:
        ``(cfg restricted to the complete tasks, their outcome, a sentence naming the
        incomplete ones or "")``, or only that sentence when no task is complete.
    """
    status = {t: load_comparison(ctx, cfg.comparison((t,))) for t, _ in cfg.tasks}
    missing = "; ".join(
        f"`{t}`: {out.rstrip('.')}" for t, out in status.items() if isinstance(out, str)
    )
    missing += "." if missing else ""
    done = {t for t, out in status.items() if not isinstance(out, str)}
    if not done:
        return missing
    if missing:
        cfg = replace(cfg, tasks=tuple(tb for tb in cfg.tasks if tb[0] in done))
    out = load_comparison(ctx, cfg.comparison())
    assert not isinstance(out, str)  # every part of it was loaded above
    return cfg, out, missing
