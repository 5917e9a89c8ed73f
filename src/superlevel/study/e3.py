"""E3 — MNIST and beta: accuracy and stability of SuperLevelSGD over (a0, decay_total).

A full grid of the harness's ``superlevel`` optimizer on ``mnist_mlp``: ``a0`` x
``decay_total`` (``beta * total_steps``; 0 = modulation only), and plain SGD over an lr
grid, each on the tuning seed (1001: it picks the best cell and SGD's best lr) and the
final seeds (which score them). Stability is read from the per-step records the runner
keeps (the window-mean training loss every ``ceil(steps / 100)`` steps: rising intervals
and spikes) and, for the claim, from the *full* training loss at every epoch end (exact
over the training split, not a mini-batch window). The final sharpness is measured on
the trained models (``sharpness_examples``).

**C2, rule before the numbers.** ``dV <= 0`` read on the full training loss: the rule
supports it on MNIST when, at its best cell, the full training loss falls at every epoch
on every final seed; not supported when it rises more often than SGD at its best lr
(paired over seeds, TOST 0.05); mixed otherwise (it rises, but no more than SGD).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from superlevel.bench.report.render import Block, Image, Paragraph, Table
from superlevel.bench.run import RunConfig
from superlevel.bench.stats import Comparison, compare_family
from superlevel.study import harness
from superlevel.study.common import (
    ClaimEvidence,
    Context,
    Verdict,
    compute_text,
    fmt,
    new_figure,
    paragraphs,
    rising_fraction,
    save_figure,
)

ID = "E3"
TITLE = "MNIST and beta: accuracy and stability over a0 x decay"
COLLAPSE = 0.2  # mean test accuracy below this (chance is 0.1 with 10 classes): collapsed
TUNING_SEED = 1001  # picks the best cell and SGD's best lr; never scored
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
    sgd_lrs: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)


def _cfg(cfg: Config, lr: float, decay: float | None, seed: int) -> RunConfig:
    """A grid run: ``superlevel`` at (lr, decay), or ``sgd`` at lr when ``decay`` is None."""
    return harness.config(
        cfg.task,
        "superlevel" if decay is not None else "sgd",
        seed,
        budget=cfg.budget,
        epochs=cfg.epochs,
        hparams={"lr": lr} if decay is None else {"lr": lr, "decay_total": decay},
        task_options=dict(cfg.task_options)
        | ({"sharpness_examples": cfg.sharpness_examples} if cfg.sharpness_examples else {}),
    )


def _seeds(cfg: Config) -> list[int]:
    return [TUNING_SEED, *range(1, cfg.seeds + 1)]


def configs(cfg: Config) -> list[RunConfig]:
    """The superlevel grid and the SGD lr grid, on the tuning seed and the final seeds."""
    grid = [_cfg(cfg, lr, d, s) for d in cfg.decays for lr in cfg.lrs for s in _seeds(cfg)]
    return grid + [_cfg(cfg, lr, None, s) for lr in cfg.sgd_lrs for s in _seeds(cfg)]


def epoch_rising(ctx: Context, run_id: str) -> float:
    """Fraction of epoch intervals whose full training loss rose (NaN: diverged)."""
    losses = [r["loss"] for r in ctx.store.epoch_metrics(run_id) if r["split"] == "train"]
    return rising_fraction([math.nan if v is None else v for v in losses])


def run(ctx: Context, cfg: Config) -> None:
    """Every grid cell on every seed."""
    harness.run(ctx, configs(cfg), f"study:{ID}")


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


@dataclass
class Measured:
    """E3's numbers from the stored grid: per (decay, a0, seed) test accuracy, rising and
    spike fractions and edge ratios; the table rows; the findings' sentences; and the C2
    comparison of the full training loss (best cell against SGD's best lr)."""

    runs: dict[str, dict[str, Any]]
    test: np.ndarray
    rise: np.ndarray
    spike: np.ndarray
    edge: np.ndarray
    rows: list[list[str]]
    parts: list[str]
    c2: tuple[list[float], list[float], float, Comparison] | None
    missing: str = ""


def load(ctx: Context, cfg: Config) -> Measured | str:
    """E3's numbers from stored runs only, or how many runs are missing."""
    runs = harness.results(ctx, configs(cfg))
    if runs is None:
        done, total = harness.count_done(ctx, configs(cfg))
        return f"{done} of {total} runs are stored."
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
    vmean = np.where(np.isnan(val).any(-1), -np.inf, np.nan_to_num(val).mean(-1))

    def tuned_val(lr: float, d: float | None) -> float:
        row = runs[_cfg(cfg, lr, d, TUNING_SEED).run_id]
        v = row["val_metric"] if row["status"] == "finished" else None
        return -math.inf if v is None else float(v)

    tv = np.array([[tuned_val(lr, d) for lr in cfg.lrs] for d in cfg.decays])
    bi, bj = np.unravel_index(int(np.argmax(tv)), tv.shape)  # picked on the tuning seed
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
    # The best cell (tuning seed) against modulation only at its best a0 (tuning seed),
    # scored on the final seeds.
    parts = [
        f"Best cell on the tuning seed: a0 {cfg.lrs[bj]:g}, decay_total {cfg.decays[bi]:g}, "
        f"test accuracy {100 * test[bi, bj].mean():.2f}% over the final seeds."
    ]
    if 0.0 in cfg.decays and cfg.seeds >= 2:
        z = cfg.decays.index(0.0)
        zj = int(np.argmax(tv[z]))
        if z != bi and np.all(np.isfinite(test[z, zj])) and np.all(np.isfinite(test[bi, bj])):
            c = compare_family({"m": ((100 * test[bi, bj]).tolist(),
                                      (100 * test[z, zj]).tolist())}, margin=0.5)["m"]  # fmt: skip
            parts.append(
                f"Against modulation only at its best a0 ({cfg.lrs[zj]:g}): test accuracy "
                f"difference {c.paired.text()} points, {c.text()}, paired over seeds."
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
    # C2 on the full training loss at epoch ends: the best cell against SGD's best lr.
    sgd_best = max(cfg.sgd_lrs, key=lambda lr: tuned_val(lr, None))
    ours = [epoch_rising(ctx, _cfg(cfg, cfg.lrs[bj], cfg.decays[bi], k).run_id)
            for k in range(1, cfg.seeds + 1)]  # fmt: skip
    sgd = [epoch_rising(ctx, _cfg(cfg, sgd_best, None, k).run_id)
           for k in range(1, cfg.seeds + 1)]  # fmt: skip
    c2 = None
    if np.all(np.isfinite(ours)) and np.all(np.isfinite(sgd)) and cfg.seeds >= 2:
        c2 = (ours, sgd, sgd_best, compare_family({"r": (ours, sgd)}, margin=0.05)["r"])
    return Measured(runs, test, rise, spike, edge, rows, parts, c2)


def blocks(ctx: Context, cfg: Config, m: Measured) -> list[Block]:
    """E3's body: protocol, budget, the heatmaps, the grid table and the findings."""
    figure = _plot(ctx, cfg, m.test, m.rise, m.spike, m.edge if cfg.sharpness_examples else None)
    head = [
        "decay_total",
        "a0",
        f"test accuracy % mean (min..max) over {cfg.seeds} seeds",
        "rising intervals",
        "spike windows",
    ] + (["sharpness x effective lr / 2 (median)"] if cfg.sharpness_examples else [])
    all_runs = list(m.runs.values())
    return [
        *paragraphs(protocol(cfg)),
        Paragraph(
            f"Budget: harness budget `{cfg.budget}` of `{cfg.task}`"
            + (f", options {dict(cfg.task_options)}" if cfg.task_options else "")
            + f"; the grid on the tuning seed {TUNING_SEED} and seeds 1..{cfg.seeds}, SGD at "
            f"lr {', '.join(f'{x:g}' for x in cfg.sgd_lrs)}; " + compute_text(all_runs)
        ),
        Image(figure, "E3 heatmaps"),
        Table(head, m.rows),
        Paragraph(" ".join(m.parts)),
    ]


def verdict(cfg: Config, m: Measured) -> Verdict:
    """The findings' first sentences, and the C2 evidence (rule in the module docstring)."""
    claims: dict[str, ClaimEvidence] = {}
    if m.c2 is not None:
        ours, sgd, sgd_best, c = m.c2
        v = ("supported" if max(ours) == 0 else
             "not supported" if c.verdict == "higher" else "mixed")  # fmt: skip
        claims["C2"] = ClaimEvidence(
            v,
            f"E3, MNIST: the full training loss rises in {np.mean(ours):.2g} of epoch intervals "
            f"at the best cell, SGD (lr {sgd_best:g}) in {np.mean(sgd):.2g}; difference "
            f"{c.paired.text()}, {c.text()}",
        )
    return Verdict(" ".join(m.parts[:3]), claims)


def _plot(
    ctx: Context,
    cfg: Config,
    test: np.ndarray,
    rise: np.ndarray,
    spike: np.ndarray,
    edge: np.ndarray | None,
) -> Path:
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
    return save_figure(fig, ctx.figures / "e3_heatmaps.png")


def protocol(cfg: Config) -> str:
    """Question and protocol."""
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
