"""LyapunovGuard: dV <= tol on every accepted step, bit-exact restore, per-call shrink."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from superlevel.optim import SuperLevelSGD
from superlevel.stability import LyapunovGuard

LAMBDAS = torch.tensor([1.0, 3.0, 10.0, 30.0, 100.0], dtype=torch.float64)


def quadratic(x: torch.Tensor) -> torch.Tensor:
    """0.5 * sum_i lambda_i x_i^2, lambda_max = 100: GD is stable only for lr < 0.02."""
    return 0.5 * (LAMBDAS * x * x).sum()


def make_closure(x: torch.Tensor, opt: torch.optim.Optimizer):
    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = quadratic(x)
        loss.backward()
        return loss

    return closure


def run(make_opt, steps: int, guarded: bool, **guard_kw) -> list[float]:
    x = torch.ones(5, dtype=torch.float64, requires_grad=True)
    opt = make_opt([x])
    closure = make_closure(x, opt)
    guard = LyapunovGuard(opt, **guard_kw) if guarded else None
    losses = [float(quadratic(x.detach()))]
    for _ in range(steps):
        if guard is not None:
            guard.step(closure)
        else:
            opt.step(closure)
        losses.append(float(quadratic(x.detach())))
    return losses


def _superlevel(params):
    return SuperLevelSGD(params, lr=3.0)


@pytest.mark.parametrize(
    "make_opt",
    [
        pytest.param(lambda p: torch.optim.SGD(p, lr=0.025), id="sgd"),
        pytest.param(lambda p: torch.optim.SGD(p, lr=0.025, momentum=0.5), id="momentum"),
        pytest.param(lambda p: torch.optim.Adam(p, lr=0.5), id="adam"),
        pytest.param(_superlevel, id="superlevel"),
    ],
)
def test_guarded_loss_never_rises_and_progresses_where_unguarded_fails(make_opt):
    steps = 150
    unguarded = run(make_opt, steps, guarded=False)
    guarded = run(make_opt, steps, guarded=True, max_retries=8)
    # the unguarded optimizer raises the loss on some step (SGD: diverges outright)
    assert max(b - a for a, b in zip(unguarded, unguarded[1:], strict=False)) > 0
    # guarded: monotone and real progress
    assert all(b <= a for a, b in zip(guarded, guarded[1:], strict=False))
    assert guarded[-1] < 1e-2 * guarded[0]


def test_unguarded_sgd_diverges_above_two_over_lambda_max():
    losses = run(lambda p: torch.optim.SGD(p, lr=0.025), 60, guarded=False)
    assert losses[-1] > 1e6 * losses[0]


def _state_copy(opt: torch.optim.Optimizer):
    return {
        id(p): {k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.items()}
        for p, s in opt.state.items()
    }


def _assert_same_state(opt, saved):
    assert set(saved) == {id(p) for p in opt.state}
    for p, s in opt.state.items():
        assert set(s) == set(saved[id(p)])
        for k, v in s.items():
            if torch.is_tensor(v):
                assert torch.equal(v, saved[id(p)][k]), k
                assert v.dtype == saved[id(p)][k].dtype
            else:
                assert v == saved[id(p)][k], k


def _model_and_data():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    return model, x, y


def _mse_closure(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, opt):
    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    return closure


@pytest.mark.parametrize(
    "make_opt",
    [
        pytest.param(
            lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3), id="sgd"
        ),
        pytest.param(
            lambda p: torch.optim.Adam(p, lr=torch.tensor(0.01), foreach=False), id="adam-tensor-lr"
        ),
        pytest.param(lambda p: torch.optim.AdamW(p, lr=0.01, amsgrad=True), id="adamw"),
        pytest.param(lambda p: SuperLevelSGD(p, lr=0.1, decay=0.01, momentum=0.9), id="superlevel"),
    ],
)
@pytest.mark.parametrize("warm", [0, 3], ids=["fresh-state", "warm-state"])
def test_rejected_step_restores_params_state_grads_and_lr_bitwise(make_opt, warm):
    model, x, y = _model_and_data()
    opt = make_opt(model.parameters())
    closure = _mse_closure(model, x, y, opt)
    for _ in range(warm):
        opt.step(closure)
    # the reference: params, state, lr and the grads at the starting point
    closure()
    params = [p.detach().clone() for p in model.parameters()]
    grads = [p.grad.clone() for p in model.parameters()]
    state = _state_copy(opt)
    lr = opt.param_groups[0]["lr"]
    lr_value = lr.clone() if torch.is_tensor(lr) else lr

    # tol = -1e9 makes every trial a violation: all trials are rejected
    guard = LyapunovGuard(opt, tol=-1e9, max_retries=2, on_failure="skip")
    guard.step(closure)

    assert not guard.last.accepted and not guard.last.applied
    assert guard.last.retries == 2 and guard.last.scale == 0.25
    assert guard.counters == {"steps": 1, "violations": 3, "retries": 2, "skips": 1, "forced": 0}
    for p, ref in zip(model.parameters(), params, strict=True):
        assert torch.equal(p, ref)
    for p, ref in zip(model.parameters(), grads, strict=True):
        assert torch.equal(p.grad, ref)
    _assert_same_state(opt, state)
    now = opt.param_groups[0]["lr"]
    if torch.is_tensor(lr):
        assert now is lr and torch.equal(now, lr_value)  # same tensor object, same value
    else:
        assert now == lr_value
    # and the optimizer continues exactly as if the guard had never been called
    opt.step()
    model2, _, _ = _model_and_data()
    opt2 = make_opt(model2.parameters())
    closure2 = _mse_closure(model2, x, y, opt2)
    for _ in range(warm):
        opt2.step(closure2)
    opt2.step(closure2)
    for p, q in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(p, q)


def test_retry_takes_the_shrunk_step_and_lr_is_restored_after_acceptance():
    x = torch.ones(5, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([x], lr=0.025)
    closure = make_closure(x, opt)
    g = LAMBDAS * x.detach()  # grad at x0
    guard = LyapunovGuard(opt, shrink=0.5, max_retries=4)
    loss0 = guard.step(closure)
    assert float(loss0.detach()) == float(quadratic(torch.ones(5, dtype=torch.float64)))
    # lr 0.025 raises the loss (x_5 -> -1.5); lr 0.0125 does not
    assert guard.last.accepted and guard.last.retries == 1 and guard.last.scale == 0.5
    expected = torch.ones(5, dtype=torch.float64).add(g, alpha=-0.0125)
    assert torch.equal(x.detach(), expected)
    assert opt.param_groups[0]["lr"] == 0.025
    assert guard.last.loss_after <= guard.last.loss_before
    assert guard.counters == {"steps": 1, "violations": 1, "retries": 1, "skips": 0, "forced": 0}


def test_on_failure_accept_keeps_the_last_trial():
    x = torch.ones(5, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([x], lr=0.025)
    g = LAMBDAS.clone()
    guard = LyapunovGuard(opt, tol=-1e9, shrink=0.5, max_retries=1, on_failure="accept")
    guard.step(make_closure(x, opt))
    assert guard.last.applied and not guard.last.accepted
    assert torch.equal(x.detach(), torch.ones(5, dtype=torch.float64).add(g, alpha=-0.0125))
    assert opt.param_groups[0]["lr"] == 0.025
    assert guard.counters["forced"] == 1 and guard.counters["skips"] == 0


def test_evaluate_is_forward_only_and_keeps_the_l0_grads():
    x = torch.ones(5, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([x], lr=0.025)
    calls = {"closure": 0, "evaluate": 0}
    inner = make_closure(x, opt)

    def closure():
        calls["closure"] += 1
        return inner()

    def evaluate():
        calls["evaluate"] += 1
        assert not torch.is_grad_enabled()
        return quadratic(x)

    guard = LyapunovGuard(opt, evaluate=evaluate)
    guard.step(closure)
    assert calls == {"closure": 1, "evaluate": 2}  # one rejection, one acceptance
    assert torch.equal(x.grad, LAMBDAS)  # the grads at the starting point
    assert guard.last.accepted and guard.last.retries == 1


def test_nan_loss_is_rejected():
    x = torch.ones(2, requires_grad=True)
    opt = torch.optim.SGD([x], lr=1.0)
    state = {"n": 0}

    def closure():
        opt.zero_grad()
        state["n"] += 1
        loss = (x * x).sum() * (math.nan if state["n"] > 1 else 1.0)
        loss.backward()
        return loss

    guard = LyapunovGuard(opt, max_retries=1)
    guard.step(closure)
    assert not guard.last.applied
    assert torch.equal(x.detach(), torch.ones(2))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"shrink": 0.0},
        {"shrink": 1.0},
        {"max_retries": -1},
        {"max_retries": 1.5},
        {"on_failure": "retry"},
        {"tol": math.nan},
        {"evaluate": 3},
    ],
)
def test_bad_arguments_raise_value_error(kwargs):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        LyapunovGuard(opt, **kwargs)


def test_bad_optimizer_and_closure_raise_value_error():
    with pytest.raises(ValueError, match="optimizer"):
        LyapunovGuard(object())
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    guard = LyapunovGuard(opt)
    with pytest.raises(ValueError, match="closure"):
        guard.step(lambda: 1.0)


def test_param_group_added_after_construction_is_restored():
    a = torch.ones(2, requires_grad=True)
    b = torch.full((3,), 2.0, requires_grad=True)
    opt = torch.optim.SGD([a], lr=0.1, momentum=0.9)
    guard = LyapunovGuard(opt, tol=-1e9, max_retries=0)
    opt.add_param_group({"params": [b], "lr": 0.2})

    def closure():
        opt.zero_grad()
        loss = (a * a).sum() + (b * b).sum()
        loss.backward()
        return loss

    guard.step(closure)
    assert torch.equal(a.detach(), torch.ones(2))
    assert torch.equal(b.detach(), torch.full((3,), 2.0))
    assert len(opt.state) == 0  # momentum buffers created by the trial are gone


def test_float64_losses_are_compared_in_float64():
    # L rises by 1e-9 from 1.0: invisible in float32, a violation in float64
    x = torch.ones(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([x], lr=1e-9, maximize=True)

    def closure():
        opt.zero_grad()
        loss = x.sum()
        loss.backward()
        return loss

    guard = LyapunovGuard(opt, max_retries=0)
    guard.step(closure)
    assert not guard.last.accepted
    assert torch.equal(x.detach(), torch.ones(1, dtype=torch.float64))


def test_snapshot_buffers_are_reused_across_calls():
    model, x, y = _model_and_data()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    guard = LyapunovGuard(opt)
    closure = _mse_closure(model, x, y, opt)
    guard.step(closure)
    guard.step(closure)  # state exists from here on
    snap = guard._snapshot
    ids = (
        [id(b) for b in snap._param_buf],
        {i: id(b) for i, b in snap._grad_buf.items()},
        {i: {k: id(b) for k, b in d.items()} for i, d in snap._state_buf.items()},
    )
    for _ in range(3):
        guard.step(closure)
    assert ids == (
        [id(b) for b in snap._param_buf],
        {i: id(b) for i, b in snap._grad_buf.items()},
        {i: {k: id(b) for k, b in d.items()} for i, d in snap._state_buf.items()},
    )
    # and no buffer is shared with the optimizer's live state
    live = {id(v) for s in opt.state.values() for v in s.values() if torch.is_tensor(v)}
    assert not live & {i for d in ids[2].values() for i in d.values()}


# -- defects of the first version: each test failed before the fix ------------------------


def test_non_finite_new_loss_is_rejected_even_when_the_old_one_is_inf():
    # L0 = L1 = inf: `inf <= inf` is True, but an infinite L1 is never an acceptable point
    x = torch.ones(2, requires_grad=True)
    opt = torch.optim.SGD([x], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = x.sum() + math.inf  # finite grads, infinite loss everywhere
        loss.backward()
        return loss

    guard = LyapunovGuard(opt, max_retries=2)
    guard.step(closure)
    assert not guard.last.accepted and not guard.last.applied
    assert torch.equal(x.detach(), torch.ones(2))
    assert guard.counters["skips"] == 1 and guard.counters["violations"] == 3


def test_nan_old_loss_rejects():
    x = torch.ones(2, requires_grad=True)
    opt = torch.optim.SGD([x], lr=0.1)
    calls = {"n": 0}

    def closure():
        opt.zero_grad()
        calls["n"] += 1
        loss = (x * x).sum() * (math.nan if calls["n"] == 1 else 1.0)
        loss.backward()
        return loss

    guard = LyapunovGuard(opt, max_retries=0)
    guard.step(closure)
    assert not guard.last.accepted and not guard.last.applied
    assert torch.equal(x.detach(), torch.ones(2))


@pytest.mark.parametrize("fail_at", [1, 3], ids=["first-closure", "after-a-rejection"])
def test_an_exception_restores_everything_and_propagates(fail_at):
    model, x, y = _model_and_data()
    model.insert(1, torch.nn.BatchNorm1d(8))
    opt = SuperLevelSGD(model.parameters(), lr=0.5, momentum=0.9)
    inner = _mse_closure(model, x, y, opt)
    for _ in range(2):
        opt.step(inner)
    inner()
    params = [p.detach().clone() for p in model.parameters()]
    buffers = [b.clone() for b in model.buffers()]
    state = _state_copy(opt)
    groups = [
        {k: v for k, v in g.items() if k not in ("params", "step", "skipped")}
        for g in opt.param_groups
    ]
    steps = [g["step"].clone() for g in opt.param_groups]
    calls = {"n": 0}

    def closure():
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise RuntimeError("data loader died")
        return inner()

    guard = LyapunovGuard(opt, tol=-1e9, max_retries=4, model=model)
    with pytest.raises(RuntimeError, match="data loader died"):
        guard.step(closure)
    assert calls["n"] == fail_at
    assert opt.param_groups[0]["lr"] == 0.5  # not the shrunk 0.25 of the failed trial
    assert [
        {k: v for k, v in g.items() if k not in ("params", "step", "skipped")}
        for g in opt.param_groups
    ] == groups
    assert all(torch.equal(g["step"], s) for g, s in zip(opt.param_groups, steps, strict=True))
    for p, ref in zip(model.parameters(), params, strict=True):
        assert torch.equal(p, ref)
    for b, ref in zip(model.buffers(), buffers, strict=True):
        assert torch.equal(b, ref)
    _assert_same_state(opt, state)
    assert guard.counters == dict.fromkeys(guard.counters, 0) and guard.last is None


def _bn_model_and_data():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Tanh(), torch.nn.Linear(8, 2)
    )
    return model, torch.randn(16, 4), torch.randn(16, 2)


def test_a_skipped_step_leaves_module_buffers_as_before():
    model, x, y = _bn_model_and_data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [b.clone() for b in model.buffers()]
    guard = LyapunovGuard(opt, tol=-1e9, max_retries=2, model=model)
    guard.step(_mse_closure(model, x, y, opt))
    assert not guard.last.applied
    for b, ref in zip(model.buffers(), before, strict=True):
        assert torch.equal(b, ref)  # running mean, var and num_batches_tracked


@pytest.mark.parametrize("how", ["model", "buffers"])
def test_an_accepted_step_updates_buffers_once_like_an_unguarded_step(how):
    model, x, y = _bn_model_and_data()
    ref, _, _ = _bn_model_and_data()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.01)
    kw = {"model": model} if how == "model" else {"buffers": list(model.buffers())}
    guard = LyapunovGuard(opt, max_retries=2, **kw)
    for _ in range(3):
        guard.step(_mse_closure(model, x, y, opt))
        ref_opt.step(_mse_closure(ref, x, y, ref_opt))
        assert guard.last.accepted
    for b, r in zip(model.buffers(), ref.buffers(), strict=True):
        assert torch.equal(b, r)
    for p, r in zip(model.parameters(), ref.parameters(), strict=True):
        assert torch.equal(p, r)


def test_without_model_the_buffers_are_not_protected():
    # documents the default: only with model=/buffers= are buffers part of the snapshot
    model, x, y = _bn_model_and_data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model[1].running_mean.clone()
    LyapunovGuard(opt, tol=-1e9, max_retries=0).step(_mse_closure(model, x, y, opt))
    assert not torch.equal(model[1].running_mean, before)


def test_non_scalar_loss_gives_a_clear_error():
    x = torch.ones(3, requires_grad=True)
    opt = torch.optim.SGD([x], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = x * x  # forgot the reduction
        loss.sum().backward()
        return loss

    guard = LyapunovGuard(opt)
    with pytest.raises(ValueError, match=r"scalar loss.*shape \(3,\)"):
        guard.step(closure)
    assert torch.equal(x.detach(), torch.ones(3)) and guard.counters["steps"] == 0


def test_bad_model_and_buffers_arguments():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match="model"):
        LyapunovGuard(opt, model=3)
    with pytest.raises(ValueError, match="buffers"):
        LyapunovGuard(opt, buffers=[1.0])
    with pytest.raises(ValueError, match="not both"):
        LyapunovGuard(opt, model=torch.nn.Linear(1, 1), buffers=[])


# -- the guard as a torch.optim.Optimizer ---------------------------------------------------


def test_the_guard_is_an_optimizer_sharing_groups_and_state():
    model, x, y = _model_and_data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    guard = LyapunovGuard(opt)
    assert isinstance(guard, torch.optim.Optimizer)
    assert guard.param_groups is opt.param_groups and guard.defaults is opt.defaults
    loss = guard.step(closure=_mse_closure(model, x, y, guard))
    assert torch.is_tensor(loss) and loss.ndim == 0
    assert guard.state is opt.state and len(guard.state) == 4
    guard.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    # a scheduler built on the guard drives the inner optimizer
    sched = torch.optim.lr_scheduler.StepLR(guard, step_size=1, gamma=0.5)
    guard.step(_mse_closure(model, x, y, guard))
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    extra = torch.zeros(2, requires_grad=True)
    guard.add_param_group({"params": [extra]})
    assert opt.param_groups[-1]["params"] == [extra]
    assert "LyapunovGuard" in repr(guard) and "SGD" in repr(guard)


def test_step_without_a_closure_says_the_guard_needs_one():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match="needs a closure"):
        LyapunovGuard(opt).step()


def test_state_dict_round_trip_resumes_exactly_with_the_counters():
    def make():
        model, x, y = _model_and_data()
        opt = SuperLevelSGD(model.parameters(), lr=3.0, decay=0.01, momentum=0.9)
        return model, LyapunovGuard(opt, max_retries=6), x, y

    model, guard, x, y = make()
    for _ in range(4):
        guard.step(_mse_closure(model, x, y, guard))
    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    saved = copy.deepcopy(guard.state_dict())  # state_dict() holds live references
    assert saved["lyapunov_guard"]["counters"] == guard.counters
    for _ in range(4):
        guard.step(_mse_closure(model, x, y, guard))

    model2, guard2, _, _ = make()
    model2.load_state_dict(saved_model)
    guard2.load_state_dict(saved)
    assert guard2.counters == saved["lyapunov_guard"]["counters"]
    for _ in range(4):
        guard2.step(_mse_closure(model2, x, y, guard2))
    assert guard.counters["retries"] > 0  # the run did backtrack
    assert guard2.counters == guard.counters
    for p, q in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="counters"):
        guard2.load_state_dict({**saved, "lyapunov_guard": {"counters": {"steps": 1}}})
