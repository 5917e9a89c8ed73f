"""The labelling behind level_set_components: scipy when importable, the union-find as the
fallback (identical labels), no memory kept after return, and a memory budget."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
import torch

from superlevel.landscape import components
from superlevel.landscape.components import (
    grid_values,
    level_set_components,
    trajectory_connectivity,
)
from superlevel.landscape.synthetic import Himmelblau

# The private pieces are used through the module, so each test fails on its own.
ndimage = pytest.importorskip("scipy.ndimage", reason="comparing with scipy needs scipy")


@pytest.fixture
def no_scipy(monkeypatch):
    """Labelling as without scipy installed."""
    monkeypatch.setattr(components, "_ndimage", lambda: None)


def _fields():
    rng = np.random.default_rng(3)
    yield "noise 2-D", rng.random((37, 41))
    yield "smooth 3-D", ndimage.gaussian_filter(rng.standard_normal((11, 9, 10)), 1.0)
    yield "noise 4-D", rng.random((5, 6, 4, 5))
    yield "noise 1-D", rng.random(300)
    with_nan = rng.random((30, 30))
    with_nan[rng.random((30, 30)) < 0.1] = np.nan
    yield "NaN 2-D", with_nan


@pytest.mark.parametrize("kind", ["sub", "super"])
def test_scipy_and_union_find_give_identical_labels(kind):
    for name, values in _fields():
        for connectivity in range(1, values.ndim + 1):
            for level in np.nanquantile(values, [0.2, 0.5, 0.8]):
                mask = components._level_mask(values, level, kind)
                got = [
                    components._labeller(
                        values.shape, connectivity, components.DEFAULT_MEMORY_BUDGET, use_scipy=s
                    )(mask)
                    for s in (True, False)
                ]
                (sc, n_sc), (uf, n_uf) = got
                assert n_sc == n_uf > 0, (name, connectivity, level)
                assert sc.dtype == uf.dtype == np.int64
                np.testing.assert_array_equal(sc, uf, err_msg=f"{name} conn {connectivity}")


def test_scipy_labels_by_default_when_importable(monkeypatch):
    assert components._ndimage() is ndimage
    calls = []
    real = ndimage.label
    monkeypatch.setattr(ndimage, "label", lambda *a, **k: calls.append(1) or real(*a, **k))
    _, count = level_set_components(np.array([0.0, 1.0, 0.0]), 0.5)
    assert count == 2 and calls == [1]


def test_edge_count_matches_the_listing():
    for shape in [(7,), (4, 5), (3, 4, 5), (2, 3, 2, 3), (3, 1, 4)]:
        for connectivity in range(1, len(shape) + 1):
            u, v = components._grid_edges(shape, connectivity)
            assert components._edge_count(shape, connectivity) == u.size == v.size
            assert len(set(zip(u.tolist(), v.tolist(), strict=True))) == u.size  # each once
    # 3**10 cells, full connectivity: every pair of cells within one step on every axis.
    assert components._edge_count((3,) * 10, 10) == (7**10 - 3**10) // 2 == 141_208_100


def _retained_after(call) -> int:
    """Bytes still allocated (numpy included) after ``call()`` returned and its result went."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = call()
        del result
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("fallback", [False, True])
def test_no_memory_is_kept_after_return(fallback, monkeypatch):
    # Full connectivity on 301x299: 358,000 pairs, 5.7 MB of int64 pairs; a cache of them
    # (as there was) would keep all of it.
    if fallback:
        monkeypatch.setattr(components, "_ndimage", lambda: None)
    h = Himmelblau()
    # Warm up on other shapes (first imports are not leaks; a cache would miss them).
    trajectory_connectivity(h.minima[:2], h, "sub", grid_values(h, h.bounds, 5), ref_level=1.0)
    values = np.random.default_rng(0).random((301, 299))
    retained = _retained_after(lambda: level_set_components(values, 0.5, "sub", "full"))
    assert retained < 100_000, retained
    grid = grid_values(h, h.bounds, (61, 59))
    pts = torch.stack([h.minima[0], h.minima[2], h.minima[1]])
    retained = _retained_after(lambda: trajectory_connectivity(pts, h, "sub", grid, ref_level=12.0))
    assert retained < 100_000, retained


@pytest.mark.parametrize(
    ("shape", "connectivity"), [((60, 50), 2), ((30, 20, 20), 3), ((3,) * 6, 6), ((400,), 1)]
)
@pytest.mark.parametrize("scipy", [True, False])
def test_memory_estimate_bounds_the_measured_peak(shape, connectivity, scipy):
    # Every cell in the set: the union-find's worst case (all pairs cross trees at first).
    mask = np.ones(shape, dtype=bool)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        components._labeller(
            shape, connectivity, components.DEFAULT_MEMORY_BUDGET, use_scipy=scipy
        )(mask)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    need, _ = components._label_memory(shape, connectivity, scipy)
    assert peak <= need, (peak, need)


def test_union_find_refuses_a_grid_over_the_budget_at_once(no_scipy):
    # 3**10 cells with full connectivity took 34 s and 4.5 GB; 20**5 ran out of 8 GB.
    t0 = time.perf_counter()
    with pytest.raises(ValueError) as err:
        level_set_components(np.zeros((3,) * 10), 1.0, "sub", "full")
    msg = str(err.value)
    assert "shape (3, 3, 3, 3, 3, 3, 3, 3, 3, 3) (59,049 cells, connectivity 10)" in msg
    assert "141,208,100 neighbour pairs" in msg
    assert f"over memory_budget={components.DEFAULT_MEMORY_BUDGET:,} bytes" in msg
    with pytest.raises(ValueError, match=r"\(3,200,000 cells, connectivity 5\).*326,578,384"):
        level_set_components(np.zeros((20,) * 5), 1.0, "super", 5)
    assert time.perf_counter() - t0 < 2.0  # refused before any pair is listed
    # The budget is the caller's to raise (or lower).
    values = np.random.default_rng(0).random((40, 40))
    with pytest.raises(ValueError, match="over memory_budget=100,000 bytes"):
        level_set_components(values, 0.5, memory_budget=100_000)
    assert level_set_components(values, 0.5, memory_budget=2_000_000)[1] > 1


def test_scipy_labelling_has_a_budget_too():
    values = np.zeros((100, 100))
    with pytest.raises(ValueError, match=r"\(10,000 cells.*scipy\.ndimage\.label needs about"):
        level_set_components(values, 1.0, memory_budget=100_000)
    h = Himmelblau()
    grid = grid_values(h, h.bounds, 41)
    with pytest.raises(ValueError, match="memory_budget=1,000 bytes"):
        trajectory_connectivity(h.minima[:2], h, "sub", grid, memory_budget=1_000)


@pytest.mark.parametrize("budget", [0, -1, 1.5, True, "1GB"])
def test_bad_memory_budget(budget):
    with pytest.raises(ValueError, match="memory_budget must be a positive number of bytes"):
        level_set_components(np.zeros(3), 1.0, memory_budget=budget)
