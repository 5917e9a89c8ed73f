"""Sharpness = lambda_max of known Hessians; thresholds match real divergence of torch SGD."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from superlevel.stability import (
    adam_preconditioner,
    hessian_vector_product,
    momentum_factor,
    sharpness,
    stability_rule,
    top_eigenvalue,
)


def rotated_quadratic(eigs: torch.Tensor, seed: int = 1):
    """loss(x) = 0.5 x^T A x with A = Q diag(eigs) Q^T, Q a random rotation."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigs), len(eigs), generator=gen, dtype=torch.float64))
    a = q @ torch.diag(eigs.to(torch.float64)) @ q.T
    x = torch.randn(len(eigs), generator=gen, dtype=torch.float64, requires_grad=True)
    return (lambda: 0.5 * x @ a @ x), x, a


@pytest.mark.parametrize("method", ["power", "lanczos"])
def test_sharpness_is_lambda_max_of_a_quadratic(method):
    eigs = torch.tensor([1.0, 5.0, 20.0, 100.0, 0.5, 3.0])
    loss, x, _ = rotated_quadratic(eigs)
    value = sharpness(loss, [x], iters=100, tol=1e-10, method=method)
    assert value == pytest.approx(100.0, rel=1e-8)


def test_lanczos_beats_power_on_a_clustered_spectrum():
    eigs = torch.linspace(1.0, 100.0, 60)  # gap 99/100: power iteration crawls
    loss, x, _ = rotated_quadratic(eigs, seed=3)
    lan = top_eigenvalue(loss, [x], iters=30, tol=0.0, method="lanczos")
    pw = top_eigenvalue(loss, [x], iters=30, tol=0.0, method="power")
    assert lan.iters == 30 and pw.iters == 30
    assert abs(lan.value - 100.0) < 1e-3
    assert abs(pw.value - 100.0) > 10 * abs(lan.value - 100.0)


def test_negative_dominant_eigenvalue_keeps_its_sign():
    loss, x, _ = rotated_quadratic(torch.tensor([-50.0, 10.0, 2.0]))
    for method in ("power", "lanczos"):
        res = top_eigenvalue(loss, [x], iters=200, tol=1e-12, method=method)
        assert res.eigenvalue == pytest.approx(-50.0, rel=1e-8)
        assert res.value == pytest.approx(50.0, rel=1e-8)
        assert res.converged


def _tiny_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1)).double()
    x = torch.randn(20, 3, dtype=torch.float64)
    y = torch.randn(20, 1, dtype=torch.float64)
    return net, x, y


def _dense_hessian(net, x, y) -> torch.Tensor:
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def f(theta):
        pieces = torch.split(theta, [math.prod(s) for s in shapes])
        params = {n: t.view(s) for n, t, s in zip(names, pieces, shapes, strict=True)}
        out = torch.func.functional_call(net, params, (x,))
        return nn.functional.mse_loss(out, y)

    return torch.autograd.functional.hessian(f, flat)


def test_sharpness_equals_top_abs_eigenvalue_of_the_dense_hessian_of_a_tiny_net():
    net, x, y = _tiny_net()
    h = _dense_hessian(net, x, y)
    eig = torch.linalg.eigvalsh(h)
    top = float(eig[eig.abs().argmax()])
    n = h.shape[0]
    lan = top_eigenvalue(
        lambda: nn.functional.mse_loss(net(x), y), net, iters=n, tol=1e-12, method="lanczos"
    )
    assert lan.eigenvalue == pytest.approx(top, rel=1e-8)
    pw = sharpness(lambda: nn.functional.mse_loss(net(x), y), net, iters=2000, tol=1e-12)
    assert pw == pytest.approx(abs(top), rel=1e-5)


def test_hvp_matches_dense_hessian_times_vector():
    net, x, y = _tiny_net()
    h = _dense_hessian(net, x, y)
    hvp, n = hessian_vector_product(
        lambda: nn.functional.mse_loss(net(x), y), list(net.parameters())
    )
    v = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(hvp(v), h @ v, rtol=1e-10, atol=1e-12)


def test_seeded_start_vector_is_reproducible_and_seed_matters():
    loss, x, _ = rotated_quadratic(torch.linspace(1.0, 100.0, 40))
    a = top_eigenvalue(loss, [x], iters=5, tol=0.0, seed=7)
    b = top_eigenvalue(loss, [x], iters=5, tol=0.0, seed=7)
    c = top_eigenvalue(loss, [x], iters=5, tol=0.0, seed=8)
    assert a == b
    assert a.value != c.value


def test_model_is_evaluated_in_eval_mode_and_modes_are_restored():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Tanh(), nn.Linear(8, 1)
    )
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    net.train()
    net[2].eval()  # a mixed state must come back as it was
    modes = [m.training for m in net.modules()]
    stats = net[1].running_mean.clone()

    def loss():
        return nn.functional.mse_loss(net(x), y)

    got = sharpness(loss, net, iters=50, tol=1e-9, model=net, method="lanczos")
    assert [m.training for m in net.modules()] == modes
    assert torch.equal(net[1].running_mean, stats)  # eval mode: running stats untouched
    net.eval()
    expected = sharpness(loss, net, iters=50, tol=1e-9, method="lanczos")
    assert got == expected


def test_unused_and_frozen_params_are_ignored():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    unused = torch.ones(3, requires_grad=True)
    frozen = torch.ones(2)
    value = sharpness(
        lambda: 3.0 * (x * x).sum() + (frozen * x).sum(), [x, unused, frozen], iters=10, tol=1e-9
    )
    assert value == pytest.approx(6.0)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"iters": 0}, "iters"),
        ({"tol": -1.0}, "tol"),
        ({"tol": math.inf}, "tol"),
        ({"method": "arnoldi"}, "method"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, name):
    x = torch.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match=name):
        sharpness(lambda: (x * x).sum(), [x], **kwargs)


def test_no_trainable_params_and_non_scalar_loss_raise():
    with pytest.raises(ValueError, match="requires_grad"):
        sharpness(lambda: torch.zeros(()), [torch.ones(2)])
    x = torch.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match="scalar"):
        sharpness(lambda: x * x, [x])


# -- thresholds: the formulas must match what torch.optim.SGD actually does ----------------


def _sgd_final(lam: float, lr: float, steps: int = 400, **kw) -> float:
    x = torch.ones(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([x], lr=lr, **kw)
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * lam * x * x).sum().backward()
        opt.step()
    return abs(float(x.detach()))


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"momentum": 0.9},
        {"momentum": 0.5, "dampening": 0.3},
        {"momentum": 0.9, "nesterov": True},
        {"momentum": 0.5, "weight_decay": 2.0},
    ],
    ids=["gd", "heavy-ball", "dampening", "nesterov", "weight-decay"],
)
def test_threshold_separates_convergence_from_divergence_in_torch_sgd(kw):
    lr = 0.1
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr, **kw)
    rule = stability_rule(opt)
    assert rule is not None
    lam_star = rule.threshold(lr)
    assert rule.max_lr(lam_star) == pytest.approx(lr)
    assert _sgd_final(0.97 * lam_star, lr, **kw) < 1.0  # just inside: does not grow
    assert _sgd_final(1.03 * lam_star, lr, **kw) > 10.0  # just outside: diverges


@pytest.mark.parametrize("method", ["power", "lanczos"])
def test_preconditioned_sharpness_is_lambda_max_of_p_inverse_h(method):
    loss, x, a = rotated_quadratic(torch.tensor([1.0, 5.0, 20.0, 100.0, 0.5]))
    p = torch.tensor([0.5, 2.0, 10.0, 1.0, 4.0], dtype=torch.float64)
    expected = torch.linalg.eigvals(torch.diag(1.0 / p) @ a).real.abs().max()
    res = top_eigenvalue(loss, [x], iters=200, tol=1e-12, method=method, precondition=[p])
    assert res.value == pytest.approx(float(expected), rel=1e-8)
    assert res.value != pytest.approx(100.0, rel=1e-3)  # differs from the raw sharpness


def test_bad_preconditioners_raise_value_error():
    loss, x, _ = rotated_quadratic(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="one tensor per"):
        sharpness(loss, [x], precondition=[])
    with pytest.raises(ValueError, match="shape"):
        sharpness(loss, [x], precondition=[torch.ones(3)])
    with pytest.raises(ValueError, match="positive"):
        sharpness(loss, [x], precondition=[torch.tensor([1.0, 0.0])])


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_preconditioner_matches_adams_denominator(amsgrad):
    torch.manual_seed(0)
    w = torch.randn(4, 3, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.01, betas=(0.8, 0.99), eps=1e-6, amsgrad=amsgrad)
    assert adam_preconditioner(opt, [w]) is None  # no state before the first step
    sq = torch.zeros(4, 3)
    max_sq = torch.zeros(4, 3)
    for _ in range(3):
        opt.zero_grad()
        (w**3).sum().backward()
        sq = 0.99 * sq + 0.01 * w.grad**2
        max_sq = torch.maximum(max_sq, sq)
        opt.step()
    v = max_sq if amsgrad else sq
    expected = (v / (1 - 0.99**3)).sqrt() + 1e-6
    (got,) = adam_preconditioner(opt, [w])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    assert adam_preconditioner(torch.optim.SGD([w], lr=0.1), [w]) is None


def test_rule_values_and_unknown_optimizers_have_none():
    p = [torch.zeros(1, requires_grad=True)]
    assert stability_rule(torch.optim.SGD(p, lr=0.1)).threshold(0.1) == pytest.approx(20.0)
    assert stability_rule(torch.optim.SGD(p, lr=0.1, momentum=0.9)).kind == "heavy_ball"
    assert momentum_factor(0.9) == pytest.approx(3.8)
    assert momentum_factor(0.9, nesterov=True) == pytest.approx(3.8 / 2.8)
    adam = stability_rule(torch.optim.Adam(p, lr=0.1, betas=(0.9, 0.999)))
    assert adam.kind == "adam" and adam.preconditioned
    assert adam.threshold(0.1) == pytest.approx(380.0)  # (2 + 2*0.9) / ((1 - 0.9) * 0.1)
    assert stability_rule(torch.optim.RMSprop(p, lr=0.1)) is None
    with pytest.raises(ValueError, match="momentum"):
        momentum_factor(1.0)
    with pytest.raises(ValueError, match="dampening"):
        momentum_factor(0.5, dampening=-0.1)


# -- defects of the first version: each test failed before the fix ------------------------


@pytest.mark.parametrize("method", ["power", "lanczos"])
def test_a_nan_loss_raises_instead_of_a_zero_sharpness(method):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    x, y = torch.randn(0, 3), torch.randn(0, 2)  # an empty batch: mse is nan
    with pytest.raises(ValueError, match="non-finite loss"):
        top_eigenvalue(lambda: nn.functional.mse_loss(model(x), y), model, method=method)


@pytest.mark.parametrize("method", ["power", "lanczos"])
def test_a_non_finite_hessian_gives_a_clear_error(method):
    x = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    # the loss is finite (0) but sqrt(|x|) has no derivative at 0: the products are nan
    with pytest.raises(ValueError, match="Hessian-vector product is not finite"):
        top_eigenvalue(lambda: x.abs().sqrt().sum(), [x], method=method)


# -- SuperLevelSGD's decoupled weight decay: (2 - a*wd) / (a*eta) -------------------------


def _superlevel_final(lam: float, lr: float, companion: float, steps: int = 400, **kw) -> float:
    """|x| after ``steps`` of SuperLevelSGD on 0.5*lam*x^2 with eta frozen.

    ``norm_scale`` is large against the quadratic's gradient, so ``eta`` does not move:
    ``eta = 1`` without a companion; with one, a second parameter ``z`` with the linear
    loss ``companion * z`` holds the global norm at ``companion`` (``eta = 0.5`` when
    ``norm_scale = companion``).
    """
    from superlevel.optim import SuperLevelSGD

    x = torch.ones(1, dtype=torch.float64, requires_grad=True)
    z = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    scale = companion if companion else 1e12
    opt = SuperLevelSGD([x, z], lr=lr, norm_scale=scale, **kw)
    for _ in range(steps):
        opt.zero_grad()
        ((0.5 * lam * x * x).sum() + companion * z.sum()).backward()
        opt.step()
    return abs(float(x.detach()))


@pytest.mark.parametrize(
    ("kw", "companion", "eta"),
    [
        ({"weight_decay": 5.0}, 0.0, 1.0),
        ({"weight_decay": 5.0}, 1e6, 0.5),
        ({"weight_decay": 5.0, "momentum": 0.5}, 0.0, 1.0),
        ({"weight_decay": 5.0, "momentum": 0.5, "dampening": 0.3}, 0.0, 1.0),
        ({"weight_decay": 5.0, "momentum": 0.9, "nesterov": True}, 0.0, 1.0),
    ],
    ids=["gd", "gd-eta-half", "heavy-ball", "dampening", "nesterov"],
)
def test_decoupled_weight_decay_threshold_matches_superlevel_divergence(kw, companion, eta):
    from superlevel.optim import SuperLevelSGD

    a = 0.1  # a*wd = 0.5: the decay shrinks the stable region by 1 - a*wd/2 = 0.75
    rule = stability_rule(SuperLevelSGD([torch.zeros(1, requires_grad=True)], lr=a, **kw))
    assert rule.kind == "superlevel" and rule.weight_decay == 0.0
    assert rule.decoupled_weight_decay == kw["weight_decay"]
    eff = a * eta  # the effective lr a * eta
    lam_star = rule.threshold(eff, lr=a)
    assert lam_star == pytest.approx(rule.factor * (1 - a * kw["weight_decay"] / 2) / eff)
    assert rule.max_lr(lam_star, lr=a) == pytest.approx(eff)
    assert _superlevel_final(0.97 * lam_star, a, companion, **kw) < 1.0  # inside: converges
    assert _superlevel_final(1.03 * lam_star, a, companion, **kw) > 10.0  # outside: diverges
    coupled = rule.factor / eff - kw["weight_decay"]  # the rule for coupled (L2) decay
    if (companion, kw.get("momentum", 0.0)) != (0.0, 0.0):  # where the two rules differ
        assert abs(coupled / lam_star - 1.0) > 0.03  # ... the coupled one misplaces the boundary


def test_decoupled_rule_needs_the_decayed_rate():
    from superlevel.optim import SuperLevelSGD

    rule = stability_rule(
        SuperLevelSGD([torch.zeros(1, requires_grad=True)], lr=0.1, weight_decay=1.0)
    )
    with pytest.raises(ValueError, match="lr=a_t"):
        rule.threshold(0.1)
    assert rule.threshold(0.1, lr=4.0) < 0 and rule.max_lr(1.0, lr=4.0) == 0.0  # a*wd >= 2
    plain = stability_rule(SuperLevelSGD([torch.zeros(1, requires_grad=True)], lr=0.1))
    assert plain.threshold(0.1) == pytest.approx(20.0)  # no decay: no rate needed
