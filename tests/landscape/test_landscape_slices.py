"""Slices: filter normalisation, seeded directions, PCA directions, slice values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from superlevel.landscape.barriers import flat_params, model_loss_fn
from superlevel.landscape.components import grid_values
from superlevel.landscape.slices import (
    filter_normalize,
    filter_normalized_direction,
    model_slice_2d,
    pca_directions,
    slice_1d,
    slice_2d,
)
from superlevel.landscape.synthetic import Himmelblau


def _convnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 5, 3), nn.BatchNorm2d(5), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 4 * 4, 3)
    )


def test_filter_normalisation_scales_each_filter_to_its_weight_norm():
    m = _convnet()
    weights = [p.detach() for p in m.parameters()]
    gen = torch.Generator().manual_seed(0)
    draws = [torch.randn(w.shape, generator=gen) * 7.0 for w in weights]
    out = filter_normalize(draws, weights, one_d="zero")
    for d, w, raw in zip(out, weights, draws, strict=True):
        if w.ndim >= 2:
            # conv: 5 output channels of 2x3x3; linear: 3 rows of 80.
            dn = d.reshape(d.shape[0], -1).norm(dim=1)
            wn = w.reshape(w.shape[0], -1).norm(dim=1)
            torch.testing.assert_close(dn, wn)
            # Same direction as the draw within each filter (a positive rescale).
            cos = nn.functional.cosine_similarity(
                d.reshape(d.shape[0], -1), raw.reshape(raw.shape[0], -1), dim=1
            )
            torch.testing.assert_close(cos, torch.ones_like(cos))
        else:
            assert torch.count_nonzero(d) == 0  # biases and BN scales are left alone
    whole = filter_normalize(draws, weights, one_d="filter")
    for d, w in zip(whole, weights, strict=True):
        if w.ndim == 1:
            torch.testing.assert_close(d.norm(), w.norm())
    assert not torch.equal(out[0], draws[0])  # inputs not modified in place


def test_filter_normalisation_keeps_zero_draws_zero_and_rejects_bad_input():
    w = [torch.ones(2, 3)]
    d = filter_normalize([torch.zeros(2, 3)], w)
    assert torch.count_nonzero(d[0]) == 0
    with pytest.raises(ValueError, match="one_d"):
        filter_normalize(w, w, one_d="copy")
    with pytest.raises(ValueError, match="shape"):
        filter_normalize([torch.ones(3, 2)], w)


def test_directions_are_reproducible_from_a_seed():
    m = _convnet()
    torch.manual_seed(123)
    a = filter_normalized_direction(m, seed=5)
    torch.manual_seed(999)  # the global RNG does not matter
    b = filter_normalized_direction(m, seed=5)
    c = filter_normalized_direction(m, seed=6)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert a.shape == flat_params(m).shape


def test_slices_are_reproducible_and_match_direct_evaluation():
    m = _convnet()
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 2, 6, 6, generator=gen), torch.randint(0, 3, (6,), generator=gen)
    f = model_loss_fn(m, (x, y), nn.functional.cross_entropy)
    theta = flat_params(m)
    dx = filter_normalized_direction(m, seed=1)
    dy = filter_normalized_direction(m, seed=2)
    s1 = slice_1d(f, theta, dx, steps=5, span=(-0.5, 0.5))
    s1b = slice_1d(f, theta, filter_normalized_direction(m, seed=1), steps=5, span=(-0.5, 0.5))
    assert torch.equal(s1.losses, s1b.losses)
    assert s1.alphas.tolist() == [-0.5, -0.25, 0.0, 0.25, 0.5]
    assert float(s1.losses[1]) == pytest.approx(float(f(theta - 0.25 * dx)), rel=1e-6)
    g = slice_2d(f, theta, dx, dy, steps=(3, 4), span_x=(-1, 1), span_y=(0, 0.3))
    assert g.values.shape == (3, 4)
    assert g.values[2, 3] == pytest.approx(float(f(theta + dx + 0.3 * dy)), rel=1e-6)
    assert g.values[1, 0] == pytest.approx(float(f(theta)), rel=1e-6)


def test_slice_2d_of_a_landscape_equals_its_grid():
    h = Himmelblau()
    e1, e2 = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 1.0])
    g = slice_2d(
        h,
        torch.zeros(2, dtype=torch.float64),
        e1,
        e2,
        steps=21,
        span_x=(-5, 5),
        span_y=(-5, 5),
        batch_size=100,
    )
    ref = grid_values(h, h.bounds, 21)
    np.testing.assert_allclose(g.values, ref.values, rtol=1e-12)
    s = slice_1d(h, h.minima[0], h.minima[1] - h.minima[0], steps=9, span=(0, 1), batch_size=4)
    assert float(s.losses[0]) < 1e-20 and float(s.losses[-1]) < 1e-20


def test_pca_directions_recover_the_plane_of_a_trajectory():
    gen = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(50, 2, generator=gen, dtype=torch.float64))
    t = torch.linspace(0, 1, 30, dtype=torch.float64)
    coeffs = torch.stack([3 * t, torch.sin(4 * t)], 1)  # a curved path in a 2-D plane
    traj = torch.randn(50, generator=gen, dtype=torch.float64) + coeffs @ basis.T
    dirs, ratios, coords = pca_directions(traj, k=2)
    torch.testing.assert_close(dirs @ dirs.T, torch.eye(2, dtype=torch.float64))
    # The directions span the plane: projecting them on it changes nothing.
    torch.testing.assert_close(dirs @ basis @ basis.T, dirs)
    assert float(ratios.sum()) == pytest.approx(1.0, abs=1e-10)
    assert ratios[0] >= ratios[1]
    torch.testing.assert_close(coords @ dirs, traj - traj[-1])
    again = pca_directions(list(traj), k=2)[0]
    torch.testing.assert_close(again, dirs)  # deterministic sign convention
    with pytest.raises(ValueError, match="k must"):
        pca_directions(traj, k=40)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: slice_1d(Himmelblau(), torch.zeros(2), torch.ones(3)), "differ"),
        (lambda: slice_1d(Himmelblau(), torch.zeros(2), torch.ones(2), steps=1), "steps"),
        (lambda: slice_1d(Himmelblau(), torch.zeros(2), torch.ones(2), span=(1, 0)), "span"),
        (lambda: slice_2d(Himmelblau(), torch.zeros(2), torch.ones(2), torch.ones(1)), "differ"),
    ],
)
def test_bad_slice_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def _regression_run():
    torch.manual_seed(0)
    x = torch.randn(64, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    traj = [flat_params(model)]
    for _ in range(30):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        traj.append(flat_params(model))
    return model, (x, y), torch.stack(traj)


def test_model_slice_2d_along_a_trajectory():
    model, data, traj = _regression_run()
    grid, coords = model_slice_2d(model, data, nn.functional.mse_loss, trajectory=traj, steps=9)
    assert grid.values.shape == (9, 9) and coords.shape == (31, 2)
    torch.testing.assert_close(coords[-1], torch.zeros(2, dtype=torch.float64))
    for d, (lo, hi) in enumerate(grid.bounds):  # the whole path is inside the picture
        assert lo < float(coords[:, d].min()) and float(coords[:, d].max()) < hi
    # GD on a convex loss: the start is the worst point of the run, the end the best.
    start_val, end_val = grid.value_at(coords[[0, -1]].numpy())
    assert start_val > end_val


def test_model_slice_2d_random_directions_centre_is_the_model():
    model, data, _ = _regression_run()
    grid, coords = model_slice_2d(model, data, nn.functional.mse_loss, seed=3, steps=5)
    assert coords is None
    f = model_loss_fn(model, data, nn.functional.mse_loss)
    assert grid.values[2, 2] == pytest.approx(float(f(flat_params(model))), rel=1e-6)
    again, _ = model_slice_2d(model, data, nn.functional.mse_loss, seed=3, steps=5)
    np.testing.assert_array_equal(grid.values, again.values)
    with pytest.raises(ValueError, match="span"):
        model_slice_2d(model, data, nn.functional.mse_loss, span=0.0)
