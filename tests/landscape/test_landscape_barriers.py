"""Segment barriers (exact cases) and loss functions over flat parameter vectors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from superlevel.landscape.barriers import (
    flat_params,
    model_loss_fn,
    path_barrier,
    segment_barrier,
    unflatten_params,
)


def double_well(x: torch.Tensor) -> torch.Tensor:
    """``(x^2 - 1)^2``: minima at -1 and 1, a hill of height 1 at 0."""
    return ((x * x - 1.0) ** 2).sum(-1)


def test_double_well_barrier_is_exact():
    a, b = torch.tensor([-1.0]), torch.tensor([1.0])
    r = segment_barrier(double_well, a, b, points=33)
    assert r.kind == "sub"
    assert r.barrier == 1.0  # t = 0.5 is on the grid, f(0) = 1, ends 0
    assert r.t_peak == 0.5
    assert r.ts[0] == 0.0 and r.ts[-1] == 1.0 and r.losses.shape == (33,)
    # Unequal ends: the barrier is measured from the higher end, f(0.5) = 0.5625.
    r2 = segment_barrier(double_well, torch.tensor([-1.0]), torch.tensor([0.5]), points=31)
    assert r2.barrier == pytest.approx(1.0 - 0.5625, abs=1e-12)  # x = 0 at t = 20/30
    # Within one well there is no barrier.
    assert segment_barrier(double_well, torch.tensor([1.0]), torch.tensor([1.5])).barrier == 0


def test_batched_evaluation_equals_pointwise():
    a, b = torch.tensor([-1.2, 0.3]), torch.tensor([0.9, -1.1])
    r1 = segment_barrier(double_well, a, b, 17)
    r2 = segment_barrier(double_well, a, b, 17, batched=True)
    torch.testing.assert_close(r1.losses, r2.losses, rtol=1e-6, atol=1e-6)


def test_super_level_barrier_of_a_dip():
    # A dip of depth 1 between two plateaus: f = 1 - exp(-x^2), ends at +-2.
    def dip(x):
        return (1.0 - torch.exp(-x * x)).sum(-1)

    a, b = torch.tensor([-2.0], dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64)
    sup = segment_barrier(dip, a, b, 33, kind="super")
    assert sup.barrier == pytest.approx(1.0 - math.exp(-4.0), abs=1e-15)
    assert sup.t_peak == 0.5
    # The same segment has no sub-level barrier: it only goes down.
    assert segment_barrier(dip, a, b, 33, kind="sub").barrier == 0.0


def test_path_barrier_formulas_and_nan():
    losses = torch.tensor([2.0, 5.0, 1.0, 3.0])
    assert path_barrier(losses, "sub") == 5.0 - 3.0
    assert path_barrier(losses, "super") == 2.0 - 1.0
    assert math.isnan(path_barrier(torch.tensor([0.0, float("nan"), 1.0])))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: segment_barrier(double_well, torch.zeros(1), torch.ones(1), 1), "points"),
        (lambda: segment_barrier(double_well, torch.zeros(1), torch.ones(2)), "differ"),
        (lambda: segment_barrier(double_well, torch.zeros(1), torch.ones(1), kind="x"), "kind"),
        (lambda: path_barrier(torch.ones(1)), "at least 2"),
    ],
)
def test_bad_barrier_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def _net(bn: bool = False) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Linear(3, 6)]
    if bn:
        layers.append(nn.BatchNorm1d(6))
    layers += [nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 2)]
    return nn.Sequential(*layers)


def _data(n=40, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=gen), torch.randint(0, 2, (n,), generator=gen)


def test_flat_params_roundtrip_and_detached_copy():
    m = _net()
    theta = flat_params(m)
    assert theta.shape == (sum(p.numel() for p in m.parameters()),)
    assert not theta.requires_grad
    first = float(theta[0])
    theta[0] += 1.0  # a copy: the model is untouched
    assert float(next(m.parameters()).detach().reshape(-1)[0]) == first
    pieces = unflatten_params(m, flat_params(m))
    for name, p in m.named_parameters():
        torch.testing.assert_close(pieces[name], p.detach())
    with pytest.raises(ValueError, match="flat vector"):
        unflatten_params(m, torch.zeros(3))


def test_model_loss_fn_matches_a_model_loaded_with_theta():
    m = _net()
    x, y = _data()
    f = model_loss_fn(m, (x, y), nn.functional.cross_entropy)
    theta = flat_params(m) + 0.1 * torch.randn(
        flat_params(m).shape, generator=torch.Generator().manual_seed(2)
    )
    other = copy.deepcopy(m).eval()
    torch.nn.utils.vector_to_parameters(theta, other.parameters())
    expected = nn.functional.cross_entropy(other(x), y)
    torch.testing.assert_close(f(theta), expected)
    # The model keeps its own parameters and mode.
    assert m.training
    assert not torch.equal(flat_params(m), theta)


def test_model_loss_fn_weights_uneven_batches_by_size():
    m = _net()
    x, y = _data(37)
    whole = model_loss_fn(m, (x, y), nn.functional.cross_entropy)
    parts = model_loss_fn(m, [(x[:30], y[:30]), (x[30:], y[30:])], nn.functional.cross_entropy)
    generator = iter([(x[:5], y[:5]), (x[5:], y[5:])])  # one-shot, re-evaluable
    once = model_loss_fn(m, generator, nn.functional.cross_entropy)
    theta = flat_params(m)
    torch.testing.assert_close(parts(theta), whole(theta))
    torch.testing.assert_close(once(theta), whole(theta))
    torch.testing.assert_close(once(theta), whole(theta))


def test_model_loss_fn_is_differentiable_in_theta():
    m = _net()
    x, y = _data()
    theta = flat_params(m).requires_grad_(True)
    (g,) = torch.autograd.grad(model_loss_fn(m, (x, y), nn.functional.cross_entropy)(theta), theta)
    m.eval()
    m.zero_grad()
    nn.functional.cross_entropy(m(x), y).backward()
    expected = torch.cat([p.grad.reshape(-1) for p in m.parameters()])
    torch.testing.assert_close(g, expected)


def test_batchnorm_modes():
    m = _net(bn=True)
    x, y = _data(48)
    m.train()
    for _ in range(3):  # give the model running statistics of its own
        m(x * 2.0 + 1.0)
    before = copy.deepcopy(m.state_dict())
    theta = flat_params(m) * 1.3
    batches = [(x[:24], y[:24]), (x[24:], y[24:])]
    ce = nn.functional.cross_entropy

    loaded = copy.deepcopy(m)
    torch.nn.utils.vector_to_parameters(theta, loaded.parameters())
    bn_layer = loaded[1]

    # eval: the stored running statistics.
    loaded.eval()
    expect_eval = sum(ce(loaded(xb), yb) * len(xb) for xb, yb in batches) / 48
    torch.testing.assert_close(model_loss_fn(m, batches, ce, bn="eval")(theta), expect_eval)

    # train: each batch normalised by its own statistics (dropout still off).
    bn_layer.train()
    expect_train = sum(ce(loaded(xb), yb) * len(xb) for xb, yb in batches) / 48
    torch.testing.assert_close(model_loss_fn(m, batches, ce, bn="train")(theta), expect_train)

    # recompute: fresh running statistics (cumulative average) at theta, then eval.
    bn_layer.reset_running_stats()
    bn_layer.momentum = None
    with torch.no_grad():
        for xb, _ in batches:
            loaded(xb)
    loaded.eval()
    expect_re = sum(ce(loaded(xb), yb) * len(xb) for xb, yb in batches) / 48
    got_re = model_loss_fn(m, batches, ce, bn="recompute")(theta)
    torch.testing.assert_close(got_re, expect_re)
    assert not torch.allclose(got_re, expect_eval)  # the stale statistics do differ

    # None of this touched the model.
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert m.training and m[1].momentum == 0.1

    with pytest.raises(ValueError, match="bn must be one of"):
        model_loss_fn(m, batches, ce, bn="frozen")
