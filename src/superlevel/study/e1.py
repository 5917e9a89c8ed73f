"""E1 — quadratic: which part of the rule helps, the exponential decay or the modulation?

Four arms on the harness's ``quadratic`` task (``f(theta) = 1/2 sum_i lambda_i theta_i^2``,
eigenvalues log-spaced from 1 down to ``1 / condition``, ``f* = 0``):

- ``GD``: ``theta <- theta - a0 g`` (harness ``sgd``);
- ``decay only``: ``a0 exp(-beta t) g`` (``sgd_expdecay``);
- ``modulation only``: ``a0 g / (1 + ||g||)`` (``superlevel`` with ``decay_total = 0``);
- ``both``: ``a0 exp(-beta t) g / (1 + ||g||)``, the paper's rule (``superlevel``).

``beta = decay_total / total_steps``. Each arm's ``a0`` is chosen on one common log grid by
the validation suboptimality of seed 1 (for a synthetic task every split evaluates the
exact ``f``, so validation and test coincide: the choice is the best lr of seed 1);
the chosen ``a0`` then runs on seeds ``1..n`` (the seed draws the start ``theta_0``).
Exact gradients (``noise = 0``) and noisy ones (``noise > 0``: a mini-batch gradient is
``grad f`` plus the batch mean of centred Gaussian vectors).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from superlevel.bench.run import RunConfig
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

ID = "E1"
TITLE = "Quadratic: exponential decay, modulation, or both"
TASK = "quadratic"
#: final suboptimalities below this (0 included) are floored, so log10 stays finite
FLOOR = 1e-30
#: speed: steps until the suboptimality is this percentage of the start's (every epoch end)
TO_PERCENT = 1.0
#: an lr counts as "near best" when its log-suboptimality reduction is >= 98% of the best
NEAR_BEST = 0.98


@dataclass(frozen=True)
class Config:
    """E1's size.

    Attributes:
        conditions: condition numbers ``lambda_max / lambda_min``.
        noises: gradient-noise scales (0: exact gradients).
        dim: dimension.
        epochs: epochs of the quick budget (32 steps each: 1024 examples, batch 32).
        lr_grid: the common ``a0`` grid.
        seeds: evaluation seeds ``1..seeds``.
        decay_total: ``beta * total_steps`` of the decaying arms.
    """

    conditions: tuple[float, ...]
    noises: tuple[float, ...]
    dim: int
    epochs: int
    lr_grid: tuple[float, ...]
    seeds: int
    decay_total: float = 2.0

    def arms(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """``{arm: (harness optimizer, fixed hyperparameters)}``."""
        return {
            "GD": ("sgd", {}),
            "decay only": ("sgd_expdecay", {"decay_total": self.decay_total}),
            "modulation only": ("superlevel", {"decay_total": 0.0}),
            "both (paper)": ("superlevel", {"decay_total": self.decay_total}),
        }

    def settings(self) -> list[tuple[float, float]]:
        return [(c, n) for n in self.noises for c in self.conditions]



def best_lr(lrs, rows, score) -> float | None:  # noqa: ANN001 (E1's own a0 sweep)
    """The lr of ``rows`` (one stored run per lr) with the lowest finite ``score``; ``None``
    when every run diverged or scored ``inf``/NaN. Ties go to the smaller lr."""
    import math

    if len(lrs) != len(rows):
        raise ValueError(f"need one run per lr, got {len(lrs)} lrs and {len(rows)} runs")
    scored = [(score(r), lr) for lr, r in zip(lrs, rows, strict=True)]
    finite = [s for s in scored if math.isfinite(s[0])]
    return min(finite)[1] if finite else None

def log_grid(low_exp: float, high_exp: float, per_decade: int) -> tuple[float, ...]:
    """``10 ** (low_exp + k / per_decade)`` for ``k = 0 .. round((high - low) * per_decade)``.

    Rounded to 4 significant digits (``round`` is Python's: halves go to the even integer).
    """
    n = round((high_exp - low_exp) * per_decade)
    return tuple(float(f"{10 ** (low_exp + k / per_decade):.4g}") for k in range(n + 1))


def _cfg(cfg: Config, setting: tuple[float, float], arm: str, lr: float, seed: int) -> RunConfig:
    opt, fixed = cfg.arms()[arm]
    cond, noise = setting
    return harness.config(
        TASK,
        opt,
        seed,
        epochs=cfg.epochs,
        hparams={**fixed, "lr": lr},
        task_options={"dim": cfg.dim, "condition": cond, "noise": noise},
    )


def _grid_configs(cfg: Config) -> list[RunConfig]:
    return [
        _cfg(cfg, s, arm, lr, 1) for s in cfg.settings() for arm in cfg.arms() for lr in cfg.lr_grid
    ]


def _log_subopt(row: dict[str, Any]) -> float:
    """log10 of the final suboptimality (floored); ``inf`` for a diverged run."""
    v = row.get("val_metric")
    if row["status"] != "finished" or v is None or not math.isfinite(v):
        return math.inf
    return math.log10(max(v, FLOOR))


def _select(cfg: Config, grid: dict[str, dict[str, Any]]) -> dict[tuple, float | None]:
    """The selected lr per (setting, arm): lowest validation suboptimality of seed 1."""
    return {
        (s, arm): best_lr(
            cfg.lr_grid,
            [grid[_cfg(cfg, s, arm, lr, 1).run_id] for lr in cfg.lr_grid],
            _log_subopt,
        )
        for s in cfg.settings()
        for arm in cfg.arms()
    }


def _final_configs(cfg: Config, chosen: dict[tuple, float | None]) -> list[RunConfig]:
    return [
        _cfg(cfg, s, arm, lr, seed)
        for (s, arm), lr in chosen.items()
        if lr is not None
        for seed in range(1, cfg.seeds + 1)
    ]


def run(ctx: Context, cfg: Config) -> None:
    """Grid on seed 1, then the selected lr of each arm on every seed."""
    harness.run(ctx, _grid_configs(cfg), f"study:{ID}:grid")
    grid = harness.results(ctx, _grid_configs(cfg))
    assert grid is not None  # every grid run is done now
    harness.run(ctx, _final_configs(cfg, _select(cfg, grid)), f"study:{ID}:final")


def lr_width(lrs: Sequence[float], reductions: Sequence[float]) -> float:
    """Decades ``log10(lr_hi / lr_lo)`` of the contiguous grid block around the best lr
    whose reduction is ``>= NEAR_BEST * best`` (0 for a single point; NaN if none is > 0).
    """
    r = np.asarray(reductions, dtype=float)
    if not np.any(np.isfinite(r)) or np.nanmax(np.where(np.isfinite(r), r, -np.inf)) <= 0:
        return math.nan
    r = np.where(np.isfinite(r), r, -np.inf)
    best = int(np.argmax(r))
    ok = r >= NEAR_BEST * r[best]
    lo = hi = best
    while lo > 0 and ok[lo - 1]:
        lo -= 1
    while hi < len(r) - 1 and ok[hi + 1]:
        hi += 1
    return math.log10(lrs[hi] / lrs[lo])


def _curve(ctx: Context, run_id: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [r for r in ctx.store.epoch_metrics(run_id) if r["split"] == "val"]
    steps = np.array([r["step"] for r in rows], dtype=float)
    vals = np.array([r["metric"] if r["metric"] is not None else np.nan for r in rows], dtype=float)
    return steps, np.maximum(vals, FLOOR)


def _steps_to_percent(ctx: Context, run_id: str) -> float:
    """First evaluated step with ``f - f* <= TO_PERCENT% of f(theta_0) - f*`` (``inf``: never)."""
    steps, vals = _curve(ctx, run_id)
    hit = np.flatnonzero(vals <= vals[0] * TO_PERCENT / 100)
    return float(steps[hit[0]]) if hit.size else math.inf


def _setting_name(s: tuple[float, float]) -> str:
    cond, noise = s
    return f"condition {cond:g}, {'exact gradients' if noise == 0 else f'noise {noise:g}'}"


def report(ctx: Context, cfg: Config) -> SectionResult:
    """The E1 part of the report, from stored runs only."""
    protocol = _protocol(cfg)
    grid = harness.results(ctx, _grid_configs(cfg))
    if grid is None:
        done, total = harness.count_done(ctx, _grid_configs(cfg))
        return not_yet_run(ID, TITLE, protocol, f"{done} of {total} grid runs are stored.")
    chosen = _select(cfg, grid)
    finals = harness.results(ctx, _final_configs(cfg, chosen))
    if finals is None:
        return not_yet_run(ID, TITLE, protocol, "the runs at the selected lr are not all stored.")
    arms = list(cfg.arms())
    paper = arms[-1]
    rows, wins = [], {a: [0, 0, 0] for a in arms[:-1]}  # better / worse / no difference
    widths: dict[str, list[float]] = {a: [] for a in arms}
    rises_exact: list[float] = []
    speed: dict[tuple, float] = {}  # median steps to TO_PERCENT% per (setting, arm)
    for s in cfg.settings():
        scores = {}
        for arm in arms:
            lr = chosen[(s, arm)]
            red = []
            for g in cfg.lr_grid:
                row = grid[_cfg(cfg, s, arm, g, 1).run_id]
                start = [
                    r["metric"]
                    for r in ctx.store.epoch_metrics(row["run_id"])
                    if r["split"] == "val" and r["epoch"] == 0
                ]
                red.append(math.log10(max(start[0], FLOOR)) - _log_subopt(row))
            widths[arm].append(lr_width(cfg.lr_grid, red))
            if lr is None:
                scores[arm] = None
                rows.append([_setting_name(s), arm, "all diverged", "-", "-", "-", "-", "-"])
                continue
            ids = [_cfg(cfg, s, arm, lr, seed).run_id for seed in range(1, cfg.seeds + 1)]
            scores[arm] = [_log_subopt(finals[i]) for i in ids]
            rise = float(np.nanmean([run_rising_fraction(ctx.store, i) for i in ids]))
            if arm == paper and s[1] == 0:
                rises_exact.append(rise)
            vals = np.array(scores[arm])
            rows.append(
                [
                    _setting_name(s),
                    arm,
                    fmt(lr),
                    f"{np.mean(vals):.3g} (min {np.min(vals):.3g}, max {np.max(vals):.3g})",
                    fmt(widths[arm][-1], 2),
                    fmt(rise, 2),
                    fmt(
                        speed.setdefault(
                            (s, arm), float(np.median([_steps_to_percent(ctx, i) for i in ids]))
                        )
                    ),
                    "",
                ]
            )
        base = scores[paper]
        for row, arm in zip(rows[-len(arms) :], arms, strict=True):
            other = scores[arm]
            if arm == paper or base is None or other is None:
                continue
            if not (np.all(np.isfinite(base)) and np.all(np.isfinite(other))):
                row[-1] = "a run diverged"
                continue
            d = paired_ci(base, other)
            row[-1] = d.text()
            wins[arm][0 if d.high < 0 else 1 if d.low > 0 else 2] += 1
    header = [
        "setting",
        "arm",
        "selected a0",
        f"final log10(f - f*) over {cfg.seeds} seeds",
        "lr width (decades)",
        "rising intervals",
        f"steps to {TO_PERCENT:g}% of the start's f - f*",
        "both minus arm, paired 95% CI",
    ]
    all_runs = list(grid.values()) + list(finals.values())
    curves = _plot_curves(ctx, cfg, chosen)
    lrfig = _plot_lr(ctx, cfg, grid)
    n_set = len(cfg.settings())
    verdict_parts = [
        f"vs {arm}: lower in {w[0]}, higher in {w[1]}, no difference in {w[2]} of {n_set}"
        for arm, w in wins.items()
    ]
    verdict = (
        "Final log10 suboptimality of the paper's rule (both), paired over seeds: "
        + "; ".join(verdict_parts)
        + " settings."
    )
    pairs = [(speed.get((s, paper)), speed.get((s, "GD"))) for s in cfg.settings()]
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
    slower = sum(a > b for a, b in pairs)
    faster = sum(a < b for a, b in pairs)
    verdict += (
        f" It reaches {TO_PERCENT:g}% of the starting suboptimality later than GD in {slower} "
        f"and earlier in {faster} of {len(pairs)} settings (median over seeds)."
    )
    mean_w = {
        a: float(np.nanmean(w)) if np.any(np.isfinite(w)) else math.nan for a, w in widths.items()
    }
    body = "\n".join(
        [
            protocol,
            "",
            f"Budget: {cfg.epochs} epochs x 32 steps = {cfg.epochs * 32} steps per run; "
            f"grid of {len(cfg.lr_grid)} lrs on seed 1, then {cfg.seeds} seeds at the "
            f"selected lr; {len(all_runs)} runs, {compute_seconds(all_runs) / 60:.1f} min of "
            f"compute. Hardware: {hardware_text(all_runs)}.",
            "",
            md_table(header, rows),
            "",
            "*final log10(f - f\\*)*: mean (min, max) over seeds, floored at "
            f"log10({FLOOR:g}); *lr width*: decades of the contiguous block of grid lrs whose "
            f"reduction of log10(f - f\\*) is within {100 - 100 * NEAR_BEST:g}% of the best "
            "(seed 1); *rising intervals*: fraction of logged intervals (every "
            "ceil(steps / 100) steps) whose mean training loss rose; *steps to ...*: median over "
            "seeds of the first epoch end (32 steps each) at that suboptimality (inf: never; "
            "a late value with a low final suboptimality means the arm hovered high until its "
            "step had decayed below the stability limit); the last column is the "
            "paired difference of final log10(f - f\\*) (negative: the paper's rule is lower).",
            "",
            f"![suboptimality against steps]({curves})",
            "",
            f"![final suboptimality against a0]({lrfig})",
            "",
            "Mean lr width over the settings (decades): "
            + ", ".join(f"{a} {fmt(w, 2)}" for a, w in mean_w.items())
            + ".",
        ]
    )
    return SectionResult(ID, TITLE, "done", body, verdict, _claims(cfg, rises_exact, mean_w))


def _claims(cfg: Config, rises: list[float], widths: dict[str, float]) -> dict[str, ClaimEvidence]:
    out = {}
    if rises:
        worst = max(rises)
        out["C2"] = ClaimEvidence(
            "supported" if worst == 0 else "not supported",
            f"E1, exact gradients: largest fraction of logged intervals with a rising loss "
            f"{worst:.2g} (paper's rule, selected a0)",
        )
    paper, gd = widths["both (paper)"], widths["GD"]
    if math.isfinite(paper) and math.isfinite(gd):
        verdict = "supported" if paper > gd else "not supported"
        out["C4"] = ClaimEvidence(
            verdict, f"E1: mean lr width {paper:.2g} decades (paper's rule) vs {gd:.2g} (GD)"
        )
    return out


def _plot_curves(ctx: Context, cfg: Config, chosen: dict[tuple, float | None]) -> str:
    fig, axes = new_figure(len(cfg.noises), len(cfg.conditions))
    for i, noise in enumerate(cfg.noises):
        for j, cond in enumerate(cfg.conditions):
            ax = axes[i][j]
            s = (cond, noise)
            for arm in cfg.arms():
                lr = chosen[(s, arm)]
                if lr is None:
                    continue
                curves = [
                    _curve(ctx, _cfg(cfg, s, arm, lr, k).run_id) for k in range(1, cfg.seeds + 1)
                ]
                n = min(len(c[0]) for c in curves)
                steps = curves[0][0][:n]
                ys = np.stack([c[1][:n] for c in curves])
                ax.plot(steps, np.median(ys, 0), label=f"{arm} (a0 {lr:.3g})")
                ax.fill_between(steps, ys.min(0), ys.max(0), alpha=0.2)
            ax.set_yscale("log")
            ax.set_title(_setting_name(s), fontsize=9)
            ax.set_xlabel("step")
            ax.set_ylabel("f - f*")
            ax.legend(fontsize=6)
    fig.suptitle(f"E1: median and range over {cfg.seeds} seeds at the selected a0", fontsize=10)
    save_figure(fig, ctx.figures / "e1_curves.png")
    return "figures/e1_curves.png"


def _plot_lr(ctx: Context, cfg: Config, grid: dict[str, dict[str, Any]]) -> str:
    fig, axes = new_figure(len(cfg.noises), len(cfg.conditions))
    for i, noise in enumerate(cfg.noises):
        for j, cond in enumerate(cfg.conditions):
            ax = axes[i][j]
            s = (cond, noise)
            for arm in cfg.arms():
                ys = [_log_subopt(grid[_cfg(cfg, s, arm, lr, 1).run_id]) for lr in cfg.lr_grid]
                ys = [y if math.isfinite(y) else np.nan for y in ys]
                ax.plot(cfg.lr_grid, ys, marker="o", ms=3, label=arm)
            ax.set_xscale("log")
            ax.set_title(_setting_name(s), fontsize=9)
            ax.set_xlabel("a0")
            ax.set_ylabel("final log10(f - f*)")
            ax.legend(fontsize=6)
    fig.suptitle("E1: final suboptimality against a0, seed 1 (gaps: diverged)", fontsize=10)
    save_figure(fig, ctx.figures / "e1_lr.png")
    return "figures/e1_lr.png"


def _protocol(cfg: Config) -> str:
    conds = ", ".join(f"{c:g}" for c in cfg.conditions)
    noises = ", ".join(f"{n:g}" for n in cfg.noises)
    return (
        "**Question.** On ill-conditioned quadratics, does the paper's rule "
        "(a0 exp(-beta t) g / (1 + ||g||)) beat plain GD, and which of its two parts does "
        "the work?\n\n"
        f"**Protocol.** Harness task `quadratic` (dim {cfg.dim}, eigenvalues log-spaced from 1 "
        f"to 1/condition; conditions {conds}; gradient noise {noises}, 0 = exact). Arms: GD "
        "(`sgd`), decay only (`sgd_expdecay`), modulation only (`superlevel`, decay_total 0), "
        f"both (`superlevel`); decay_total = beta x total steps = {cfg.decay_total:g}. Every "
        f"arm's a0 is chosen on the same grid ({cfg.lr_grid[0]:g} .. {cfg.lr_grid[-1]:g}, "
        f"{len(cfg.lr_grid)} points) by the final validation suboptimality of seed 1; on a "
        "synthetic task validation and test both evaluate the exact f, so this is the best "
        f"lr of seed 1. The selected a0 runs on seeds 1..{cfg.seeds} (the seed draws the start; "
        "the same starts for every arm)."
    )
