"""The edges a torch user reaches: casts and moves after construction, settings in the
state dict, stats, long runs, huge gradients, all-or-nothing steps, bad arguments,
per-group paths."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from superlevel.optim import ReferenceSuperLevelSGD, SuperLevelSGD

from .helpers import PATHS, grad_sequence, init_params


def _params(n=2, dtype=torch.float64):
    return [torch.nn.Parameter(p) for p in init_params(dtype=dtype)[:n]]


def _set_grads(params, grads):
    for p, g in zip(params, grads, strict=True):
        p.grad = None if g is None else g.clone()


# ---------------------------------------------------------------- 1. casts after construction
def test_half_after_construction_takes_the_true_norm():
    torch.manual_seed(0)
    m = torch.nn.Linear(300, 300)
    o = SuperLevelSGD(m.parameters(), lr=0.1)
    x = torch.randn(8, 300)
    m(x).square().mean().backward()
    o.step()
    o.zero_grad()
    m.half()
    m(x.half()).float().square().sum().backward()
    want = math.sqrt(sum(float(p.grad.double().square().sum()) for p in m.parameters()))
    before = [p.detach().clone() for p in m.parameters()]
    o.step()
    s = o.stats()
    assert s["skipped"].item() == 0 and s["step"].item() == 2
    assert s["grad_norm"].item() == pytest.approx(want, rel=1e-3)
    assert all(not torch.equal(p, b) for p, b in zip(m.parameters(), before, strict=True))


@pytest.mark.parametrize("path", list(PATHS))
def test_double_after_construction_equals_reference_with_momentum(path, flag_mode):
    kw = dict(lr=0.3, decay=0.2, momentum=0.9, weight_decay=0.05)
    seq = grad_sequence(4)
    fast = _params(dtype=torch.float32)
    opt = SuperLevelSGD(fast, **kw, **PATHS[path])
    _set_grads(fast, [g.float() for g in seq[0][:2]])
    opt.step()
    ref = [p.detach().double().clone() for p in fast]
    ref_opt = ReferenceSuperLevelSGD(ref, **kw)
    ref_opt.t = 1
    for p, q in zip(fast, ref, strict=True):
        ref_opt.buffers[id(q)] = opt.state[p]["momentum_buffer"].double().clone()
        p.data = p.data.double()  # what module.double() does
    for gs in seq[1:]:
        _set_grads(fast, gs[:2])
        _set_grads(ref, gs[:2])
        opt.step()
        ref_opt.step()
    for p, q in zip(fast, ref, strict=True):
        assert p.dtype == torch.float64 and opt.state[p]["momentum_buffer"].dtype == torch.float64
        torch.testing.assert_close(p.detach(), q, rtol=1e-13, atol=1e-14)


# ---------------------------------------------------------------- 2. settings travel
def test_settings_round_trip_through_state_dict():
    kw = dict(norm_scale=0.25, nonfinite="raise", foreach=False, fused=None, capturable=False)
    src = SuperLevelSGD(_params(), lr=0.3, decay=0.1, **kw)
    dst = SuperLevelSGD(_params(), lr=0.3, decay=0.1)
    dst.load_state_dict(copy.deepcopy(src.state_dict()))
    for key, value in kw.items():
        assert dst.param_groups[0][key] == value, key
    ps = dst.param_groups[0]["params"]
    _set_grads(ps, [torch.full_like(p, math.nan) for p in ps])
    with pytest.raises(FloatingPointError):  # nonfinite="raise" was restored
        dst.step()


def test_editing_norm_scale_in_param_groups_takes_effect():
    a, b = _params(), _params()
    gs = grad_sequence(1)[0][:2]
    opt_a = SuperLevelSGD(a, lr=0.3)
    opt_a.param_groups[0]["norm_scale"] = 0.25
    opt_b = SuperLevelSGD(b, lr=0.3, norm_scale=0.25)
    for ps, opt in ((a, opt_a), (b, opt_b)):
        _set_grads(ps, gs)
        opt.step()
    for p, q in zip(a, b, strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize(
    ("key", "value", "error"),
    [
        ("momentum", -0.5, ValueError),
        ("weight_decay", math.nan, ValueError),
        ("maximize", 1, TypeError),  # 1 == True: the check must see the type change
        ("lr", "0.1", TypeError),
    ],
)
def test_a_setting_edited_between_steps_is_checked_again(key, value, error):
    # step() keeps the last checked settings; an edit after a good step must not slip by.
    ps = _params()
    gs = grad_sequence(2)
    opt = SuperLevelSGD(ps, lr=0.3, maximize=key == "maximize" or False)
    _set_grads(ps, gs[0][:2])
    opt.step()
    before = [p.detach().clone() for p in ps]
    opt.param_groups[0][key] = value
    _set_grads(ps, gs[1][:2])
    with pytest.raises(error, match=key):
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(ps, before, strict=True))


def test_a_setting_edited_between_steps_takes_effect():
    a, b = _params(), _params()
    gs = grad_sequence(2)
    opt_a = SuperLevelSGD(a, lr=0.3)
    opt_b = ReferenceSuperLevelSGD(b, lr=0.3)
    for t, g in enumerate(gs):
        for ps, opt in ((a, opt_a), (b, opt_b)):
            if t == 1:
                opt.param_groups[0].update(momentum=0.9, weight_decay=0.01, lr=0.1)
            _set_grads(ps, g[:2])
            opt.step()
    for p, q in zip(a, b, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-13, atol=0)


def test_load_state_dict_refuses_another_optimizers_state():
    ps = _params()
    opt = SuperLevelSGD(ps, lr=0.5, decay=0.1)
    with pytest.raises(ValueError, match="not a SuperLevelSGD state dict"):
        opt.load_state_dict(torch.optim.SGD(ps, lr=0.01).state_dict())
    assert opt.param_groups[0]["decay"] == 0.1 and opt.param_groups[0]["lr"] == 0.5


@pytest.mark.parametrize(
    ("edit", "shown"),
    [
        (lambda sd: sd["param_groups"][0].update(lr=-1.0), "lr"),
        (lambda sd: sd["param_groups"][0].update(momentum=math.nan), "momentum"),
        (lambda sd: sd["param_groups"][0].update(weight_decay=math.inf), "weight_decay"),
        (lambda sd: sd["param_groups"][0].update(step=torch.tensor(math.nan)), "step"),
        (lambda sd: sd["param_groups"][0].update(step=torch.tensor(-3.0)), "step"),
        (lambda sd: sd["param_groups"][0].update(step=torch.tensor(2.5)), "step"),
        (lambda sd: sd["state"][0].update(momentum_buffer=torch.zeros(7)), "shape"),
    ],
)
def test_load_state_dict_validates_and_changes_nothing_when_refused(edit, shown):
    ps = _params()
    src = SuperLevelSGD(ps, lr=0.3, momentum=0.9)
    _set_grads(ps, grad_sequence(1)[0][:2])
    src.step()
    sd = copy.deepcopy(src.state_dict())
    edit(sd)
    dst = SuperLevelSGD(_params(), lr=0.7, momentum=0.5)
    with pytest.raises(ValueError, match=shown):
        dst.load_state_dict(sd)
    assert dst.param_groups[0]["lr"] == 0.7 and dst.param_groups[0]["step"].item() == 0
    assert not dst.state


@pytest.mark.parametrize("path", list(PATHS))
def test_older_state_dict_without_the_optional_flags_loads_with_their_defaults(path):
    # torch's test_can_load_older_state_dict: a checkpoint from before a flag existed.
    kw = dict(lr=0.3, decay=0.1, momentum=0.9)
    ps, qs = _params(), _params()
    src = SuperLevelSGD(ps, **kw, **PATHS[path])
    seq = grad_sequence(5)
    for gs in seq[:3]:
        _set_grads(ps, gs[:2])
        src.step()
    old = copy.deepcopy(src.state_dict())
    for group in old["param_groups"]:
        for flag in ("maximize", "foreach", "fused", "capturable"):
            del group[flag]
    with torch.no_grad():
        for p, q in zip(ps, qs, strict=True):
            q.copy_(p)
    dst = SuperLevelSGD(qs, lr=0.9, **PATHS[path])
    dst.load_state_dict(old)
    group = dst.param_groups[0]
    assert (group["maximize"], group["foreach"], group["fused"], group["capturable"]) == (
        False, None, None, False,
    )  # fmt: skip
    assert group["decay"] == 0.1 and group["step"].item() == 3
    for gs in seq[3:]:
        _set_grads(ps, gs[:2])
        _set_grads(qs, gs[:2])
        src.step()
        dst.step()
    for p, q in zip(ps, qs, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-14, atol=0)


@pytest.mark.parametrize("key", ["decay", "min_lr", "norm_scale", "nonfinite", "momentum"])
def test_state_dict_lacking_one_of_the_rules_keys_is_still_refused(key):
    ps = _params()
    sd = copy.deepcopy(SuperLevelSGD(ps, lr=0.3).state_dict())
    del sd["param_groups"][0][key]
    with pytest.raises(ValueError, match=rf"not a SuperLevelSGD state dict.*'{key}'"):
        SuperLevelSGD(_params(), lr=0.7).load_state_dict(sd)


# ---------------------------------------------------------------- 3. stats are values
def test_stats_are_copies_not_the_live_counters():
    ps = _params()
    opt = SuperLevelSGD(ps, lr=0.5, decay=0.5)
    _set_grads(ps, grad_sequence(1)[0][:2])
    opt.step()
    opt.stats()["step"].zero_()
    opt.stats()["lr"].fill_(7.0)
    assert opt.stats()["step"].item() == 1 and opt.stats()["lr"].item() == 0.5


def test_stats_after_load_state_dict_report_restored_step_and_lr():
    ps = _params()
    src = SuperLevelSGD(ps, lr=0.5, decay=0.3)
    for gs in grad_sequence(3):
        _set_grads(ps, gs[:2])
        src.step()
    dst = SuperLevelSGD(_params(), lr=0.5, decay=0.3)
    assert dst.stats()["lr"].item() == pytest.approx(0.5)  # a_0 before any step
    dst.load_state_dict(src.state_dict())
    s = dst.stats()
    assert s["step"].item() == 3
    assert s["lr"].item() == pytest.approx(0.5 * math.exp(-0.3 * 3), rel=1e-12)


# ---------------------------------------------------------------- 4. t beyond 2**24
@pytest.mark.parametrize("path", list(PATHS))
def test_step_counter_is_exact_beyond_float32(path, flag_mode):
    ps = _params()
    opt = SuperLevelSGD(ps, lr=1.0, decay=1e-8, **PATHS[path])
    _set_grads(ps, grad_sequence(1)[0][:2])
    opt.step()
    sd = opt.state_dict()
    t0 = 2**24 + 1
    sd["param_groups"][0]["step"] = torch.tensor(float(2**24))  # an old float32 counter
    opt.load_state_dict(sd)
    opt.param_groups[0]["step"].add_(1)
    for _ in range(3):
        opt.step()
    assert opt.stats()["step"].item() == t0 + 3
    assert opt.stats()["lr"].item() == pytest.approx(math.exp(-1e-8 * (t0 + 2)), rel=1e-15)


# ---------------------------------------------------------------- 5. huge finite grads
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize(("dtype", "scale"), [(torch.float32, 1e20), (torch.float64, 1e200)])
def test_huge_finite_gradients_are_taken_like_the_reference(path, dtype, scale, flag_mode):
    fast = _params(dtype=dtype)
    ref = [p.detach().clone() for p in fast]
    opt = SuperLevelSGD(fast, lr=0.5, nonfinite="raise", **PATHS[path])
    ref_opt = ReferenceSuperLevelSGD(ref, lr=0.5)
    gs = [(g * scale).to(dtype) for g in grad_sequence(1)[0][:2]]
    _set_grads(fast, gs)
    _set_grads(ref, gs)
    opt.step()  # no FloatingPointError: every gradient is finite
    ref_opt.step()
    assert opt.stats()["skipped"].item() == 0
    assert opt.stats()["grad_norm"].item() == pytest.approx(ref_opt.last_norm, rel=1e-6)
    for p, q in zip(fast, ref, strict=True):
        torch.testing.assert_close(p.detach(), q, rtol=1e-6, atol=1e-7)


def test_huge_gradient_with_an_inf_is_still_skipped():
    ps = _params(dtype=torch.float32)
    opt = SuperLevelSGD(ps, lr=0.5)
    gs = [g.float() * 1e30 for g in grad_sequence(1)[0][:2]]
    gs[1][0] = math.inf
    _set_grads(ps, gs)
    opt.step()
    assert opt.stats()["skipped"].item() == 1


# ---------------------------------------------------------------- 6. all or nothing
def test_a_step_that_raises_changes_nothing():
    f = torch.nn.Parameter(torch.ones(3))
    i = torch.zeros(3, dtype=torch.int64)
    i.grad = torch.ones(3, dtype=torch.int64)
    f.grad = torch.ones(3)
    opt = SuperLevelSGD([{"params": [f]}, {"params": [i]}], lr=0.1)
    with pytest.raises(TypeError, match="int64"):
        opt.step()
    assert torch.equal(f.detach(), torch.ones(3))
    assert opt.stats()["step"].item() == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fused_true_on_cpu_half_floats_trains_through_foreach_with_a_warning(dtype):
    # torch's CPU fused kernel leaves these unchanged (0 of 90000 weights moved before).
    torch.manual_seed(0)
    fused, plain = torch.nn.Linear(300, 300).to(dtype), torch.nn.Linear(300, 300).to(dtype)
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(8, 300).to(dtype)
    opt_f = SuperLevelSGD(fused.parameters(), lr=0.1, momentum=0.9, fused=True)
    opt_p = SuperLevelSGD(plain.parameters(), lr=0.1, momentum=0.9, foreach=True)
    before = fused.weight.detach().clone()
    for _ in range(2):
        for m, o in ((fused, opt_f), (plain, opt_p)):
            o.zero_grad()
            m(x).float().square().mean().backward()
        with pytest.warns(RuntimeWarning, match=rf"{dtype}.*foreach path"):
            opt_f.step()
        opt_p.step()
    changed = (fused.weight != before).float().mean().item()
    assert changed > 0.5, changed  # before: 0 (bfloat16 rounds more small updates away)
    for p, q in zip(fused.parameters(), plain.parameters(), strict=True):
        assert torch.equal(p, q)


def test_fused_group_that_cannot_run_stops_the_step_before_other_groups():
    a = torch.nn.Parameter(torch.ones(3))
    c = torch.zeros(3, dtype=torch.complex64, requires_grad=True)
    a.grad, c.grad = torch.ones(3), torch.ones_like(c)
    opt = SuperLevelSGD([{"params": [a]}, {"params": [c], "fused": True}], lr=0.1)
    with pytest.raises(RuntimeError, match="complex64"):
        opt.step()
    assert torch.equal(a.detach(), torch.ones(3))


# ---------------------------------------------------------------- 7. arguments
@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"lr": "0.1"}, TypeError),
        ({"lr": None}, TypeError),
        ({"lr": [0.1]}, TypeError),
        ({"lr": 0.1 + 0j}, TypeError),
        ({"lr": True}, TypeError),
        ({"decay": None}, TypeError),
        ({"momentum": "0.9"}, TypeError),
        ({"weight_decay": False}, TypeError),
        ({"norm_scale": "1"}, TypeError),
        ({"nesterov": "no"}, TypeError),
        ({"maximize": "no"}, TypeError),
        ({"capturable": 1}, TypeError),
        ({"foreach": "yes"}, TypeError),
        ({"fused": 0}, TypeError),
        ({"weight_decay": 1e308}, ValueError),
        ({"lr": 1e308}, ValueError),
        ({"lr": 2.0, "weight_decay": 0.6}, ValueError),
        ({"min_lr": math.inf}, ValueError),
    ],
)
def test_bad_arguments_are_refused_at_construction_by_name(kwargs, error):
    with pytest.raises(error) as info:
        SuperLevelSGD(_params(), **kwargs)
    name = [k for k in kwargs if k != "lr"][0] if len(kwargs) > 1 else next(iter(kwargs))
    assert name in str(info.value) and repr(kwargs[name]) in str(info.value)


def test_bad_value_set_in_param_groups_is_refused_at_step():
    ps = _params()
    opt = SuperLevelSGD(ps, lr=0.1)
    _set_grads(ps, grad_sequence(1)[0][:2])
    opt.param_groups[0]["maximize"] = "no"
    with pytest.raises(TypeError, match="maximize"):
        opt.step()


# ---------------------------------------------------------------- 8. per-group paths
def test_per_group_foreach_and_fused_equal_reference(flag_mode):
    groups = [
        {"params": [0], "foreach": False},
        {"params": [1], "fused": True, "momentum": 0.9},
        {"params": [2, 3], "foreach": True, "maximize": True},
        {"params": [], "foreach": None, "fused": None},  # equal to the default: accepted
    ]
    seq = grad_sequence(5, inf_at=(2,))
    fast, ref = init_params(), init_params()

    def build(ps):
        return [{**g, "params": [ps[i] for i in g["params"]]} for g in groups]

    opt = SuperLevelSGD(build(fast), lr=0.3, decay=0.1)
    ref_opt = ReferenceSuperLevelSGD(
        [{k: v for k, v in g.items() if k not in ("foreach", "fused")} for g in build(ref)],
        lr=0.3,
        decay=0.1,
    )
    for gs in seq:
        _set_grads(fast, gs)
        _set_grads(ref, gs)
        opt.step()
        ref_opt.step()
    for p, q in zip(fast, ref, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-13, atol=1e-14)


# ---------------------------------------------------------------- what torch users rely on
def test_paths_agree_in_float32(flag_mode):
    kw = dict(lr=0.4, decay=0.1, momentum=0.9, weight_decay=0.05)
    seq = grad_sequence(4, dtype=torch.float32)
    results = {}
    for path, flags in PATHS.items():
        ps = _params(4, dtype=torch.float32)
        opt = SuperLevelSGD(ps, **kw, **flags)
        for gs in seq:
            _set_grads(ps, gs)
            opt.step()
        results[path] = ps
    for path in ("foreach", "fused"):
        for p, q in zip(results["single"], results[path], strict=True):
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_tensor_lr_changed_in_place_over_steps_equals_reference():
    lr = torch.tensor(0.4, dtype=torch.float64)
    fast, ref = _params(), [p.detach().clone() for p in _params()]
    opt = SuperLevelSGD(fast, lr=lr, decay=0.1)
    ref_opt = ReferenceSuperLevelSGD(ref, lr=0.4, decay=0.1)
    for k, gs in enumerate(grad_sequence(4)):
        lr.fill_(0.4 / (k + 1))
        ref_opt.param_groups[0]["lr"] = 0.4 / (k + 1)
        _set_grads(fast, gs[:2])
        _set_grads(ref, gs[:2])
        opt.step()
        ref_opt.step()
    for p, q in zip(fast, ref, strict=True):
        torch.testing.assert_close(p.detach(), q, rtol=1e-13, atol=1e-14)


def test_step_hooks_run_around_the_step():
    ps = _params()
    opt = SuperLevelSGD(ps, lr=0.1)
    seen = []
    opt.register_step_pre_hook(lambda o, a, k: seen.append(("pre", o.stats()["step"].item())))
    opt.register_step_post_hook(lambda o, a, k: seen.append(("post", o.stats()["step"].item())))
    _set_grads(ps, grad_sequence(1)[0][:2])
    opt.step()
    assert seen == [("pre", 0), ("post", 1)]


# ---------------------------------------------------------------- CUDA graph helper
def test_capture_step_refuses_what_a_replay_cannot_do():
    from superlevel.optim import capture_step

    p = torch.nn.Parameter(torch.ones(3))
    for not_an_optimizer in (None, torch.nn.Linear(2, 2)):  # was an AttributeError
        with pytest.raises(TypeError, match="torch.optim.Optimizer, got"):
            capture_step(not_an_optimizer)
    with pytest.raises(ValueError, match="capturable=True"):
        capture_step(SuperLevelSGD([p], lr=0.1))
    with pytest.raises(ValueError, match="capturable=True needs params on an accelerator"):
        SuperLevelSGD([p], lr=torch.tensor(0.1), capturable=True)  # refused where it is set
    edited = SuperLevelSGD([p], lr=torch.tensor(0.1))
    edited.param_groups[0]["capturable"] = True  # set afterwards: capture_step checks again
    with pytest.raises(ValueError, match=r"CUDA tensors .*\['cpu'\]"):
        capture_step(edited)
    with pytest.raises(ValueError, match="warmup must be an int >= 0"):
        capture_step(edited, warmup=-1)
    assert torch.equal(p, torch.ones(3)) and p.grad is None  # refused before any step ran


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_capture_step_replays_equal_eager_steps():
    from superlevel.optim import capture_step

    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(64, device="cuda")) for _ in range(3)]
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    lr = torch.tensor(0.2, device="cuda")
    graphed = SuperLevelSGD(ps, lr=lr, momentum=0.9, capturable=True)
    eager = SuperLevelSGD(qs, lr=0.2, momentum=0.9)
    grads = [[torch.randn(64, device="cuda") for _ in ps] for _ in range(5)]
    for p, q, g in zip(ps, qs, grads[0], strict=True):
        p.grad, q.grad = g.clone(), g.clone()
    replay = capture_step(graphed)  # the warm-up is the first step
    eager.step()
    for gs in grads[1:]:
        for p, q, g in zip(ps, qs, gs, strict=True):
            p.grad.copy_(g)
            q.grad = g.clone()
        replay()
        eager.step()
    for p, q in zip(ps, qs, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
