"""SuperLevelSGD behaviour: contract, errors, skip/raise, closure, schedulers, resume, stats."""

from __future__ import annotations

import copy
import io
import math
import pickle

import pytest
import torch

from superlevel.optim import ReferenceSuperLevelSGD, SuperLevelSGD, damp_grad_norm_
from superlevel.optim.functional import global_grad_norm, resolve_impl
from superlevel.optim.norm import host_grad_norm

from .helpers import PATHS, grad_sequence, init_params


def _params(n=2, dtype=torch.float64):
    return [torch.nn.Parameter(p) for p in init_params(dtype=dtype)[:n]]


def _set_grads(params, grads):
    for p, g in zip(params, grads, strict=True):
        p.grad = None if g is None else g.clone()


# ---------------------------------------------------------------- invalid arguments
@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [
        ({"lr": -0.1}, "-0.1"),
        ({"lr": float("nan")}, "nan"),
        ({"decay": -1e-3}, "-0.001"),
        ({"min_lr": -1.0}, "-1.0"),
        ({"momentum": -0.5}, "-0.5"),
        ({"dampening": -0.2}, "-0.2"),
        ({"dampening": 1.5}, "1.5"),
        ({"weight_decay": -0.01}, "-0.01"),
        ({"norm_scale": 0.0}, "0.0"),
        ({"norm_scale": -2.0}, "-2.0"),
        ({"norm_scale": float("inf")}, "inf"),
        ({"nesterov": True}, "momentum=0.0"),
        ({"nesterov": True, "momentum": 0.9, "dampening": 0.1}, "dampening=0.1"),
        ({"nonfinite": "ignore"}, "'ignore'"),
        ({"fused": True, "foreach": True}, "fused=True"),
        ({"capturable": True, "nonfinite": "raise"}, "nonfinite='raise'"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_the_value(kwargs, shown):
    with pytest.raises(ValueError) as info:
        SuperLevelSGD(_params(), **kwargs)
    assert shown in str(info.value)
    assert next(iter(kwargs)) in str(info.value)


@pytest.mark.parametrize(
    ("group", "shown"),
    [({"lr": -1.0}, "lr"), ({"decay": -2.0}, "decay"), ({"norm_scale": 3.0}, "norm_scale")],
)
def test_invalid_group_overrides_raise(group, shown):
    p, q = _params()
    with pytest.raises(ValueError, match=shown):
        SuperLevelSGD([{"params": [p]}, {"params": [q], **group}])


def test_sparse_gradient_gets_a_clear_error():
    emb = torch.nn.Embedding(10, 3, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        SuperLevelSGD(emb.parameters()).step()


def test_capturable_rejects_cpu_params():
    params = _params()
    _set_grads(params, grad_sequence(1)[0][:2])
    with pytest.raises(ValueError, match="accelerator"):
        SuperLevelSGD(params, capturable=True).step()


# ---------------------------------------------------------------- non-finite steps
def _warm(path, **kw):
    """An optimizer with momentum after one good step, and its params."""
    params = _params()
    opt = SuperLevelSGD(params, lr=0.2, momentum=0.9, decay=0.1, **kw, **PATHS[path])
    _set_grads(params, grad_sequence(1)[0][:2])
    opt.step()
    return opt, params


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
@pytest.mark.parametrize("path", list(PATHS))
def test_nonfinite_skip_leaves_everything_and_counts(path, bad, flag_mode):
    opt, params = _warm(path)
    before = [p.detach().clone() for p in params]
    bufs = [opt.state[p]["momentum_buffer"].clone() for p in params]
    grads = grad_sequence(1, seed=5)[0][:2]
    grads[0].view(-1)[0] = bad
    _set_grads(params, grads)
    opt.step()
    for p, b, old, oldb in zip(
        params, [opt.state[p]["momentum_buffer"] for p in params], before, bufs, strict=True
    ):
        assert torch.equal(p, old)
        assert torch.equal(b, oldb)
    s = opt.stats()
    assert (s["step"].item(), s["skipped"].item()) == (1, 1)
    assert s["scale"].item() == 0.0 and s["effective_lr"].item() == 0.0
    assert not math.isfinite(s["grad_norm"].item())
    # The next finite step uses t = 1, as if the skipped step never happened.
    _set_grads(params, grad_sequence(1, seed=6)[0][:2])
    opt.step()
    assert opt.stats()["step"].item() == 2
    assert opt.stats()["lr"].item() == pytest.approx(0.2 * math.exp(-0.1), rel=1e-12)


@pytest.mark.parametrize("path", list(PATHS))
def test_nonfinite_raise_before_anything_changes(path):
    opt, params = _warm(path, nonfinite="raise")
    before = [p.detach().clone() for p in params]
    bufs = [opt.state[p]["momentum_buffer"].clone() for p in params]
    grads = grad_sequence(1, seed=5)[0][:2]
    grads[1].view(-1)[3] = float("nan")
    _set_grads(params, grads)
    with pytest.raises(FloatingPointError, match="non-finite"):
        opt.step()
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True))
    assert all(
        torch.equal(opt.state[p]["momentum_buffer"], b) for p, b in zip(params, bufs, strict=True)
    )
    assert opt.stats()["step"].item() == 1 and opt.stats()["skipped"].item() == 0


def test_half_precision_norm_does_not_overflow():
    # ||g||^2 = 4e3 * 300^2 = 3.6e8 overflows float16 (max 65504); the norm must not.
    p = torch.nn.Parameter(torch.zeros(4000, dtype=torch.float16))
    p.grad = torch.full_like(p, 300.0)
    opt = SuperLevelSGD([p], lr=1.0, foreach=True)
    opt.step()
    assert opt.stats()["skipped"].item() == 0
    assert opt.stats()["grad_norm"].item() == pytest.approx(300.0 * math.sqrt(4000), rel=1e-6)
    # Step length a * n / (1 + n) spread evenly: each entry moves by that / sqrt(4000).
    n = 300.0 * math.sqrt(4000)
    assert p[0].item() == pytest.approx(-n / (1 + n) / math.sqrt(4000), rel=1e-3)


# ---------------------------------------------------------------- closure, grads, groups
@pytest.mark.parametrize("path", list(PATHS))
def test_closure_loss_is_returned_and_grads_are_fresh(path):
    w = torch.nn.Parameter(torch.tensor([3.0, -4.0], dtype=torch.float64))
    opt = SuperLevelSGD([w], lr=1.0, **PATHS[path])

    def closure():
        opt.zero_grad()
        loss = 0.5 * (w**2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == pytest.approx(12.5)
    # grad = w, ||w|| = 5: w <- w - w / 6.
    torch.testing.assert_close(w.detach(), torch.tensor([2.5, -10 / 3], dtype=torch.float64))


@pytest.mark.parametrize("path", list(PATHS))
def test_params_without_grad_are_untouched_and_empty_steps_not_counted(path):
    a, b = _params()
    keep = b.detach().clone()
    opt = SuperLevelSGD(
        [{"params": [a]}, {"params": []}, {"params": [b]}],
        momentum=0.9,
        weight_decay=0.5,
        **PATHS[path],
    )
    opt.step()  # no gradient anywhere: nothing happens, t stays 0
    assert opt.stats()["step"].item() == 0
    a.grad = torch.ones_like(a)
    opt.step()
    assert torch.equal(b, keep)
    assert "momentum_buffer" not in opt.state[b]
    assert opt.stats()["step"].item() == 1


def test_late_param_group_joins_at_current_t():
    a, b = _params()
    opt = SuperLevelSGD([a], lr=1.0, decay=0.5)
    for _ in range(3):
        a.grad = torch.ones_like(a)
        opt.step()
    opt.add_param_group({"params": [b], "lr": 2.0})
    assert opt.param_groups[1]["step"].item() == 3
    ref = b.detach().clone()
    a.grad, b.grad = None, torch.ones_like(b)
    opt.step()
    n = math.sqrt(b.numel())
    expected = ref - 2.0 * math.exp(-0.5 * 3) / (1 + n)
    torch.testing.assert_close(b.detach(), expected)


# ---------------------------------------------------------------- schedulers, resume
@pytest.mark.parametrize("path", list(PATHS))
def test_lr_scheduler_rescales_a0(path):
    params = _params()
    ref_params = [p.detach().clone() for p in params]
    opt = SuperLevelSGD(params, lr=0.4, decay=0.2, **PATHS[path])
    ref = ReferenceSuperLevelSGD(ref_params, lr=0.4, decay=0.2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for gs in grad_sequence(5):
        _set_grads(params, gs[:2])
        _set_grads(ref_params, gs[:2])
        ref.param_groups[0]["lr"] = opt.param_groups[0]["lr"]
        opt.step()
        ref.step()
        sched.step()
    for p, q in zip(params, ref_params, strict=True):
        torch.testing.assert_close(p.detach(), q, rtol=1e-13, atol=1e-14)
    # group["lr"] is a0 as the scheduler left it; the decay lives in the step count only.
    assert opt.param_groups[0]["lr"] == pytest.approx(0.4 * 0.25)
    assert opt.stats()["lr"].item() == pytest.approx(0.4 * 0.25 * math.exp(-0.2 * 4))


@pytest.mark.parametrize("path", list(PATHS))
def test_state_dict_resume_is_bit_identical(path):
    kw = dict(lr=0.3, decay=0.1, momentum=0.9, nesterov=True, weight_decay=0.01, **PATHS[path])
    seq = grad_sequence(8, inf_at=(2,))
    straight = _params()
    opt = SuperLevelSGD(straight, **kw)
    for gs in seq:
        _set_grads(straight, gs[:2])
        opt.step()

    first = _params()
    opt1 = SuperLevelSGD(first, **kw)
    for gs in seq[:4]:
        _set_grads(first, gs[:2])
        opt1.step()
    buf = io.BytesIO()
    torch.save({"params": [p.detach() for p in first], "opt": opt1.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf)
    resumed = [torch.nn.Parameter(p.clone()) for p in saved["params"]]
    opt2 = SuperLevelSGD(resumed, **kw)
    opt2.load_state_dict(saved["opt"])
    for gs in seq[4:]:
        _set_grads(resumed, gs[:2])
        opt2.step()
    for p, q in zip(straight, resumed, strict=True):
        assert torch.equal(p, q)
    assert opt2.stats()["step"].item() == 7 and opt2.stats()["skipped"].item() == 1


def test_pickle_and_setstate_defaults():
    opt = SuperLevelSGD(_params(), lr=0.2)
    state = opt.__getstate__()
    for group in state["param_groups"]:
        for key in ("decay", "min_lr", "nonfinite", "fused", "capturable"):
            del group[key]
    fresh = SuperLevelSGD.__new__(SuperLevelSGD)
    fresh.__setstate__(state)
    assert fresh.param_groups[0]["decay"] == 0.0 and fresh.param_groups[0]["nonfinite"] == "skip"
    clone = pickle.loads(pickle.dumps(copy.deepcopy(opt)))
    assert clone.param_groups[0]["lr"] == 0.2


# ---------------------------------------------------------------- stats, paths, damping
def test_stats_are_zero_dim_tensors_with_the_rule_values():
    params = _params()
    opt = SuperLevelSGD(params, lr=0.5, decay=0.3, norm_scale=2.0)
    assert set(opt.stats()) == {"step", "grad_norm", "scale", "lr", "effective_lr", "skipped"}
    for gs in grad_sequence(3):
        _set_grads(params, gs[:2])
        opt.step()
    s = opt.stats()
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in s.values())
    n = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in params])).item()
    assert s["grad_norm"].item() == pytest.approx(n, rel=1e-12)
    assert s["scale"].item() == pytest.approx(1 / (1 + n / 2.0), rel=1e-12)
    assert s["lr"].item() == pytest.approx(0.5 * math.exp(-0.3 * 2), rel=1e-12)
    assert s["effective_lr"].item() == pytest.approx(s["lr"].item() * s["scale"].item())


def test_default_path_is_foreach_on_cpu():
    f32 = [torch.zeros(2)]
    assert resolve_impl(f32, foreach=None, fused=None) == "foreach"
    assert resolve_impl(f32, foreach=None, fused=True) == "fused"
    assert resolve_impl(f32, foreach=False, fused=None) == "single"
    assert resolve_impl(f32, foreach=True, fused=None) == "foreach"
    assert resolve_impl(f32, foreach=None, fused=False) == "foreach"
    assert resolve_impl([torch.zeros(2, dtype=torch.int64)], foreach=None, fused=None) == "foreach"


@pytest.mark.parametrize("path", ["single", "foreach"])
def test_complex_params_equal_reference(path):
    gen = torch.Generator().manual_seed(3)
    p0 = torch.randn(6, dtype=torch.complex128, generator=gen)
    fast, slow = torch.nn.Parameter(p0.clone()), p0.clone()
    opt = SuperLevelSGD([fast], lr=0.3, decay=0.1, momentum=0.9, weight_decay=0.1, **PATHS[path])
    ref = ReferenceSuperLevelSGD([slow], lr=0.3, decay=0.1, momentum=0.9, weight_decay=0.1)
    for _ in range(4):
        g = torch.randn(6, dtype=torch.complex128, generator=gen)
        fast.grad, slow.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
    torch.testing.assert_close(fast.detach(), slow, rtol=1e-13, atol=1e-14)


def test_fused_rejects_unsupported_dtype():
    p = torch.zeros(3, dtype=torch.complex64, requires_grad=True)
    p.grad = torch.ones_like(p)
    with pytest.raises(RuntimeError, match="complex64"):
        SuperLevelSGD([p], fused=True).step()


@pytest.mark.parametrize("foreach", [None, False])
def test_damp_grad_norm_scales_grads_and_returns_norm(foreach):
    params = _params()
    gs = grad_sequence(1)[0][:2]
    _set_grads(params, gs)
    n = torch.linalg.vector_norm(torch.cat([g.flatten() for g in gs]))
    out = damp_grad_norm_(params, norm_scale=0.5, foreach=foreach)
    assert out.item() == pytest.approx(n.item(), rel=1e-12)
    for p, g in zip(params, gs, strict=True):
        torch.testing.assert_close(p.grad, g / (1 + n / 0.5), rtol=1e-13, atol=0)
    # The damped norm is n / (1 + n / s) < s.
    damped = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in params]))
    assert damped.item() == pytest.approx(n.item() / (1 + n.item() / 0.5)) and damped < 0.5


def test_damp_then_sgd_equals_superlevel_without_decay():
    a, b = _params(1), _params(1)
    gs = grad_sequence(1)[0][:1]
    _set_grads(a, gs)
    _set_grads(b, gs)
    damp_grad_norm_(a)
    torch.optim.SGD(a, lr=0.3).step()
    SuperLevelSGD(b, lr=0.3).step()
    torch.testing.assert_close(a[0], b[0], rtol=1e-15, atol=0)


def test_damp_grad_norm_errors():
    params = _params(1)
    params[0].grad = torch.full_like(params[0], float("inf"))
    with pytest.raises(FloatingPointError, match="non-finite"):
        damp_grad_norm_(params, error_if_nonfinite=True)
    with pytest.raises(ValueError, match="-1"):
        damp_grad_norm_(params, norm_scale=-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_global_norm_of_large_small_and_strided_tensors_is_exact(dtype):
    # Both norms (host and sync-free) over large, small and non-contiguous gradients.
    gen = torch.Generator().manual_seed(0)
    big = torch.randn(70_000, generator=gen).to(dtype)
    small = torch.randn(10, generator=gen).to(dtype)
    strided = torch.randn(300, 400, generator=gen).to(dtype).t()
    grads = [big, small, strided]
    want = torch.linalg.vector_norm(torch.cat([g.reshape(-1).double() for g in grads]))
    assert host_grad_norm(grads) == pytest.approx(
        want.item(), rel=1e-6 if dtype == torch.float32 else 1e-13
    )
    got = global_grad_norm(grads)
    assert got.dtype == torch.float64  # squares accumulated wide: no finite grad overflows
    assert got.item() == pytest.approx(want.item(), rel=1e-6 if dtype == torch.float32 else 1e-13)


def test_top_level_exports():
    import superlevel
    from superlevel.optim import SuperLevelSGD as Direct

    assert superlevel.SuperLevelSGD is Direct
    assert superlevel.damp_grad_norm_ is damp_grad_norm_
