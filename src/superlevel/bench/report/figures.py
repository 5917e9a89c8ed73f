"""Figures drawn from data: bands over seeds, LR-sensitivity points, performance profiles.

Nothing here reads a store: the report gathers the series first
(:func:`superlevel.bench.report.load_series`), the functions below turn plain numbers
into PNG files. matplotlib's object API with the Agg canvas (no pyplot, no global
backend change); matplotlib is imported only when a figure is drawn.

Style: the method under study (labels starting with ``superlevel``) solid, the
baselines dashed, so that many lines stay legible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from superlevel.bench.report.render import naming

__all__ = [
    "Band",
    "band",
    "plot_curves",
    "plot_lr_sensitivity",
    "plot_profile",
    "plot_superlevel_traces",
    "profile_figure",
]


@dataclass(frozen=True)
class Band:
    """Mean and standard deviation over seeds of a series, at the x values all seeds have."""

    x: np.ndarray
    mean: np.ndarray
    std: np.ndarray


def band(series: Sequence[Mapping[int, float | None]]) -> Band | None:
    """The :class:`Band` of ``series`` (one ``{x: y}`` per seed; ``None`` y: missing).

    Only x values present in every series are kept; ``None`` when there are none.
    """
    if not series:
        return None
    xs = sorted(set.intersection(*(set(s) for s in series)))
    if not xs:
        return None
    ys = np.array([[np.nan if s[x] is None else s[x] for x in xs] for s in series], dtype=float)
    with np.errstate(all="ignore"):  # a step every seed lacks stays NaN (a gap in the line)
        return Band(np.array(xs), np.nanmean(ys, axis=0), np.nanstd(ys, axis=0))


def _figure(ncols: int = 1, width: float = 5.0, height: float = 3.4) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _save(fig: Any, path: Path) -> Path:
    with naming(path):
        fig.savefig(path, dpi=90)
    return path


def _style(label: str) -> dict[str, Any]:
    return {"lw": 1.4, "ls": "-" if label.startswith("superlevel") else "--"}


def _plot_band(ax: Any, b: Band, label: str, **kw: Any) -> Any:
    (line,) = ax.plot(b.x, b.mean, label=label, **{**_style(label), **kw})
    ax.fill_between(b.x, b.mean - b.std, b.mean + b.std, color=line.get_color(), alpha=0.2, lw=0)
    return line


def plot_curves(
    loss: Mapping[str, Band], val: Mapping[str, Band], metric_name: str, title: str, path: Path
) -> Path | None:
    """Training loss per step and validation metric per epoch (mean ± std band over seeds).

    Returns ``None`` (nothing written) when there is no loss band.
    """
    if not loss:
        return None
    fig, (ax_loss, ax_val) = _figure(2)
    for label, b in loss.items():
        _plot_band(ax_loss, b, label)
    for label, b in val.items():
        if len(b.x) > 2:  # the untrained epoch-0 point would squash the interesting range
            b = Band(b.x[1:], b.mean[1:], b.std[1:])
        _plot_band(ax_val, b, label, marker="o", ms=3)
    ax_loss.set(xlabel="step", ylabel="training loss (window mean)", title=title)
    if all(np.all(b.mean > 0) for b in loss.values()):
        ax_loss.set_yscale("log")
    ax_val.set(xlabel="step", ylabel=f"validation {metric_name}", title="validation, per epoch")
    ax_loss.legend(fontsize=7)
    return _save(fig, path)


def plot_lr_sensitivity(
    points: Mapping[str, Sequence[tuple[float, float | None]]],
    metric_name: str,
    title: str,
    path: Path,
    *,
    grid: bool,
) -> Path | None:
    """Final validation metric against the learning rate; ``None`` metric: diverged.

    Diverged settings are drawn as crosses on the lower edge of the finite values.
    ``grid``: the points are a learning-rate grid (joined by lines), else tuning trials.
    """
    if not any(points.values()):
        return None
    fig, (ax,) = _figure(1, width=5.5)
    finite = [v for pts in points.values() for _, v in pts if v is not None]
    floor = min(finite) if finite else 0.0
    for label, pts in sorted(points.items()):
        pts = sorted(pts)
        ok = [(lr, v) for lr, v in pts if v is not None]
        (line,) = ax.plot(
            [lr for lr, _ in ok], [v for _, v in ok], "-o" if grid else "o", ms=4, label=label
        )
        bad = [lr for lr, v in pts if v is None]
        if bad:
            ax.plot(bad, [floor] * len(bad), "x", color=line.get_color(), ms=7)
    ax.set(
        xscale="log",
        xlabel="learning rate",
        ylabel=f"final validation {metric_name}",
        title=f"{title}: LR sensitivity ({'grid' if grid else 'tuning trials'}; x = diverged)",
    )
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_superlevel_traces(
    traces: Mapping[str, tuple[Band, Band, Band]], title: str, path: Path
) -> Path | None:
    """Effective lr ``a(t)/(1+||g||)``, schedule ``a(t)`` and gradient norm per label.

    ``traces[label] = (effective_lr, lr, grad_norm)`` bands; ``None`` when empty.
    """
    if not traces:
        return None
    fig, (ax_lr, ax_g) = _figure(2)
    for label, (eff, sched, gn) in traces.items():
        (line,) = ax_lr.plot(eff.x, eff.mean, label=f"{label} effective", lw=1.2)
        ax_lr.plot(sched.x, sched.mean, "--", color=line.get_color(), lw=1, label=f"{label} a(t)")
        _plot_band(ax_g, gn, label, color=line.get_color(), ls="-", lw=1.2)
    ax_lr.set(
        xlabel="step",
        ylabel="learning rate",
        yscale="log",
        title=f"{title}: a(t) and a(t)/(1+||g||)",
    )
    ax_g.set(xlabel="step", ylabel="gradient norm ||g||", yscale="log", title="gradient norm")
    ax_lr.legend(fontsize=7)
    return _save(fig, path)


# Dash patterns for lines that may coincide over a stretch: each stays visible on top.
_DASHES = [(0, (6, 2)), (0, (2, 2)), (0, (8, 2, 2, 2)), (0, (4, 4)), (0, (1, 1))]


def profile_figure(profile: Mapping[str, np.ndarray], taus: np.ndarray, n: int) -> Any:
    """The figure of a performance profile ``rho_s(tau)``.

    Optimizers with the same curve share one line, labelled with all their names (two
    curves drawn on top of each other would hide one, e.g. all at 0 when none reached the
    target). The other lines are drawn from thick to thin, each with its own dash
    pattern, so that where two coincide over a stretch both stay visible.
    """
    groups: dict[bytes, list[str]] = {}
    curves: dict[bytes, np.ndarray] = {}
    for name, rho in sorted(profile.items()):
        key = np.asarray(rho, dtype=float).tobytes()
        groups.setdefault(key, []).append(name)
        curves[key] = np.asarray(rho, dtype=float)
    # Larger area first (drawn thickest, underneath).
    order = sorted(groups, key=lambda k: (-float(curves[k].sum()), groups[k]))
    fig, (ax,) = _figure(1, width=6.5)
    widths = np.linspace(2.8, 1.2, len(order)) if len(order) > 1 else [1.6]
    for i, key in enumerate(order):
        names, rho = groups[key], curves[key]
        label = " = ".join(names) + ("" if rho.any() else " (never reached)")
        solid = any(s.startswith("superlevel") for s in names)
        ls = "-" if solid else _DASHES[i % len(_DASHES)]
        ax.step(taus, rho, where="post", label=label, ls=ls, lw=float(widths[i]))
    ax.set(
        xscale="log",
        xlabel="tau (steps-to-target / best)",
        ylabel="fraction of tasks",
        ylim=(-0.04, 1.04),
        title=f"performance profile over {n} task(s)",
    )
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def plot_profile(profile: Mapping[str, np.ndarray], taus: np.ndarray, n: int, path: Path) -> Path:
    """Draw the performance profile (:func:`profile_figure`) into ``path``."""
    return _save(profile_figure(profile, taus, n), path)
