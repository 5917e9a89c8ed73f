"""Synthetic landscapes: values, critical points verified by Newton, shapes, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from superlevel.landscape.components import grid_values, level_set_components
from superlevel.landscape.synthetic import (
    Himmelblau,
    MultiWell,
    Quadratic,
    Rastrigin,
    Rosenbrock,
    make_landscape,
    newton_critical_point,
)


def _hessian_eigs(fn, x):
    return torch.linalg.eigvalsh(torch.func.jacrev(torch.func.grad(fn))(x.to(torch.float64)))


ALL = [
    Quadratic([1.0, 10.0, 0.5]),
    Rosenbrock(),
    Himmelblau(),
    Rastrigin(3),
    MultiWell.default(3, seed=1),
]


@pytest.mark.parametrize("fn", ALL, ids=lambda f: type(f).__name__)
def test_minima_are_minima_with_contract_attributes(fn):
    assert isinstance(fn.dim, int) and fn.minima.shape[1] == fn.dim
    assert len(fn.bounds) == fn.dim and all(lo < hi for lo, hi in fn.bounds)
    for m in fn.minima:
        g = torch.func.grad(fn)(m)
        assert g.norm() < 1e-8
        assert (_hessian_eigs(fn, m) > 0).all()
        # Inside the default box.
        assert all(lo <= float(v) <= hi for v, (lo, hi) in zip(m, fn.bounds, strict=True))


@pytest.mark.parametrize("fn", ALL, ids=lambda f: type(f).__name__)
def test_batched_shapes_and_gradients(fn):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 5, fn.dim, generator=gen, dtype=torch.float64, requires_grad=True)
    out = fn(x)
    assert out.shape == (4, 5)
    # Batched evaluation equals pointwise evaluation.
    assert torch.allclose(out[1, 2], fn(x[1, 2]), rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda z: fn(z), (x[0, :2].detach().requires_grad_(),))


@pytest.mark.parametrize("fn", ALL, ids=lambda f: type(f).__name__)
def test_wrong_dimension_is_rejected(fn):
    with pytest.raises(ValueError, match=rf"\(\.\.\., {fn.dim}\)"):
        fn(torch.zeros(3, fn.dim + 1))


def test_closed_forms():
    q = Quadratic([2.0, 4.0])
    assert float(q(torch.tensor([1.0, 1.0]))) == pytest.approx(0.5 * (2 + 4))
    r = Rosenbrock(a=2.0, b=50.0)
    assert r.minima.tolist() == [[2.0, 4.0]]
    assert float(r(torch.tensor([0.0, 0.0]))) == pytest.approx(4.0)
    ra = Rastrigin(2, A=10.0)
    assert float(ra(torch.tensor([0.5, 0.0]))) == pytest.approx(20 + (0.25 + 10) + (0 - 10))
    h = Himmelblau()
    assert float(h(torch.tensor([0.0, 0.0]))) == pytest.approx(121 + 49)


def test_quadratic_with_negative_eigenvalue_has_a_saddle_and_no_minimum():
    q = Quadratic([1.0, -2.0])
    assert q.minima.shape == (0, 2)
    assert q.saddle_values == [0.0]


def test_himmelblau_critical_points_verified_by_newton():
    h = Himmelblau()
    for m in h.MINIMA:
        x = newton_critical_point(h, [round(v, 1) for v in m])
        assert torch.allclose(x, torch.tensor(m, dtype=torch.float64), atol=1e-10)
        assert float(h(x)) < 1e-20
    for sx, sy, value in h.SADDLES:
        # Newton from a rough (1-decimal) location converges to the stored saddle.
        x = newton_critical_point(h, [round(sx, 1), round(sy, 1)])
        assert torch.allclose(x, torch.tensor([sx, sy], dtype=torch.float64), atol=1e-9)
        assert float(h(x)) == pytest.approx(value, abs=1e-9)
        eig = _hessian_eigs(h, x)
        assert eig[0] < 0 < eig[1], "index-1 saddle"
    assert h.saddle_values[0] == pytest.approx(13.3119, abs=1e-4)
    assert h.saddle_values == sorted(h.saddle_values)
    # (-0.27, -0.92) is the local maximum, not a saddle: both curvatures negative.
    mx = newton_critical_point(h, [-0.3, -0.9])
    assert (_hessian_eigs(h, mx) < 0).all()
    assert float(h(mx)) == pytest.approx(h.MAXIMUM[2], abs=1e-9)


@pytest.mark.parametrize("n_wells", [1, 2, 3, 5])
def test_multiwell_default_has_one_component_per_well(n_wells):
    f = MultiWell.default(n_wells, seed=3)
    level = -0.05 * float(f.depths.min())
    grid = grid_values(f, f.bounds, 121)
    _, count = level_set_components(grid, level, "sub")
    assert count == n_wells
    # Every minimum lies below the level, so each is in one of those components.
    assert (f(f.minima) < level).all()


def test_multiwell_is_seeded():
    a, b = MultiWell.default(4, seed=7), MultiWell.default(4, seed=7)
    c = MultiWell.default(4, seed=8)
    assert torch.equal(a.centers, b.centers) and torch.equal(a.depths, b.depths)
    assert not torch.equal(a.centers, c.centers)


def test_multiwell_value_formula():
    f = MultiWell([[0.0, 0.0], [3.0, 0.0]], [1.0, 2.0], [0.5, 1.0])
    x = torch.tensor([1.0, 0.0], dtype=torch.float64)
    expected = -(math.exp(-1 / (2 * 0.25)) + 2 * math.exp(-4 / 2))
    assert float(f(x)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Quadratic([]), "non-empty"),
        (lambda: Quadratic([1.0, float("nan")]), "finite"),
        (lambda: Rosenbrock(b=-1.0), "b > 0"),
        (lambda: Rastrigin(0), "dim"),
        (lambda: Rastrigin(2, A=-1.0), "A must"),
        (lambda: MultiWell([[0.0, 0.0]], [1.0, 2.0], [1.0]), "depths and widths"),
        (lambda: MultiWell([[0.0, 0.0]], [-1.0], [1.0]), "positive"),
        (lambda: MultiWell([0.0, 0.0], [1.0], [1.0]), "shape"),
        (lambda: MultiWell.default(0), "n_wells"),
        (lambda: make_landscape("banana"), "valid: himmelblau"),
    ],
)
def test_bad_input(make, match):
    with pytest.raises(ValueError, match=match):
        make()
