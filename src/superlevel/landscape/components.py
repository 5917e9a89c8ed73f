"""Connected components of level sets on grids, and whether a trajectory stays connected.

For a function ``f`` sampled on a grid, the sub-level set at ``c`` is the set of cells with
``f <= c`` and the super-level set the cells with ``f >= c``. Two cells of the set are
neighbours when their index offsets ``o`` have at most ``connectivity`` non-zero entries
(each ``|o_i| <= 1``): ``connectivity=1`` joins faces only, ``connectivity=ndim`` joins
corners too (the same convention as ``scipy.ndimage.generate_binary_structure``).

Labelling uses ``scipy.ndimage.label`` when scipy is importable: it needs memory for the
labels only and was faster in every case measured on 401x401 grids (median ratio 14x and
30x in two runs, ``benchmarks/landscape_components.py``). Without scipy (the core needs
only torch and numpy) a vectorised union-find over the grid's neighbour pairs is the
fallback: every round hooks each root to the smallest root across its edges
(``parent[hi] = min(parent[hi], lo)``), then compresses paths by pointer jumping.
Parents only ever decrease, so the forest has no cycles and each root ends as the
smallest raster index of its component; labels ``1..count`` follow that order, which is
the order ``scipy.ndimage.label`` uses, so both give identical labels. The union-find
holds every neighbour pair in memory (``3**ndim`` cells with full connectivity have
``(7**ndim - 3**ndim) / 2`` of them), so each labelling first estimates its working
memory and refuses a grid over ``memory_budget``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from superlevel.landscape.barriers import check_kind, segment_barrier

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
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
    """Half of the neighbour offsets (first non-zero entry positive): each edge once.

    Built per set of non-zero axes, so high dimensions with low connectivity do not
    enumerate all ``3**ndim`` offsets.
    """
    offs = []
    for k in range(1, connectivity + 1):
        for axes in itertools.combinations(range(ndim), k):
            for signs in itertools.product((1, -1), repeat=k - 1):
                o = [0] * ndim
                o[axes[0]] = 1
                for a, sign in zip(axes[1:], signs, strict=True):
                    o[a] = sign
                offs.append(tuple(o))
    return offs


def _edge_count(shape: tuple[int, ...], connectivity: int) -> int:
    """Number of neighbour pairs of a grid, counted without listing them.

    A pair differs in a set ``S`` of axes (``1 <= |S| <= connectivity``); there are
    ``prod_{i in S} 2 (n_i - 1) * prod_{i not in S} n_i`` ordered pairs per ``S``, half
    of them unordered. ``terms[j]`` sums that product over the sets of size ``j``.
    """
    terms = [1] + [0] * len(shape)
    for n in shape:
        for j in range(len(shape), 0, -1):
            terms[j] = terms[j] * n + terms[j - 1] * 2 * (n - 1)
        terms[0] *= n
    return sum(terms[1 : connectivity + 1]) // 2


def _grid_edges(shape: tuple[int, ...], connectivity: int) -> tuple[np.ndarray, np.ndarray]:
    """All neighbour pairs ``(u, v)`` of raster indices of a grid of ``shape``.

    Not cached: the pairs of a large grid take hundreds of MB, freed with the labelling.
    """
    index = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    n_edges = _edge_count(shape, connectivity)
    u, v = np.empty(n_edges, np.int64), np.empty(n_edges, np.int64)
    at = 0
    for o in _offsets(len(shape), connectivity):
        src = tuple(slice(max(-k, 0), n - max(k, 0)) for k, n in zip(o, shape, strict=True))
        dst = tuple(slice(max(k, 0), n - max(-k, 0)) for k, n in zip(o, shape, strict=True))
        m = index[src].size
        u[at : at + m] = index[src].reshape(-1)
        v[at : at + m] = index[dst].reshape(-1)
        at += m
    assert at == n_edges  # the count and the listing agree
    return u, v


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


def _ndimage():
    """``scipy.ndimage`` when scipy is importable, else ``None`` (use the union-find)."""
    try:
        from scipy import ndimage
    except ImportError:
        return None
    return ndimage


# Peak working memory of one labelling, measured with tracemalloc on 1-D to 8-D grids
# (tests/landscape check that the estimate bounds the measured peak): scipy writes int64
# labels and builds its structuring element from index arrays (up to 24 * ndim * 3**ndim
# bytes); the union-find holds the pairs (16 bytes each) and, when the whole grid is in
# the set, the pairs' roots and the pairs still crossing trees: up to 66 bytes a pair.
# Any call also allocates some small arrays: 64 KiB covers them.
_FIXED_BYTES = 64 << 10
_SCIPY_BYTES_PER_CELL = 16
_UNION_FIND_BYTES_PER_CELL = 40
_UNION_FIND_BYTES_PER_EDGE = 72

DEFAULT_MEMORY_BUDGET = 2 << 30
"""Default ``memory_budget`` of the labelling functions: 2 GiB."""


def _label_memory(shape: tuple[int, ...], connectivity: int, scipy: bool) -> tuple[int, str]:
    """Estimated peak bytes of labelling a grid of ``shape``, and how it is labelled."""
    cells = int(np.prod(shape))
    if scipy:
        structure = 24 * len(shape) * 3 ** len(shape)
        return _FIXED_BYTES + cells * _SCIPY_BYTES_PER_CELL + structure, "scipy.ndimage.label"
    edges = _edge_count(shape, connectivity)
    need = _FIXED_BYTES + cells * _UNION_FIND_BYTES_PER_CELL + edges * _UNION_FIND_BYTES_PER_EDGE
    return need, f"the union-find over its {edges:,} neighbour pairs (the fallback without scipy)"


def _check_memory(shape: tuple[int, ...], connectivity: int, scipy: bool, budget: int) -> None:
    """Refuse a labelling whose estimated working memory exceeds ``budget`` bytes."""
    if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
        raise ValueError(f"memory_budget must be a positive number of bytes, got {budget!r}")
    need, how = _label_memory(shape, connectivity, scipy)
    if need > budget:
        raise ValueError(
            f"labelling a grid of shape {shape} ({int(np.prod(shape)):,} cells, connectivity "
            f"{connectivity}) with {how} needs about {need:,} bytes ({need / 2**20:.1f} MiB), "
            f"over memory_budget={budget:,} bytes; use a coarser grid or a lower "
            f"connectivity, or raise memory_budget"
        )


def _labeller(
    shape: tuple[int, ...],
    connectivity: int,
    memory_budget: int,
    *,
    use_scipy: bool | None = None,
) -> Callable[[np.ndarray], tuple[np.ndarray, int]]:
    """A function labelling boolean masks of ``shape``: ``mask -> (labels, count)``.

    ``scipy.ndimage.label`` when scipy is importable (``use_scipy=None``) or asked for
    (``True``), else the union-find over the grid's neighbour pairs (listed once here,
    freed with the labeller).

    Raises:
        ValueError: the labelling would need more than ``memory_budget`` bytes.
        ImportError: ``use_scipy=True`` without scipy.
    """
    nd = _ndimage() if use_scipy is not False else None
    if use_scipy and nd is None:
        raise ImportError("use_scipy=True needs scipy (pip install scipy)")
    _check_memory(shape, connectivity, nd is not None, memory_budget)
    if nd is not None:
        structure = nd.generate_binary_structure(len(shape), connectivity)

        def label(mask: np.ndarray) -> tuple[np.ndarray, int]:
            labels = np.empty(shape, dtype=np.int64)
            return labels, int(nd.label(mask, structure, output=labels))

        return label
    u, v = _grid_edges(shape, connectivity)

    def label(mask: np.ndarray) -> tuple[np.ndarray, int]:
        flat = mask.reshape(-1)
        keep = flat[u] & flat[v]
        roots = _union_find(flat.size, u[keep], v[keep])
        labels = np.zeros(flat.size, dtype=np.int64)
        uniq, inverse = np.unique(roots[flat], return_inverse=True)
        labels[flat] = inverse.reshape(-1) + 1
        return labels.reshape(shape), int(uniq.size)

    return label


def _level_mask(values: np.ndarray, level: float, kind: str) -> np.ndarray:
    """``values <= level`` (sub) or ``values >= level`` (super); NaN cells are in neither."""
    with np.errstate(invalid="ignore"):
        return values <= level if kind == "sub" else values >= level


def level_set_components(
    values: np.ndarray | torch.Tensor | Grid,
    level: float,
    kind: str = "sub",
    connectivity: int | str = 1,
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> tuple[np.ndarray, int]:
    """Label the connected components of a level set of gridded values.

    The set is ``{values <= level}`` (``kind="sub"``) or ``{values >= level}``
    (``kind="super"``); NaN cells belong to neither. Labelled by ``scipy.ndimage.label``
    when scipy is importable, else by the union-find (identical labels).

    Args:
        values: an N-D array (or a :class:`Grid`).
        level: the level ``c``.
        kind: ``"sub"`` or ``"super"``.
        connectivity: ``1`` (faces) up to ``values.ndim`` or ``"full"`` (faces and corners).
        memory_budget: bytes the labelling may use, estimated before it starts
            (:data:`DEFAULT_MEMORY_BUDGET`, 2 GiB): with scipy 16 per cell plus
            ``24 * ndim * 3**ndim`` for its structuring element; with the union-find 40
            per cell plus 72 per neighbour pair; 64 KiB more for either. A 401x401 grid
            has 320,000 pairs at connectivity 1; ``3**10`` cells have 141 million with
            full connectivity, 9.5 GiB for the union-find (refused by default), 14 MiB
            for scipy.

    Returns:
        ``(labels, count)``: int64 labels of ``values``' shape, 0 outside the set and
        ``1..count`` for the components in raster order of their first cell.

    Raises:
        ValueError: bad ``kind``, ``level`` or ``connectivity``, or a grid whose labelling
            needs more than ``memory_budget`` (the message names the sizes).
    """
    check_kind(kind)
    vals = values.values if isinstance(values, Grid) else _to_numpy(values)
    if vals.ndim == 0:
        raise ValueError("values must have at least one dimension")
    level = float(level)
    if np.isnan(level):
        raise ValueError("level must not be NaN")
    conn = _check_connectivity(connectivity, vals.ndim)
    return _labeller(vals.shape, conn, memory_budget)(_level_mask(vals, level, kind))


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
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
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
        memory_budget: bytes the grid labelling may use, see
            :func:`level_set_components`.

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
        label = _labeller(grid.shape, conn, memory_budget)  # one for all the steps
        idx, inside = grid.index_of(pts)
        cell_vals = grid.values[tuple(np.moveaxis(idx, -1, 0))]
        pick = np.maximum if kind == "sub" else np.minimum
        ends = pick(losses, cell_vals)  # value that includes both the point and its cell
        flat = np.ravel_multi_index(tuple(np.moveaxis(idx, -1, 0)), grid.shape)
        for i in range(n):
            if not (inside[i] and inside[i + 1]):
                continue
            c = pick(ends[i], ends[i + 1])
            levels[i] = c
            if barriers[i] <= tol or flat[i] == flat[i + 1]:
                # The segment itself stays in the set: an exact witness path.
                connected[i] = 1
                continue
            lab = label(_level_mask(grid.values, c, kind))[0].reshape(-1)
            connected[i] = int(lab[flat[i]] == lab[flat[i + 1]])
        if ref_level is not None:
            if np.isnan(ref_level):
                raise ValueError("ref_level must not be NaN")
            labels, _ = label(_level_mask(grid.values, float(ref_level), kind))
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
