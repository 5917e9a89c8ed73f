"""N2 — activations: is the rule's behaviour the same across activation functions?

Every (activation, optimizer) pair is tuned the same way: the optimizer's own lr range
(the harness's search space, DeepOBS-style) on the same number of log-spaced grid points,
run on seed 1 and selected by validation accuracy; the selected lr then runs on seeds
``1..n`` (same init and data order for every optimizer). Differences are paired over
seeds against ``superlevel``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from superlevel.bench.optimizers import get_optimizer
from superlevel.bench.runner import RunConfig
from superlevel.study import harness
from superlevel.study.common import (
    ClaimEvidence,
    Context,
    SectionResult,
    compute_seconds,
    fmt,
    hardware_text,
    md_table,
    new_figure,
    not_yet_run,
    paired_ci,
    run_rising_fraction,
    save_figure,
)
from superlevel.study.tuning import best_lr, neg_val_metric

ID = "N2"
TITLE = "Activations"
REFERENCE = "superlevel"


@dataclass(frozen=True)
class Config:
    """N2's size: task, activations, optimizers, grid points per optimizer, seeds."""

    activations: tuple[str, ...]
    optimizers: tuple[str, ...]
    grid_points: int
    seeds: int
    task: str = "digits_mlp"
    budget: str = "quick"
    epochs: int | None = None

    def lrs(self, optimizer: str) -> tuple[float, ...]:
        """The optimizer's own lr range on ``grid_points`` log-spaced points."""
        return tuple(get_optimizer(optimizer).space["lr"].grid(self.grid_points))


def _cfg(cfg: Config, act: str, opt: str, lr: float, seed: int) -> RunConfig:
    return harness.config(
        cfg.task,
        opt,
        seed,
        budget=cfg.budget,
        epochs=cfg.epochs,
        hparams={"lr": lr},
        task_options={"activation": act},
    )


def _grid(cfg: Config) -> list[RunConfig]:
    return [
        _cfg(cfg, a, o, lr, 1) for a in cfg.activations for o in cfg.optimizers for lr in cfg.lrs(o)
    ]


def _select(cfg: Config, grid: dict[str, dict[str, Any]]) -> dict[tuple[str, str], float | None]:
    return {
        (a, o): best_lr(
            cfg.lrs(o), [grid[_cfg(cfg, a, o, lr, 1).run_id] for lr in cfg.lrs(o)], neg_val_metric
        )
        for a in cfg.activations
        for o in cfg.optimizers
    }


def _finals(cfg: Config, chosen: dict[tuple[str, str], float | None]) -> list[RunConfig]:
    return [
        _cfg(cfg, a, o, lr, s)
        for (a, o), lr in chosen.items()
        if lr is not None
        for s in range(1, cfg.seeds + 1)
    ]


def run(ctx: Context, cfg: Config) -> None:
    """The grid of every pair on seed 1, then the selected lr on every seed."""
    harness.run(ctx, _grid(cfg), f"study:{ID}:grid")
    grid = harness.results(ctx, _grid(cfg))
    assert grid is not None
    harness.run(ctx, _finals(cfg, _select(cfg, grid)), f"study:{ID}:final")


def report(ctx: Context, cfg: Config) -> SectionResult:
    """The N2 part of the report, from stored runs only."""
    protocol = _protocol(cfg)
    grid = harness.results(ctx, _grid(cfg))
    if grid is None:
        done, total = harness.count_done(ctx, _grid(cfg))
        return not_yet_run(ID, TITLE, protocol, f"{done} of {total} grid runs are stored.")
    chosen = _select(cfg, grid)
    finals = harness.results(ctx, _finals(cfg, chosen))
    if finals is None:
        return not_yet_run(ID, TITLE, protocol, "the runs at the selected lr are not all stored.")
    acc: dict[tuple[str, str], np.ndarray] = {}
    rows = []
    for a in cfg.activations:
        for o in cfg.optimizers:
            lr = chosen[(a, o)]
            if lr is None:
                rows.append([a, o, "all diverged", "-", "-", "-"])
                continue
            ids = [_cfg(cfg, a, o, lr, s).run_id for s in range(1, cfg.seeds + 1)]
            vals = [
                finals[i]["test_metric"] if finals[i]["status"] == "finished" else None for i in ids
            ]
            if any(v is None for v in vals):
                rows.append([a, o, fmt(lr), "a seed diverged", "-", "-"])
                continue
            acc[(a, o)] = 100 * np.asarray(vals, dtype=float)
            rise = float(np.nanmean([run_rising_fraction(ctx.store, i) for i in ids]))
            x = acc[(a, o)]
            rows.append(
                [a, o, fmt(lr), f"{x.mean():.2f} ({x.min():.2f}..{x.max():.2f})", fmt(rise, 2), ""]
            )
    tally = {o: [0, 0, 0] for o in cfg.optimizers if o != REFERENCE}
    for row in rows:
        a, o = row[0], row[1]
        if o == REFERENCE or (a, o) not in acc or (a, REFERENCE) not in acc:
            continue
        d = paired_ci(acc[(a, REFERENCE)], acc[(a, o)])
        row[-1] = d.text()
        tally[o][0 if d.low > 0 else 1 if d.high < 0 else 2] += 1
    table = md_table(
        [
            "activation",
            "optimizer",
            "selected lr",
            f"test accuracy % mean (min..max), {cfg.seeds} seeds",
            "rising intervals",
            f"{REFERENCE} minus optimizer, paired 95% CI (points)",
        ],
        rows,
    )
    figure = _plot(ctx, cfg, acc)
    n = len(cfg.activations)
    verdict = (
        f"Test accuracy of {REFERENCE} paired over seeds, per activation: "
        + "; ".join(
            f"vs {o}: higher in {t[0]}, lower in {t[1]}, no difference in {t[2]} of {n}"
            for o, t in tally.items()
        )
        + "."
    )
    claims = {}
    spread = {
        o: float(np.ptp([acc[(a, o)].mean() for a in cfg.activations]))
        for o in cfg.optimizers
        if all((a, o) in acc for a in cfg.activations)
    }
    if REFERENCE in spread and len(spread) > 1:
        ours = spread[REFERENCE]
        others = [v for o, v in spread.items() if o != REFERENCE]
        c4 = (
            "supported"
            if ours <= min(others)
            else "not supported"
            if ours > max(others)
            else "mixed"
        )
        claims["C4"] = ClaimEvidence(
            c4,
            f"N2: spread of mean test accuracy over {n} activations {ours:.2f} points for "
            f"{REFERENCE}, {min(others):.2f}..{max(others):.2f} for the others",
        )
    all_runs = list(grid.values()) + list(finals.values())
    body = "\n".join(
        [
            protocol,
            "",
            f"Budget: harness budget `{cfg.budget}` of `{cfg.task}`; {cfg.grid_points} grid "
            f"points per optimizer on seed 1, then {cfg.seeds} seeds; {len(all_runs)} runs, "
            f"{compute_seconds(all_runs) / 60:.1f} min of compute. Hardware: "
            f"{hardware_text(all_runs)}.",
            "",
            f"![N2 accuracy per activation]({figure})",
            "",
            table,
        ]
    )
    return SectionResult(ID, TITLE, "done", body, verdict, claims)


def _plot(ctx: Context, cfg: Config, acc: dict[tuple[str, str], np.ndarray]) -> str:
    fig, axes = new_figure(1, 1, 7.0, 3.2)
    ax = axes[0][0]
    width = 0.8 / len(cfg.optimizers)
    for k, o in enumerate(cfg.optimizers):
        xs, ys, lo, hi = [], [], [], []
        for i, a in enumerate(cfg.activations):
            if (a, o) in acc:
                x = acc[(a, o)]
                xs.append(i + (k - (len(cfg.optimizers) - 1) / 2) * width)
                ys.append(x.mean())
                lo.append(x.mean() - x.min())
                hi.append(x.max() - x.mean())
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", ms=3, capsize=2, label=o)
    ax.set_xticks(range(len(cfg.activations)), list(cfg.activations))
    ax.set_ylabel("test accuracy % (mean, min..max)")
    ax.legend(fontsize=6, ncol=3)
    ax.set_title(f"N2: {cfg.task}, {cfg.seeds} seeds at the selected lr", fontsize=9)
    save_figure(fig, ctx.figures / "n2_activations.png")
    return "figures/n2_activations.png"


def _protocol(cfg: Config) -> str:
    return (
        "**Question.** Is the rule's behaviour the same across activation functions?\n\n"
        f"**Protocol.** Harness task `{cfg.task}` with activation "
        f"{', '.join(cfg.activations)} x optimizers {', '.join(cfg.optimizers)} (harness "
        f"defaults besides the lr). Each pair: {cfg.grid_points} log-spaced lrs over the "
        "optimizer's own search range (the same budget for every optimizer), run on seed 1, "
        f"selected by validation accuracy; the selected lr then runs on seeds 1..{cfg.seeds}. "
        "The test split selects nothing. *Rising intervals*: the fraction of logged "
        "intervals whose mean training loss rose."
    )
