"""Are two grid cells in one component of ``{f <= c}``, for many (cell, cell, c) at once?

:func:`superlevel.landscape.trajectory_connectivity` answers this per step by labelling
the whole level set at that step's level: exact, but one labelling per uphill step. E2
asks it for hundreds of thousands of steps, so here the grid is labelled once for *all*
levels: a Kruskal pass over the grid's edges in ascending order of
``w(u, v) = max(f(u), f(v))`` with union by rank and no path compression, each link
stamped with the ``w`` that made it (a partially persistent union-find). The links with
stamp ``<= c`` form exactly the union-find forest of the cells with ``f <= c`` (an edge
lies inside that set iff ``w <= c``), so two cells are connected at level ``c`` iff
climbing only those links leads both to the same root. Union by rank keeps every climb
under ``log2(cells)`` links; the queries run vectorised in numpy.

Super-level sets ``{f >= c}`` are the sub-level sets ``{-f <= -c}``. The step-level
answer is the toolkit's, and is tested equal to it. Study E2 asks it for every step of every
trajectory.
"""

from __future__ import annotations

import numpy as np

from superlevel.landscape.barriers import check_kind
from superlevel.landscape.components import Grid, _grid_edges

__all__ = ["MergeForest", "step_connected"]


class MergeForest:
    """All sub-level (or super-level) set components of a 2-D grid, for every level.

    Args:
        grid: the sampled function (2-D).
        kind: ``"sub"`` for ``{f <= c}`` or ``"super"`` for ``{f >= c}``.
    """

    def __init__(self, grid: Grid, kind: str = "sub") -> None:
        check_kind(kind)
        if grid.dim != 2:
            raise ValueError(f"MergeForest handles 2-D grids, got {grid.dim}-D")
        self.grid, self.kind = grid, kind
        vals = grid.values.reshape(-1)
        vals = vals if kind == "sub" else -vals
        if not np.all(np.isfinite(vals)):
            raise ValueError("grid values must be finite")
        u, v = _grid_edges(grid.shape, 1)  # face neighbours
        w = np.maximum(vals[u], vals[v])
        order = np.argsort(w, kind="stable")
        n = vals.size
        parent = list(range(n))
        rank = [0] * n
        stamp = [np.inf] * n
        # A Python loop: each union depends on the ones before it (no vectorised form).
        for a, b, c in zip(u[order].tolist(), v[order].tolist(), w[order].tolist(), strict=True):
            while parent[a] != a:
                a = parent[a]
            while parent[b] != b:
                b = parent[b]
            if a == b:
                continue
            if rank[a] < rank[b]:
                a, b = b, a
            parent[b] = a
            stamp[b] = c
            if rank[a] == rank[b]:
                rank[a] += 1
        self._vals = vals
        self._parent = np.asarray(parent, dtype=np.int64)
        self._stamp = np.asarray(stamp, dtype=np.float64)

    def root_at(self, cells: np.ndarray, level: np.ndarray) -> np.ndarray:
        """Component representative of each raster index in ``cells`` within the set at ``level``.

        ``level`` is in the units of ``f`` (for ``super`` it is negated here). Cells outside
        the set keep their own index, so they never share a root with another cell.
        """
        x = np.asarray(cells, dtype=np.int64).copy()
        c = np.asarray(level, dtype=np.float64)
        c = c if self.kind == "sub" else -c
        c = np.broadcast_to(c, x.shape)
        while True:
            p = self._parent[x]
            move = (p != x) & (self._stamp[x] <= c)
            if not move.any():
                return np.where(self._vals[np.asarray(cells)] <= c, x, -1 - np.asarray(cells))
            x = np.where(move, p, x)


def step_connected(
    forest: MergeForest,
    points: np.ndarray,
    losses: np.ndarray,
    barriers: np.ndarray,
    *,
    tol: float = 1e-9,
) -> np.ndarray:
    """Per step ``a = x_t -> b = x_{t+1}``: 1 connected, 0 jumped a barrier, -1 unknown.

    The rule of :func:`~superlevel.landscape.trajectory_connectivity`: the level is
    ``max(f(a), f(b))`` (sub) / ``min`` (super), widened to include the ends' grid cells; a
    step whose segment barrier is ``<= tol`` or that stays in one cell is connected; other
    steps are connected iff both ends share a component of the set at that level; steps
    with an end outside the grid are unknown.

    Args:
        forest: the grid's :class:`MergeForest` of the wanted kind.
        points: iterates ``(..., T + 1, 2)``.
        losses: ``f`` at the iterates ``(..., T + 1)``.
        barriers: straight-segment barrier of each step ``(..., T)`` (same kind).
        tol: barrier tolerance.

    Returns:
        int8 ``(..., T)``.
    """
    grid = forest.grid
    idx, inside = grid.index_of(points)
    flat = np.ravel_multi_index(tuple(np.moveaxis(idx, -1, 0)), grid.shape)
    cell_vals = grid.values.reshape(-1)[flat]
    pick = np.maximum if forest.kind == "sub" else np.minimum
    ends = pick(losses, cell_vals)
    level = pick(ends[..., :-1], ends[..., 1:])
    a, b = flat[..., :-1], flat[..., 1:]
    known = inside[..., :-1] & inside[..., 1:]
    trivial = (barriers <= tol) | (a == b)
    same = forest.root_at(a, level) == forest.root_at(b, level)
    out = np.where(trivial | same, 1, 0).astype(np.int8)
    return np.where(known, out, np.int8(-1)).astype(np.int8)
