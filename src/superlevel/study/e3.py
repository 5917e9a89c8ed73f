"""E3 — MNIST and beta: accuracy and stability of SuperLevelSGD over (a0, decay_total).

A full grid (no selection) of the harness's ``superlevel`` optimizer on ``mnist_mlp``:
``a0`` x ``decay_total`` (``beta * total_steps``; 0 = modulation only) x seeds. Stability
is read from the per-step records the runner keeps (the window-mean training loss every
``ceil(steps / 100)`` steps): the fraction of intervals whose loss rose, and spikes (a
window more than twice the lowest window so far). Sharpness needs the trained model,
which the runner does not keep, so it is not measured here.
"""

from __future__ import annotations

import math
import warnings
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
    rising_fraction,
    save_figure,
)

ID = "E3"
TITLE = "MNIST and beta: accuracy and stability over a0 x decay"
COLLAPSE = 0.2  # mean test accuracy below this (chance is 0.1 with 10 classes): collapsed
SPIKE = 2.0  # a window loss above SPIKE x the lowest one so far is a spike


@dataclass(frozen=True)
class Config:
    """E3's size: the grid, the seeds and the budget of the ``mnist_mlp`` task."""

    lrs: tuple[float, ...]
    decays: tuple[float, ...]
    seeds: int
    budget: str = "quick"
    task: str = "mnist_mlp"
    epochs: int | None = None
    task_options: tuple[tuple[str, Any], ...] = ()
    sharpness_examples: int = 0  # > 0: each finished run measures its final sharpness


def _cfg(cfg: Config, lr: float, decay: float, seed: int) -> RunConfig:
    return harness.config(
        cfg.task,
        "superlevel",
        seed,
        budget=cfg.budget,
        epochs=cfg.epochs,
        hparams={"lr": lr, "decay_total": decay},
        task_options=dict(cfg.task_options)
        | ({"sharpness_examples": cfg.sharpness_examples} if cfg.sharpness_examples else {}),
    )


def _configs(cfg: Config) -> list[RunConfig]:
    return [
        _cfg(cfg, lr, d, s) for d in cfg.decays for lr in cfg.lrs for s in range(1, cfg.seeds + 1)
    ]


def run(ctx: Context, cfg: Config) -> None:
    """Every grid cell on every seed."""
    harness.run(ctx, _configs(cfg), f"study:{ID}")


def stability(losses: list[float]) -> tuple[float, float]:
    """``(fraction of rising intervals, fraction of spike windows)`` of window-mean losses."""
    x = np.asarray(losses, dtype=float)
    if x.size < 2 or not np.all(np.isfinite(x)):
        return math.nan, math.nan
    rising = rising_fraction(x)
    low = np.minimum.accumulate(x)
    spikes = float(np.mean(x[1:] > SPIKE * low[:-1]))
    return rising, spikes


def edge_ratio(run: dict[str, Any], steps: list[dict[str, Any]]) -> float:
    r"""``sharpness * eta / 2`` of a finished run: its final sharpness (``info["probe"]``)
    times its last logged effective lr; NaN when either is missing.

    .. math:: r = \lambda_{\max} \, \eta_{\mathrm{eff}} / 2 \quad (< 1: \text{stable})
    """
    sharp = ((run.get("info") or {}).get("probe") or {}).get("sharpness")
    lrs = [s["effective_lr"] for s in steps if s.get("effective_lr") is not None]
    if sharp is None or not lrs:
        return math.nan
    return float(sharp) * float(lrs[-1]) / 2.0


def _nanmedian(x: np.ndarray, axis: int | None = None) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN cell stays NaN
        return np.nanmedian(x, axis=axis)


def report(ctx: Context, cfg: Config) -> SectionResult:
    """The E3 part of the report, from stored runs only."""
    protocol = _protocol(cfg)
    runs = harness.results(ctx, _configs(cfg))
    if runs is None:
        done, total = harness.count_done(ctx, _configs(cfg))
        return not_yet_run(ID, TITLE, protocol, f"{done} of {total} runs are stored.")
    shape = (len(cfg.decays), len(cfg.lrs), cfg.seeds)
    test, val, rise, spike, edge = (np.full(shape, np.nan) for _ in range(5))
    for i, d in enumerate(cfg.decays):
        for j, lr in enumerate(cfg.lrs):
            for k in range(cfg.seeds):
                row = runs[_cfg(cfg, lr, d, k + 1).run_id]
                if row["status"] == "finished":
                    test[i, j, k] = row["test_metric"]
                    val[i, j, k] = row["val_metric"]
                steps = ctx.store.step_metrics(row["run_id"])
                rise[i, j, k], spike[i, j, k] = stability([r["loss"] for r in steps])
                edge[i, j, k] = edge_ratio(row, steps)
    figure = _plot(ctx, cfg, test, rise, spike, edge if cfg.sharpness_examples else None)
    vmean = np.where(np.isnan(val).any(-1), -np.inf, np.nan_to_num(val).mean(-1))
    bi, bj = np.unravel_index(int(np.argmax(vmean)), vmean.shape)
    rows = []
    for i, d in enumerate(cfg.decays):
        for j, lr in enumerate(cfg.lrs):
            t = test[i, j]
            acc = (
                "diverged"
                if np.isnan(t).any()
                else f"{100 * t.mean():.2f} ({100 * t.min():.2f}..{100 * t.max():.2f})"
            )
            rows.append(
                [
                    fmt(d),
                    fmt(lr),
                    acc,
                    fmt(float(np.nanmean(rise[i, j])), 2),
                    fmt(float(np.nanmean(spike[i, j])), 2),
                ]
                + ([fmt(_nanmedian(edge[i, j]), 3)] if cfg.sharpness_examples else [])
            )
    table = md_table(
        [
            "decay_total",
            "a0",
            f"test accuracy % mean (min..max) over {cfg.seeds} seeds",
            "rising intervals",
            "spike windows",
        ]
        + (["sharpness x effective lr / 2 (median)"] if cfg.sharpness_examples else []),
        rows,
    )
    # Best a0 without decay (modulation only) against the best cell, paired over seeds.
    parts = [
        f"Best cell by mean validation accuracy: a0 {cfg.lrs[bj]:g}, decay_total "
        f"{cfg.decays[bi]:g}, test accuracy {100 * test[bi, bj].mean():.2f}%."
    ]
    claims: dict[str, ClaimEvidence] = {}
    if 0.0 in cfg.decays and cfg.seeds >= 2:
        z = cfg.decays.index(0.0)
        zj = int(np.argmax(vmean[z]))
        if z != bi and np.isfinite(vmean[z, zj]):
            d = paired_ci(100 * test[bi, bj], 100 * test[z, zj])
            parts.append(
                f"Against modulation only at its best a0 ({cfg.lrs[zj]:g}): test accuracy "
                f"difference {d.text()} points, paired over seeds."
            )
    collapsed = [
        f"a0 {cfg.lrs[j]:g} / decay_total {cfg.decays[i]:g}"
        for i in range(len(cfg.decays))
        for j in range(len(cfg.lrs))
        if np.isnan(test[i, j]).any() or test[i, j].mean() < COLLAPSE
    ]
    parts.append(
        f"Cells that diverged or collapsed (mean test accuracy < {COLLAPSE:g}): "
        + (", ".join(collapsed) if collapsed else "none")
        + "."
    )
    widths = []
    for i in range(len(cfg.decays)):
        ok = vmean[i] >= 0.98 * vmean[bi, bj]
        idx = np.flatnonzero(ok)
        widths.append(math.log10(cfg.lrs[idx[-1]] / cfg.lrs[idx[0]]) if idx.size else math.nan)
    parts.append(
        "a0 range with mean validation accuracy within 2% of the best cell, per decay_total: "
        + ", ".join(f"{d:g}: {fmt(w, 2)} decades" for d, w in zip(cfg.decays, widths, strict=True))
        + "."
    )
    worst_rise = float(np.nanmax(rise))
    best_rise = float(np.nanmean(rise[bi, bj]))
    claims["C2"] = ClaimEvidence(
        "supported" if worst_rise == 0 else "not supported",
        f"E3, MNIST mini-batches: {best_rise:.2g} of logged intervals rise at the best cell, "
        f"up to {worst_rise:.2g} over the grid",
    )
    all_runs = list(runs.values())
    body = "\n".join(
        [
            protocol,
            "",
            f"Budget: harness budget `{cfg.budget}` of `{cfg.task}`; {len(all_runs)} runs, "
            f"{compute_seconds(all_runs) / 60:.1f} min of compute. Hardware: "
            f"{hardware_text(all_runs)}.",
            "",
            f"![E3 heatmaps]({figure})",
            "",
            table,
            "",
            " ".join(parts),
        ]
    )
    return SectionResult(ID, TITLE, "done", body, " ".join(parts[:3]), claims)


def _plot(
    ctx: Context,
    cfg: Config,
    test: np.ndarray,
    rise: np.ndarray,
    spike: np.ndarray,
    edge: np.ndarray | None,
) -> str:
    panels = [
        ("test accuracy (mean over seeds)", np.nanmean(test, -1)),
        ("fraction of rising intervals", np.nanmean(rise, -1)),
        ("fraction of spike windows", np.nanmean(spike, -1)),
    ]
    if edge is not None:
        panels.append(("sharpness x eff. lr / 2 (median)", _nanmedian(edge, -1)))
    fig, axes = new_figure(1, len(panels), 3.8, 3.0)
    for ax, (title, m) in zip(axes[0], panels, strict=True):
        im = ax.imshow(m, aspect="auto", origin="lower", cmap="viridis")
        ax.set_xticks(range(len(cfg.lrs)), [f"{v:g}" for v in cfg.lrs], fontsize=7)
        ax.set_yticks(range(len(cfg.decays)), [f"{v:g}" for v in cfg.decays], fontsize=7)
        ax.set_xlabel("a0")
        ax.set_ylabel("decay_total")
        ax.set_title(title, fontsize=9)
        for (i, j), v in np.ndenumerate(m):
            ax.text(
                j,
                i,
                "x" if np.isnan(v) else f"{v:.2f}",
                ha="center",
                va="center",
                fontsize=6,
                color="w",
            )
        fig.colorbar(im, ax=ax)
    fig.suptitle(
        f"E3: SuperLevelSGD on {cfg.task} ({cfg.budget} budget), {cfg.seeds} seeds", fontsize=10
    )
    save_figure(fig, ctx.figures / "e3_heatmaps.png")
    return "figures/e3_heatmaps.png"


def _protocol(cfg: Config) -> str:
    return (
        "**Question.** How do the initial step a0 and the decay beta shape accuracy and "
        "stability on MNIST?\n\n"
        f"**Protocol.** Harness task `{cfg.task}`, optimizer `superlevel`, the full grid "
        f"a0 in {{{', '.join(f'{v:g}' for v in cfg.lrs)}}} x decay_total (beta x total steps) "
        f"in {{{', '.join(f'{v:g}' for v in cfg.decays)}}} x seeds 1..{cfg.seeds} (shared "
        "init and data order across cells). Nothing is selected on the test split: the "
        "best cell is the best mean validation accuracy; test accuracy is reported. "
        "Stability: the fraction of logged intervals whose window-mean training loss rose, "
        f"and spike windows (above {SPIKE:g} x the lowest window so far). "
        + (
            "Sharpness against 2 / effective lr: the top Hessian eigenvalue of the final "
            f"model's training loss on {cfg.sharpness_examples} fixed training examples "
            "(power iteration) times the last logged effective lr a_t / (1 + ||g||), over "
            "2: below 1 a gradient step of that length is stable on that curvature."
            if cfg.sharpness_examples
            else "Sharpness is not measured in this profile."
        )
    )
