"""Figures: level-set components with trajectories, 1-D slices, curve vs line barriers.

matplotlib is imported inside the functions (it is an optional extra). Figures are built
with :class:`matplotlib.figure.Figure` directly, which renders with the Agg canvas and
leaves the user's pyplot backend and state alone. Every function returns the figure;
:func:`save_figure` writes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from superlevel.landscape.barriers import BarrierResult, check_kind
from superlevel.landscape.components import Grid, TrajectoryConnectivity, level_set_components

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from superlevel.landscape.connectivity import ConnectResult
    from superlevel.landscape.slices import Slice1D

__all__ = ["plot_components", "plot_slices_1d", "plot_connect", "save_figure"]

_TRAJ_COLORS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots()


def _np(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def plot_components(
    grid: Grid,
    level: float,
    kind: str = "sub",
    *,
    connectivity: int | str = 1,
    trajectories: Mapping[str, Any] | None = None,
    reports: Mapping[str, TrajectoryConnectivity] | None = None,
    minima: Any = None,
    contours: int = 20,
    ax: Axes | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (6.0, 5.2),
) -> Figure:
    """Draw a 2-D grid's level-set components, contour lines and trajectories.

    Each component of ``{f <= level}`` (``{f >= level}`` for super) gets its own colour;
    thin grey lines are contours at quantiles of the grid values; the bold line is
    ``f = level``. Trajectories are drawn as lines with their start (circle) and end
    (star); steps that a report marks as jumps are overdrawn as black dashes.

    Args:
        grid: a 2-D :class:`Grid`.
        level: the level of the coloured components.
        kind: ``"sub"`` or ``"super"``.
        connectivity: grid connectivity for the labelling.
        trajectories: ``{name: (T + 1, 2) points}``.
        reports: ``{name: TrajectoryConnectivity}`` to mark jumps.
        minima: ``(k, 2)`` points to mark with crosses.
        contours: number of grey contour lines.
        ax: draw into these axes instead of a new figure.
        title: the axes title (default: a description of the set).
        figsize: size of a new figure.

    Returns:
        The figure.
    """
    check_kind(kind)
    if grid.dim != 2:
        raise ValueError(f"plot_components needs a 2-D grid, got {grid.dim}-D")
    from matplotlib.colors import ListedColormap

    fig, ax = _new_axes(ax, figsize)
    labels, count = level_set_components(grid, level, kind, connectivity)
    xs, ys = grid.axes
    # Pixel edges half a cell outside the sample points, so cells centre on them.
    hx, hy = (xs[-1] - xs[0]) / (2 * (len(xs) - 1)), (ys[-1] - ys[0]) / (2 * (len(ys) - 1))
    extent = (xs[0] - hx, xs[-1] + hx, ys[0] - hy, ys[-1] + hy)
    palette = ["#8dd3c7", "#fdb462", "#bebada", "#fb8072", "#80b1d3", "#b3de69", "#fccde5"]
    cmap = ListedColormap([palette[i % len(palette)] for i in range(max(count, 1))])
    shown = np.ma.masked_equal(labels.T, 0)
    ax.imshow(
        shown,
        origin="lower",
        extent=extent,
        cmap=cmap,
        vmin=0.5,
        vmax=max(count, 1) + 0.5,
        interpolation="nearest",
        aspect="auto",
        alpha=0.85,
    )
    finite = grid.values[np.isfinite(grid.values)]
    if contours > 0 and finite.size:
        qs = np.unique(np.quantile(finite, np.linspace(0.02, 0.98, contours)))
        if qs.size:
            ax.contour(
                xs,
                ys,
                grid.values.T,
                levels=qs,
                colors="0.55",
                linewidths=0.5,
                negative_linestyles="solid",
            )
    if finite.size and finite.min() < level < finite.max():
        ax.contour(
            xs,
            ys,
            grid.values.T,
            levels=[level],
            colors="k",
            linewidths=1.4,
            negative_linestyles="solid",
        )
    if minima is not None:
        m = _np(minima).reshape(-1, 2)
        ax.plot(m[:, 0], m[:, 1], "kx", ms=7, mew=1.5, label="minima")
    jump_labelled = False
    for i, (name, pts) in enumerate((trajectories or {}).items()):
        p = _np(pts).reshape(-1, 2)
        color = _TRAJ_COLORS[i % len(_TRAJ_COLORS)]
        ax.plot(p[:, 0], p[:, 1], "-", color=color, lw=1.2, marker=".", ms=3, label=name)
        ax.plot(p[0, 0], p[0, 1], "o", color=color, mec="k", ms=7)
        ax.plot(p[-1, 0], p[-1, 1], "*", color=color, mec="k", ms=12)
        rep = (reports or {}).get(name)
        if rep is not None:
            for j in np.flatnonzero(rep.connected == 0):
                label = None if jump_labelled else "jump (leaves its component)"
                ax.plot(p[j : j + 2, 0], p[j : j + 2, 1], "--", color="k", lw=2.0, label=label)
                jump_labelled = True
    ax.set_xlim(xs[0], xs[-1])
    ax.set_ylim(ys[0], ys[-1])
    rel = "<=" if kind == "sub" else ">="
    noun = "component" if count == 1 else "components"
    ax.set_title(title or f"{count} {noun} of {{f {rel} {level:.4g}}}")
    if trajectories or minima is not None:
        ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
    return fig


def plot_slices_1d(
    slices: Mapping[str, Slice1D | BarrierResult],
    *,
    ax: Axes | None = None,
    xlabel: str = "alpha",
    title: str | None = None,
    logy: bool = False,
    figsize: tuple[float, float] = (5.5, 3.8),
) -> Figure:
    """Plot losses along 1-D slices or paths, one line per entry of ``slices``."""
    fig, ax = _new_axes(ax, figsize)
    for name, s in slices.items():
        xs = s.ts if isinstance(s, BarrierResult) else s.alphas
        ax.plot(_np(xs), _np(s.losses), label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss")
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def plot_connect(
    result: ConnectResult, *, ax: Axes | None = None, figsize: tuple[float, float] = (5.5, 3.8)
) -> Figure:
    """Losses along the straight line and along the trained curve, with both barriers."""
    line, curve = result.line_barrier, result.curve_barrier
    return plot_slices_1d(
        {
            f"line (barrier {line.barrier:.4g})": line,
            f"{result.curve} (barrier {curve.barrier:.4g})": curve,
        },
        ax=ax,
        xlabel="t",
        title="mode connectivity",
        figsize=figsize,
    )


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix), creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
