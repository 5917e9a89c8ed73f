"""Level-set components against an independent labelling, and trajectory connectivity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from superlevel.landscape import components
from superlevel.landscape.barriers import segment_barrier
from superlevel.landscape.components import (
    Grid,
    component_of,
    grid_values,
    level_set_components,
    trajectory_connectivity,
)
from superlevel.landscape.synthetic import Himmelblau

ndimage = pytest.importorskip(
    "scipy.ndimage", reason="the independent labelling needs scipy (in the dev extra)"
)


def _reference(values, level, kind, connectivity):
    with np.errstate(invalid="ignore"):
        mask = values <= level if kind == "sub" else values >= level
    structure = ndimage.generate_binary_structure(values.ndim, connectivity)
    return ndimage.label(mask, structure)


def _smooth_field(shape, seed):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.standard_normal(shape), 1.0)


@pytest.fixture(params=["scipy", "union-find"])
def labelling(request, monkeypatch):
    """Run a test with each labelling: scipy's (the default) and the fallback without it."""
    if request.param == "union-find":
        monkeypatch.setattr(components, "_ndimage", lambda: None)
    return request.param


@pytest.mark.parametrize("shape", [(40, 50), (9, 10, 11), (6, 5, 6, 5), (200,)])
@pytest.mark.parametrize("kind", ["sub", "super"])
def test_labels_equal_scipy_for_every_connectivity(shape, kind, labelling):
    values = _smooth_field(shape, seed=len(shape))
    values.flat[:: max(values.size // 7, 1)] = np.nan  # NaN cells are in neither set
    for connectivity in range(1, len(shape) + 1):
        for level in (-0.1, 0.0, 0.15):
            labels, count = level_set_components(values, level, kind, connectivity)
            ref, ref_count = _reference(values, level, kind, connectivity)
            assert count == ref_count
            # Same raster-order numbering, so the arrays are identical.
            np.testing.assert_array_equal(labels, ref)


def test_corner_connectivity_matters(labelling):
    # Two cells touching only at a corner: 2 components by faces, 1 with corners.
    values = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert level_set_components(values, 0.5, "sub", 1)[1] == 2
    assert level_set_components(values, 0.5, "sub", "full")[1] == 1
    assert level_set_components(values, 0.5, "super", 1)[1] == 2
    assert level_set_components(values, 0.5, "super", 2)[1] == 1


def test_nan_cells_belong_to_no_set_and_edge_cases(labelling):
    values = np.array([[0.0, np.nan, 0.0]])
    assert level_set_components(values, 1.0, "sub")[1] == 2
    assert level_set_components(values, -1.0, "super")[1] == 2
    assert level_set_components(np.ones((3, 3)), 0.0, "sub")[1] == 0
    assert level_set_components(np.ones((3, 3)), 1.0, "sub")[1] == 1


@pytest.fixture(scope="module")
def himmelblau_grid():
    h = Himmelblau()
    return h, grid_values(h, h.bounds, 201)


def test_grid_values_layout(himmelblau_grid):
    h, grid = himmelblau_grid
    i, j = 37, 150
    point = torch.tensor([grid.axes[0][i], grid.axes[1][j]], dtype=torch.float64)
    assert grid.values[i, j] == pytest.approx(float(h(point)), rel=1e-12)
    assert grid.bounds == [(-5.0, 5.0), (-5.0, 5.0)]


def test_himmelblau_sub_level_component_counts(himmelblau_grid, labelling):
    h, grid = himmelblau_grid
    s = h.saddle_values  # 13.31, 67.72, 104.02, 178.34
    # 4 minima below the lowest saddle; each saddle level merges two components.
    for level, expected in [
        (1.0, 4),
        (s[0] - 0.3, 4),
        (s[0] + 0.3, 3),
        (s[1] + 1, 2),
        (s[2] + 1, 1),
    ]:
        _, count = level_set_components(grid, level, "sub")
        _, ref_count = _reference(grid.values, level, "sub", 1)
        assert count == ref_count == expected, (level, count, ref_count)


def test_himmelblau_super_level_island_around_the_maximum(himmelblau_grid):
    # {f >= c} for c between the highest saddle (178.34) and the local maximum (181.62)
    # has an island around the maximum; below the saddle the island joins the high
    # region to the south (through that saddle at (-0.13, -1.95)).
    h, grid = himmelblau_grid
    top = torch.tensor([h.MAXIMUM[:2]], dtype=torch.float64)
    south = torch.tensor([[0.0, -5.0]], dtype=torch.float64)  # f = 580
    saddle = h.saddle_values[3]
    for level, joined in [(saddle - 1.0, True), (saddle + 1.0, False)]:
        labels, count = level_set_components(grid, level, "super")
        assert count == _reference(grid.values, level, "super", 1)[1]
        a, b = component_of(labels, grid, top)[0], component_of(labels, grid, south)[0]
        assert a > 0 and b > 0
        assert bool(a == b) == joined
    # Above the maximum the island is gone.
    labels, _ = level_set_components(grid, h.MAXIMUM[2] + 1.0, "super")
    assert component_of(labels, grid, top)[0] == 0


def test_component_of_minima_and_outside(himmelblau_grid):
    h, grid = himmelblau_grid
    labels, count = level_set_components(grid, 12.0, "sub")
    lab = component_of(labels, grid, h.minima)
    assert sorted(lab.tolist()) == [1, 2, 3, 4] == list(range(1, count + 1))
    far = component_of(labels, grid, torch.tensor([[9.0, 0.0], [0.0, 0.0]]))
    assert far.tolist() == [-1, 0]  # outside the box; inside the box but above the level


def test_trajectory_jump_and_switch(himmelblau_grid, labelling):
    h, grid = himmelblau_grid
    m = h.minima
    near = m[0] + torch.tensor([0.05, -0.05], dtype=torch.float64)
    # within well 0, then straight over the hill to well 2, then a tiny step there.
    pts = torch.stack([m[0], near, m[2], m[2] + 0.01])
    rep = trajectory_connectivity(pts, h, "sub", grid, ref_level=12.0)
    assert rep.connected.tolist() == [1, 0, 1]
    assert rep.n_jumps == 1 and rep.n_switches == 1 and rep.n_unknown == 0
    expected = segment_barrier(h, near, m[2], 33, "sub", batched=True).barrier
    assert rep.barriers[1] == pytest.approx(expected)
    assert rep.barriers[1] > 100  # the segment passes near the local maximum
    assert rep.summary()["final_loss"] == pytest.approx(float(h(m[2] + 0.01)))


def test_trajectory_over_the_saddle_level_is_connected(himmelblau_grid):
    # A step from well 0 to well 3 whose higher end is above the lowest saddle (13.31):
    # the two wells are joined in {f <= max(f(a), f(b))}, so it is not a jump, yet the
    # iterate does switch component at the reference level 12.
    h, grid = himmelblau_grid
    a = h.minima[0]
    b = torch.tensor([3.9, -0.5], dtype=torch.float64)  # near well 3, f(b) = 21.9
    assert float(h(b)) > h.saddle_values[0]
    pts = torch.stack([a, b, h.minima[3]])
    rep = trajectory_connectivity(pts, h, "sub", grid, ref_level=12.0)
    assert rep.connected[0] == 1
    assert rep.n_switches == 1


def test_super_kind_mirrors_sub_on_the_negated_function(himmelblau_grid, labelling):
    h, grid = himmelblau_grid
    neg_grid = Grid(grid.axes, -grid.values)
    gen = torch.Generator().manual_seed(0)
    pts = torch.rand(12, 2, generator=gen, dtype=torch.float64) * 8 - 4
    sub = trajectory_connectivity(pts, h, "sub", grid, ref_level=12.0)
    sup = trajectory_connectivity(pts, lambda x: -h(x), "super", neg_grid, ref_level=-12.0)
    np.testing.assert_array_equal(sub.connected, sup.connected)
    np.testing.assert_allclose(sub.barriers, sup.barriers, rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(sub.components, sup.components)
    assert sub.n_jumps > 0  # random points across the box do jump


def test_without_grid_connectivity_is_unknown():
    h = Himmelblau()
    rep = trajectory_connectivity(h.minima[:2], h)
    assert rep.connected.tolist() == [-1] and rep.n_unknown == 1
    assert rep.barriers[0] > 0


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: level_set_components(np.zeros((3, 3)), 0.0, "above"), "kind"),
        (lambda: level_set_components(np.zeros((3, 3)), 0.0, "sub", 3), "connectivity"),
        (lambda: level_set_components(np.zeros((3, 3)), 0.0, "sub", 0), "connectivity"),
        (lambda: level_set_components(np.zeros((3, 3)), float("nan")), "NaN"),
        (lambda: grid_values(Himmelblau(), [(1.0, 0.0), (0.0, 1.0)], 5), "low < high"),
        (lambda: grid_values(Himmelblau(), [(0.0, 1.0), (0.0, 1.0)], 1), "resolution"),
        (lambda: trajectory_connectivity(torch.zeros(3), Himmelblau()), "shape"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
