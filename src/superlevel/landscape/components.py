"""Connected components of level sets on grids, and whether a trajectory stays connected.

For a function ``f`` sampled on a grid, the sub-level set at ``c`` is the set of cells with
``f <= c`` and the super-level set the cells with ``f >= c``. Two cells of the set are
neighbours when their index offsets ``o`` have at most ``connectivity`` non-zero entries
(each ``|o_i| <= 1``): ``connectivity=1`` joins faces only, ``connectivity=ndim`` joins
corners too (the same convention as ``scipy.ndimage.generate_binary_structure``).

Labelling is a vectorised union-find: every round hooks each root to the smallest root
across its edges (``parent[hi] = min(parent[hi], lo)``), then compresses paths by pointer
jumping. Parents only ever decrease, so the forest has no cycles and each root ends as
the smallest raster index of its component; labels ``1..count`` follow that order, which
is the order ``scipy.ndimage.label`` uses.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from superlevel.landscape.barriers import check_kind, segment_barrier

__all__ = [
    "Grid",
    "grid_values",
    "level_set_components",
    "component_of",
    "TrajectoryConnectivity",
    "trajectory_connectivity",
]


@dataclass(frozen=True)
class Grid:
    """A function sampled on a regular grid.

    Attributes:
        axes: one increasing float64 coordinate array per dimension.
        values: float64 array of shape ``tuple(len(a) for a in axes)`` with
            ``values[i, j, ...] = f(axes[0][i], axes[1][j], ...)`` ("ij" indexing).
    """

    axes: tuple[np.ndarray, ...]
    values: np.ndarray

    @property
    def dim(self) -> int:
        return len(self.axes)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.values.shape

    @property
    def bounds(self) -> list[tuple[float, float]]:
        return [(float(a[0]), float(a[-1])) for a in self.axes]

    def index_of(self, points: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Nearest grid index of each point, and whether the point lies inside the box.

        Args:
            points: ``(..., dim)`` coordinates.

        Returns:
            ``(index, inside)``: int64 ``(..., dim)`` indices (clipped to the grid) and a
            bool ``(...)`` mask, false for points outside the grid's box (or not finite).
        """
        pts = _to_numpy(points)
        if pts.shape[-1] != self.dim:
            raise ValueError(f"points must have shape (..., {self.dim}), got {pts.shape}")
        idx = np.empty(pts.shape, dtype=np.int64)
        inside = np.isfinite(pts).all(-1)
        for d, ax in enumerate(self.axes):
            x = np.nan_to_num(pts[..., d], nan=ax[0])
            step = (ax[-1] - ax[0]) / max(len(ax) - 1, 1)
            half = 0.5 * step
            inside &= (x >= ax[0] - half) & (x <= ax[-1] + half)
            idx[..., d] = np.clip(np.rint((x - ax[0]) / step), 0, len(ax) - 1).astype(np.int64)
        return idx, inside

    def value_at(self, points: np.ndarray | torch.Tensor) -> np.ndarray:
        """Grid value at the nearest cell of each point (NaN outside the box)."""
        idx, inside = self.index_of(points)
        vals = self.values[tuple(np.moveaxis(idx, -1, 0))]
        return np.where(inside, vals, np.nan)


def _to_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def grid_values(
    fn: Callable[[torch.Tensor], torch.Tensor],
    bounds: Sequence[tuple[float, float]],
    resolution: int | Sequence[int] = 201,
    *,
    batch_size: int = 65536,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Grid:
    """Evaluate ``fn`` on the regular grid spanning ``bounds``, in batches.

    Axis ``d`` holds ``resolution[d]`` equally spaced points from ``bounds[d][0]`` to
    ``bounds[d][1]``; ``fn`` is called on ``(m, dim)`` batches of points (it must broadcast
    over leading dimensions, as the synthetic landscapes do) under ``torch.no_grad``.

    Args:
        fn: the function, ``(..., dim) -> (...)``.
        bounds: one ``(low, high)`` pair per dimension with ``low < high``.
        resolution: points per axis (``>= 2``), one int for all axes or one per axis.
        batch_size: points per call of ``fn``.
        dtype: dtype of the points passed to ``fn``.
        device: device of the points passed to ``fn``.

    Returns:
        A :class:`Grid`.
    """
    bounds = [tuple(map(float, b)) for b in bounds]
    if not bounds or any(len(b) != 2 or not b[0] < b[1] for b in bounds):
        raise ValueError(f"bounds must be (low, high) pairs with low < high, got {bounds}")
    dim = len(bounds)
    res = [resolution] * dim if isinstance(resolution, int) else list(resolution)
    if len(res) != dim or any(not isinstance(r, int) or r < 2 for r in res):
        raise ValueError(f"resolution must be int(s) >= 2, one per axis; got {resolution!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    axes = tuple(np.linspace(lo, hi, r) for (lo, hi), r in zip(bounds, res, strict=True))
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, dim)
    out = np.empty(mesh.shape[0], dtype=np.float64)
    with torch.no_grad():
        for start in range(0, mesh.shape[0], batch_size):
            pts = torch.as_tensor(mesh[start : start + batch_size], dtype=dtype, device=device)
            vals = fn(pts).detach().reshape(-1)
            if vals.numel() != pts.shape[0]:
                raise ValueError(f"fn returned {vals.numel()} values for {pts.shape[0]} points")
            out[start : start + pts.shape[0]] = vals.cpu().to(torch.float64).numpy()
    return Grid(axes, out.reshape(res))


def _offsets(ndim: int, connectivity: int) -> list[tuple[int, ...]]:
    """Half of the neighbour offsets (first non-zero entry positive): each edge once."""
    offs = []
    for o in itertools.product((-1, 0, 1), repeat=ndim):
        nz = [v for v in o if v != 0]
        if nz and len(nz) <= connectivity and nz[0] > 0:
            offs.append(o)
    return offs


@lru_cache(maxsize=8)
def _grid_edges(shape: tuple[int, ...], connectivity: int) -> tuple[np.ndarray, np.ndarray]:
    """All neighbour pairs ``(u, v)`` of raster indices of a grid of ``shape``."""
    index = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    us, vs = [], []
    for o in _offsets(len(shape), connectivity):
        src = tuple(slice(max(-k, 0), n - max(k, 0)) for k, n in zip(o, shape, strict=True))
        dst = tuple(slice(max(k, 0), n - max(-k, 0)) for k, n in zip(o, shape, strict=True))
        us.append(index[src].reshape(-1))
        vs.append(index[dst].reshape(-1))
    if not us:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(us), np.concatenate(vs)


def _union_find(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Root (smallest index of its component) of each of ``n`` nodes joined by edges."""
    parent = np.arange(n, dtype=np.int64)
    while True:
        ru, rv = parent[u], parent[v]
        cross = ru != rv
        if not cross.any():
            return parent
        u, v = u[cross], v[cross]  # edges inside one tree stay inside: drop them
        ru, rv = ru[cross], rv[cross]
        np.minimum.at(parent, np.maximum(ru, rv), np.minimum(ru, rv))
        while True:  # pointer jumping until every node points at its root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand


def _check_connectivity(connectivity: int | str, ndim: int) -> int:
    if connectivity == "full":
        return ndim
    if not isinstance(connectivity, int) or not 1 <= connectivity <= ndim:
        raise ValueError(
            f"connectivity must be an int in 1..{ndim} or 'full', got {connectivity!r}"
        )
    return connectivity


def _label_mask(mask: np.ndarray, connectivity: int, edges=None) -> tuple[np.ndarray, int]:
    u, v = _grid_edges(mask.shape, connectivity) if edges is None else edges
    flat = mask.reshape(-1)
    keep = flat[u] & flat[v]
    roots = _union_find(flat.size, u[keep], v[keep])
    labels = np.zeros(flat.size, dtype=np.int64)
    uniq, inverse = np.unique(roots[flat], return_inverse=True)
    labels[flat] = inverse.reshape(-1) + 1
    return labels.reshape(mask.shape), int(uniq.size)


def level_set_components(
    values: np.ndarray | torch.Tensor | Grid,
    level: float,
    kind: str = "sub",
    connectivity: int | str = 1,
) -> tuple[np.ndarray, int]:
    """Label the connected components of a level set of gridded values.

    The set is ``{values <= level}`` (``kind="sub"``) or ``{values >= level}``
    (``kind="super"``); NaN cells belong to neither.

    Args:
        values: an N-D array (or a :class:`Grid`).
        level: the level ``c``.
        kind: ``"sub"`` or ``"super"``.
        connectivity: ``1`` (faces) up to ``values.ndim`` or ``"full"`` (faces and corners).

    Returns:
        ``(labels, count)``: int64 labels of ``values``' shape, 0 outside the set and
        ``1..count`` for the components in raster order of their first cell.
    """
    check_kind(kind)
    vals = values.values if isinstance(values, Grid) else _to_numpy(values)
    if vals.ndim == 0:
        raise ValueError("values must have at least one dimension")
    level = float(level)
    if np.isnan(level):
        raise ValueError("level must not be NaN")
    conn = _check_connectivity(connectivity, vals.ndim)
    with np.errstate(invalid="ignore"):
        mask = vals <= level if kind == "sub" else vals >= level
    return _label_mask(mask, conn)


def component_of(labels: np.ndarray, grid: Grid, points: np.ndarray | torch.Tensor) -> np.ndarray:
    """Component label at the nearest grid cell of each point.

    Returns:
        int64 ``(...)``: the label (0 when the cell is outside the level set) or ``-1``
        for points outside the grid's box.
    """
    if labels.shape != grid.shape:
        raise ValueError(f"labels shape {labels.shape} does not match grid {grid.shape}")
    idx, inside = grid.index_of(points)
    lab = labels[tuple(np.moveaxis(idx, -1, 0))]
    return np.where(inside, lab, -1)


@dataclass
class TrajectoryConnectivity:
    """Per-step connectivity of a trajectory ``x_0 .. x_T`` (``T`` steps).

    Attributes:
        kind: ``"sub"`` or ``"super"``.
        losses: ``f(x_t)``, float64 ``(T + 1,)``.
        barriers: straight-segment barrier of each step, float64 ``(T,)``.
        levels: the level each step was judged at, ``max`` (sub) / ``min`` (super) of the
            end values (raised to include the ends' grid cells), float64 ``(T,)``; NaN
            without a grid.
        connected: 1 when both ends of the step lie in one component of that level set,
            0 when they do not (the step *jumped* a barrier), -1 when unknown (no grid,
            or an end outside the grid), int8 ``(T,)``.
        components: label of each iterate in the level set at ``ref_level`` (0 outside
            the set, -1 outside the grid or no ``ref_level``), int64 ``(T + 1,)``.
        ref_level: the fixed level of ``components``, or ``None``.
        tol: barriers above ``tol`` count as going over a hill.
    """

    kind: str
    losses: np.ndarray
    barriers: np.ndarray
    levels: np.ndarray
    connected: np.ndarray
    components: np.ndarray
    ref_level: float | None
    tol: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def n_steps(self) -> int:
        return int(self.barriers.size)

    @property
    def n_uphill_segments(self) -> int:
        """Steps whose straight segment has a barrier above ``tol``."""
        return int((self.barriers > self.tol).sum())

    @property
    def n_jumps(self) -> int:
        """Steps whose ends lie in different components (a barrier was jumped)."""
        return int((self.connected == 0).sum())

    @property
    def n_unknown(self) -> int:
        return int((self.connected == -1).sum())

    @property
    def n_switches(self) -> int:
        """Changes of component at ``ref_level`` along the iterates inside that set.

        Iterates outside the set (label 0) or the grid (-1) are skipped, so leaving a well
        and coming back to it is not a switch, while ending up in another well is.
        """
        inside = self.components[self.components > 0]
        return int((inside[1:] != inside[:-1]).sum())

    def summary(self) -> dict[str, float | int | None]:
        """The counts and the final loss as a plain dict."""
        return {
            "steps": self.n_steps,
            "jumps": self.n_jumps,
            "unknown": self.n_unknown,
            "uphill_segments": self.n_uphill_segments,
            "component_switches": self.n_switches,
            "final_loss": float(self.losses[-1]),
            "ref_level": self.ref_level,
        }


def trajectory_connectivity(
    points: np.ndarray | torch.Tensor,
    fn: Callable[[torch.Tensor], torch.Tensor],
    kind: str = "sub",
    grid: Grid | None = None,
    *,
    ref_level: float | None = None,
    connectivity: int | str = 1,
    segment_points: int = 33,
    batched: bool = True,
    tol: float = 1e-9,
) -> TrajectoryConnectivity:
    """Did each step of a trajectory stay inside one component of the level set?

    For the step ``a = x_t -> b = x_{t+1}`` with level ``c = max(f(a), f(b))`` (sub) or
    ``min(f(a), f(b))`` (super): the straight segment's barrier, and, with a grid, whether
    ``a`` and ``b`` lie in the same component of ``{f <= c}`` (``{f >= c}``). If they do
    not, *no* path between them stays in the set: the step jumped a barrier. A step whose
    segment has no barrier is connected exactly (the segment is the path); others are
    judged on the grid, at its resolution. The level is
    raised (sub) / lowered (super) to include the grid cells nearest to ``a`` and ``b``,
    so discretisation never leaves an end outside the set.

    Args:
        points: iterates ``(T + 1, dim)``.
        fn: the function; must broadcast over ``(..., dim)`` when ``batched``.
        kind: ``"sub"`` or ``"super"``.
        grid: ``fn`` sampled by :func:`grid_values`, or ``None`` for barriers only.
        ref_level: fixed level at which to label the iterates' components (switch count).
        connectivity: grid connectivity, see :func:`level_set_components`.
        segment_points: points per segment for the barrier.
        batched: evaluate each segment in one call of ``fn``.
        tol: a segment barrier above ``tol`` counts as uphill.

    Returns:
        A :class:`TrajectoryConnectivity`.
    """
    check_kind(kind)
    pts = torch.as_tensor(points).detach()
    if not pts.is_floating_point():
        pts = pts.to(torch.float64)
    if pts.ndim != 2 or pts.shape[0] < 1:
        raise ValueError(f"points must have shape (T + 1, dim), got {tuple(pts.shape)}")
    with torch.no_grad():
        losses = fn(pts) if batched else torch.stack([fn(p) for p in pts])
    losses = losses.detach().reshape(-1).cpu().to(torch.float64).numpy()
    n = pts.shape[0] - 1
    barriers = np.array(
        [
            segment_barrier(fn, pts[i], pts[i + 1], segment_points, kind, batched=batched).barrier
            for i in range(n)
        ],
        dtype=np.float64,
    )
    levels = np.full(n, np.nan)
    connected = np.full(n, -1, dtype=np.int8)
    components = np.full(n + 1, -1, dtype=np.int64)
    if grid is not None:
        if grid.dim != pts.shape[1]:
            raise ValueError(f"grid has {grid.dim} dims, points have {pts.shape[1]}")
        conn = _check_connectivity(connectivity, grid.dim)
        edges = _grid_edges(grid.shape, conn)
        idx, inside = grid.index_of(pts)
        cell_vals = grid.values[tuple(np.moveaxis(idx, -1, 0))]
        pick = np.maximum if kind == "sub" else np.minimum
        ends = pick(losses, cell_vals)  # value that includes both the point and its cell
        flat = np.ravel_multi_index(tuple(np.moveaxis(idx, -1, 0)), grid.shape)
        with np.errstate(invalid="ignore"):
            for i in range(n):
                if not (inside[i] and inside[i + 1]):
                    continue
                c = pick(ends[i], ends[i + 1])
                levels[i] = c
                if barriers[i] <= tol or flat[i] == flat[i + 1]:
                    # The segment itself stays in the set: an exact witness path.
                    connected[i] = 1
                    continue
                mask = grid.values <= c if kind == "sub" else grid.values >= c
                labels, _ = _label_mask(mask, conn, edges)
                lab = labels.reshape(-1)
                connected[i] = int(lab[flat[i]] == lab[flat[i + 1]])
            if ref_level is not None:
                labels, _ = level_set_components(grid, ref_level, kind, conn)
                components = component_of(labels, grid, pts)
    return TrajectoryConnectivity(
        kind=kind,
        losses=losses,
        barriers=barriers,
        levels=levels,
        connected=connected,
        components=components,
        ref_level=None if ref_level is None else float(ref_level),
        tol=tol,
    )
