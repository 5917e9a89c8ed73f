"""Mode connectivity: curve geometry, and curves that beat the straight line."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from superlevel.landscape.barriers import flat_params
from superlevel.landscape.connectivity import connect, connect_fn, curve_point, train_curve
from superlevel.landscape.synthetic import Himmelblau


def test_curve_geometry():
    control = torch.tensor([[0.0, 0.0], [2.0, 4.0], [4.0, 0.0]], dtype=torch.float64)
    # Quadratic Bezier: (1-t)^2 w0 + 2t(1-t) w1 + t^2 w2.
    torch.testing.assert_close(curve_point(control, 0.5), torch.tensor([2.0, 2.0]).double())
    torch.testing.assert_close(curve_point(control, 0.0), control[0])
    torch.testing.assert_close(curve_point(control, 1.0), control[2])
    # Polygonal chain passes through the bend at t = 1/2, linear in between.
    torch.testing.assert_close(curve_point(control, 0.5, "polychain"), control[1])
    torch.testing.assert_close(
        curve_point(control, 0.75, "polychain"), torch.tensor([3.0, 2.0]).double()
    )
    torch.testing.assert_close(curve_point(control, 1.0, "polychain"), control[2])
    with pytest.raises(ValueError, match="curve must be one of"):
        curve_point(control, 0.5, "spline")


def test_untrained_curve_is_the_straight_line():
    h = Himmelblau()
    r = connect_fn(h, h.minima[0], h.minima[1], "bezier", 2, steps=0, points=21)
    torch.testing.assert_close(r.curve_barrier.losses, r.line_barrier.losses)
    assert r.control.shape == (4, 2)


@pytest.mark.parametrize(("curve", "bends"), [("polychain", 2), ("bezier", 3)])
def test_curve_between_himmelblau_minima_beats_the_line(curve, bends):
    # Minima (3, 2) and (-2.81, 3.13): every path between them rises at least to the
    # saddle between them (67.719); the straight line rises to 71.08.
    h = Himmelblau()
    saddle = h.saddle_values[1]
    r = connect_fn(h, h.minima[0], h.minima[1], curve, bends, steps=400, lr=0.1)
    assert r.line_barrier.barrier == pytest.approx(71.08, abs=0.01)
    assert r.curve_barrier.barrier < r.line_barrier.barrier - 1.0
    # Densely sampled, the curve cannot pass below the saddle (a minimax property).
    # With 4001 points the sampled max is within |f''| h^2 / 8 < 0.001 of the true max.
    dense = torch.stack([h(curve_point(r.control, t, curve)) for t in torch.linspace(0, 1, 4001)])
    assert float(dense.max()) >= saddle - 1e-3
    assert r.control[0].tolist() == h.minima[0].tolist()  # ends stay fixed
    assert r.control[-1].tolist() == h.minima[1].tolist()


def _symmetric_pair():
    """A trained tiny net and the same net with its hidden units permuted (same loss)."""
    torch.manual_seed(0)
    x = torch.randn(96, 2)
    y = torch.sin(2 * x[:, :1]) * torch.cos(x[:, 1:])
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), 0.03)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    perm = torch.tensor([3, 7, 0, 5, 1, 6, 2, 4])
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    sd_b = {
        "0.weight": sd["0.weight"][perm],
        "0.bias": sd["0.bias"][perm],
        "2.weight": sd["2.weight"][:, perm],
        "2.bias": sd["2.bias"],
    }
    return model, sd, sd_b, (x, y)


def test_connect_finds_a_lower_path_between_permuted_networks():
    model, sd_a, sd_b, data = _symmetric_pair()
    before = copy.deepcopy(model.state_dict())
    r = connect(model, sd_a, sd_b, nn.functional.mse_loss, data, "bezier", 1, steps=100, lr=0.02)
    line, curve = r.line_barrier, r.curve_barrier
    # Both ends compute the same function, so the same loss.
    assert float(line.losses[0]) == pytest.approx(float(line.losses[-1]), rel=1e-5)
    assert line.losses.shape == curve.losses.shape == (61,)
    assert line.barrier > 0.1  # averaging permuted hidden units hurts
    assert curve.barrier < 0.5 * line.barrier
    for k, v in model.state_dict().items():  # the model was not modified
        assert torch.equal(v, before[k])
    assert torch.equal(r.control[0], flat_params(model))


def test_train_curve_is_seeded():
    h = Himmelblau()

    def loss_at(theta, _batch):
        return h(theta)

    a = train_curve(loss_at, h.minima[0], h.minima[1], steps=20, lr=0.05, seed=3)
    b = train_curve(loss_at, h.minima[0], h.minima[1], steps=20, lr=0.05, seed=3)
    c = train_curve(loss_at, h.minima[0], h.minima[1], steps=20, lr=0.05, seed=4)
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"curve": "spline"}, "curve must be one of"),
        ({"bends": 4}, "bends must be"),
        ({"bends": 0}, "bends must be"),
        ({"kind": "middle"}, "kind"),
    ],
)
def test_bad_connect_input(kwargs, match):
    h = Himmelblau()
    with pytest.raises(ValueError, match=match):
        connect_fn(h, h.minima[0], h.minima[1], steps=1, **kwargs)
