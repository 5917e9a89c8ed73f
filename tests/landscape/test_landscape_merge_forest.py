"""The study's all-levels component queries agree with the landscape toolkit step by step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from superlevel.landscape import Himmelblau, MultiWell, grid_values, trajectory_connectivity
from superlevel.landscape.components import level_set_components
from superlevel.landscape.merge_forest import MergeForest, step_connected
from superlevel.study import e2


@pytest.mark.parametrize("kind", ["sub", "super"])
def test_root_at_matches_labelling_at_every_level(kind):
    fn = Himmelblau()
    grid = grid_values(fn, fn.bounds, 41)
    forest = MergeForest(grid, kind)
    cells = np.arange(grid.values.size)
    for level in np.quantile(grid.values, [0.02, 0.1, 0.3, 0.6, 0.9]):
        labels, _ = level_set_components(grid, level, kind)
        lab = labels.reshape(-1)
        roots = forest.root_at(cells, np.full(cells.size, level))
        inside = lab > 0
        # Same component <=> same root, on every pair of cells inside the set.
        _, root_ids = np.unique(roots[inside], return_inverse=True)
        _, lab_ids = np.unique(lab[inside], return_inverse=True)
        pairs = {(a, b) for a, b in zip(root_ids.tolist(), lab_ids.tolist(), strict=True)}
        assert len(pairs) == len(set(root_ids.tolist())) == len(set(lab_ids.tolist()))


@pytest.mark.parametrize("kind", ["sub", "super"])
@pytest.mark.parametrize("make", [Himmelblau, MultiWell.default])
def test_step_connected_equals_trajectory_connectivity(kind, make):
    fn = make()
    grid = grid_values(fn, fn.bounds, 61)
    forest = MergeForest(grid, kind)
    x0 = e2.starts_for(fn, 6)
    pts, _ = e2.trajectories(fn, x0, "GD", 0.05 if make is Himmelblau else 2.0, 30, 0.0)
    with torch.no_grad():
        losses = fn(torch.as_tensor(pts)).numpy()
    ours = step_connected(forest, pts, losses, e2._barriers(fn, pts, kind))
    jumped = 0
    for i in range(pts.shape[0]):
        ref = trajectory_connectivity(torch.as_tensor(pts[i]), fn, kind, grid)
        np.testing.assert_array_equal(ours[i], ref.connected)
        jumped += int((ref.connected == 0).sum())
    if kind == "sub":
        assert jumped > 0  # the comparison covered real jumps, not only trivial steps


def test_forest_rejects_bad_input():
    fn = Himmelblau()
    grid = grid_values(fn, fn.bounds, 11)
    with pytest.raises(ValueError, match="kind"):
        MergeForest(grid, "sideways")
