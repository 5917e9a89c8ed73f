"""norm_in_backward: every fallback case equals the reference (float64, 1e-13), the cached
norm is the norm it replaces, the fast step reads nothing on the host, hooks go away."""

from __future__ import annotations

import copy
import gc
import math

import pytest
import torch
from torch import nn

from superlevel.optim import ReferenceSuperLevelSGD, SuperLevelSGD, norm_in_backward
from superlevel.optim import backward_norm as bn

from . import backward_norm_worker as worker
from .helpers import PATHS, HostReads
from .test_fsdp import dist, run_torchrun

KW = worker.KWARGS
STEPS = worker.STEPS


def _loss(model, x, y, scale=1.0):
    return scale * nn.functional.mse_loss(model(x), y)


class Twins:
    """A hooked SuperLevelSGD and the float64 reference on twin models, fed alike."""

    def __init__(self, path, dtype=torch.float64, hooked=True, **kw):
        self.fast, self.slow = worker.make_model(dtype), worker.make_model(torch.float64)
        kw = {**KW, **kw}
        self.opt = SuperLevelSGD(self.fast.parameters(), **kw, **PATHS[path])
        self.ref = ReferenceSuperLevelSGD(list(self.slow.parameters()), **kw)
        self.handle = norm_in_backward(self.opt) if hooked else None

    def backward(self, x, y, *, zero=True, set_to_none=True):
        for m in (self.fast, self.slow):
            if zero:
                m.zero_grad(set_to_none=set_to_none)
            _loss(m, x.to(next(m.parameters()).dtype), y.to(next(m.parameters()).dtype)).backward()

    def edit(self, fn):
        fn(self.fast)
        fn(self.slow)

    def step(self):
        self.opt.step()
        self.ref.step()

    def assert_equal_to_reference(self, rtol=1e-13):
        for p, q in zip(self.fast.parameters(), self.slow.parameters(), strict=True):
            torch.testing.assert_close(p.detach().double(), q.detach(), rtol=rtol, atol=rtol)
        s = self.opt.stats()
        assert s["grad_norm"].item() == pytest.approx(self.ref.last_norm, rel=rtol)
        assert (s["step"].item(), s["skipped"].item()) == (self.ref.t, self.ref.skipped)


def _host(flag_mode) -> bool:
    return flag_mode == "host-flag"


def _expect(handle, flag_mode, *, cached, **reasons):
    """Counters after a run of ``cached`` clean steps and ``reasons`` fallbacks.

    With device scalars (``select``) float64 shares cannot be taken: every step falls
    back, as WIDE or, where a gradient before the first float64 one was edited, as that.
    """
    want = {k: v for k, v in reasons.items() if v}
    steps = cached + sum(want.values())
    if _host(flag_mode):
        assert (handle.cached, dict(handle.reasons)) == (cached, want), handle
    else:
        assert handle.cached == 0, handle
        assert set(handle.reasons) <= {bn.WIDE, *want}, handle
    assert handle.fallbacks == sum(handle.reasons.values()) == steps - handle.cached


# ---------------------------------------------------------------- the fast case
@pytest.mark.parametrize("set_to_none", [True, False])
@pytest.mark.parametrize("path", list(PATHS))
def test_plain_loop_uses_the_shares_and_equals_the_reference(path, set_to_none, flag_mode):
    t = Twins(path)
    for x, y in worker.batches():
        t.backward(x, y, set_to_none=set_to_none)
        t.step()
    t.assert_equal_to_reference()
    _expect(t.handle, flag_mode, cached=STEPS)
    assert t.handle.last == (None if _host(flag_mode) else bn.WIDE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("path", list(PATHS))
def test_cached_norm_is_bitwise_the_norm_it_replaces(path, dtype, flag_mode):
    # float32 with device scalars is the accelerator's fast case (float64 shares there
    # would need the overflow-free fallback, which reads the gradients).
    runs = []
    for hooked in (True, False):
        t = Twins(path, dtype=dtype, hooked=hooked)
        norms = []
        for x, y in worker.batches():
            t.backward(x, y)
            t.opt.step()
            norms.append(t.opt.stats()["grad_norm"])
        runs.append(([p.detach().clone() for p in t.fast.parameters()], norms, t.handle))
    (p_hooked, n_hooked, handle), (p_plain, n_plain, _) = runs
    assert all(torch.equal(a, b) for a, b in zip(p_hooked, p_plain, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(n_hooked, n_plain, strict=True))
    wide_fallback = dtype == torch.float64 and not _host(flag_mode)
    assert handle.cached == (0 if wide_fallback else STEPS), handle


def test_fast_step_reads_nothing_on_the_host(monkeypatch):
    # Device scalars forced on CPU (what accelerators run): the cached step, a fallback
    # step and stats() make no op that reads a value on the host.
    from superlevel.optim import functional

    monkeypatch.setattr(functional, "host_scalars", lambda devices, lrs=(): False)
    for path in PATHS:
        t = Twins(path, dtype=torch.float32)
        for i, (x, y) in enumerate(worker.batches()):
            t.backward(x, y)
            if i == 2:
                t.edit(lambda m: m[0].weight.grad.mul_(0.5))  # a fallback step
            with HostReads() as reads:
                t.opt.step()
                t.opt.stats()
            assert reads.ops == [], (path, i, reads.ops)
        assert (t.handle.cached, dict(t.handle.reasons)) == (STEPS - 1, {bn.EDITED: 1}), path
    with HostReads() as reads:  # the checker sees a host read
        float(torch.ones(2).sum())
    assert reads.ops == ["aten._local_scalar_dense"]


# ---------------------------------------------------------------- fallback cases
@pytest.mark.parametrize("path", list(PATHS))
def test_gradient_accumulation_over_several_backwards(path, flag_mode):
    t = Twins(path)
    batches = worker.batches(3 * STEPS)
    for i in range(STEPS):
        for j, (x, y) in enumerate(batches[3 * i : 3 * i + 3]):
            t.backward(x, y, zero=j == 0)
        t.step()
    t.assert_equal_to_reference()
    _expect(t.handle, flag_mode, cached=STEPS)  # each slot holds the accumulated share


@pytest.mark.parametrize("path", list(PATHS))
def test_grad_scaler_falls_back_and_equals_unscaled_training(path, flag_mode):
    t = Twins(path)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1000)
    inf_at = 2
    for i, (x, y) in enumerate(worker.batches()):
        t.fast.zero_grad()
        scaler.scale(_loss(t.fast, x, y)).backward()
        if i == inf_at:  # the scaler skips this step: no optimizer step at all
            t.fast[0].weight.grad[0, 0] = math.inf
        else:
            t.slow.zero_grad()
            _loss(t.slow, x, y).backward()  # power-of-two scaling: the same gradients
            t.ref.step()
        scaler.step(t.opt)
        scaler.update()
    t.assert_equal_to_reference()
    _expect(t.handle, flag_mode, cached=0, **{bn.GRAD_SCALER: STEPS - 1})


def test_grad_scaler_unscale_is_invisible_to_the_version_counter():
    # Why the GradScaler is detected by its frame, not by the gradients: if this fails,
    # torch now bumps the version in unscale_ and the frame check may go.
    p = nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 4.0)
    version = p.grad._version
    torch._amp_foreach_non_finite_check_and_unscale_([p.grad], torch.zeros(1), torch.tensor(0.5))
    assert p.grad.tolist() == [2.0, 2.0, 2.0] and p.grad._version == version


def test_disabled_grad_scaler_keeps_the_shares():
    t = Twins("foreach")
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    for x, y in worker.batches():
        t.backward(x, y)
        scaler.step(t.opt)
        t.ref.step()
    t.assert_equal_to_reference()
    assert (t.handle.cached, t.handle.fallbacks) == (STEPS, 0)


@pytest.mark.parametrize("path", list(PATHS))
def test_clip_grad_norm_before_step(path, flag_mode):
    t = Twins(path)
    for x, y in worker.batches():
        t.backward(x, y)
        t.edit(lambda m: nn.utils.clip_grad_norm_(m.parameters(), 0.05))
        t.step()
    t.assert_equal_to_reference()
    _expect(t.handle, flag_mode, cached=0, **{bn.EDITED: STEPS})


EDITS = {  # name: (edit of a model after backward, the reason it falls back)
    "in place": (lambda m: m[2].bias.grad.mul_(3.0), bn.EDITED),
    "replaced": (lambda m: setattr(m[2].bias, "grad", m[2].bias.grad * 3.0), bn.REPLACED),
    "zeroed": (lambda m: m[0].weight.grad.zero_(), bn.EDITED),
    "set by hand": (
        lambda m: setattr(m[0].bias, "grad", torch.arange(7, dtype=torch.float64) / 7),
        bn.REPLACED,
    ),
}


@pytest.mark.parametrize("edit", list(EDITS))
@pytest.mark.parametrize("path", list(PATHS))
def test_manual_edits_after_backward(path, edit, flag_mode):
    fn, reason = EDITS[edit]
    t = Twins(path)
    for i, (x, y) in enumerate(worker.batches()):
        t.backward(x, y)
        if i % 2:
            t.edit(fn)
        t.step()
    t.assert_equal_to_reference()
    _expect(t.handle, flag_mode, cached=STEPS // 2, **{reason: STEPS // 2})


def test_gradients_set_without_a_backward_fall_back():
    t = Twins("foreach")
    gen = torch.Generator().manual_seed(3)
    for _ in range(2):
        for p, q in zip(t.fast.parameters(), t.slow.parameters(), strict=True):
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            q.grad = p.grad.clone()
        t.step()
    t.assert_equal_to_reference()
    assert dict(t.handle.reasons) == {bn.NO_HOOK: 2}


def test_edits_through_data_are_not_seen():
    # The documented limit: torch gives .data its own version counter, so an edit through
    # it is invisible; the step uses the share of the gradient as backward left it.
    t = Twins("foreach")
    x, y = worker.batches(1)[0]
    t.backward(x, y)
    want = math.sqrt(sum(float(p.grad.square().sum()) for p in t.fast.parameters()))
    t.fast[0].weight.grad.data.mul_(2.0)
    t.opt.step()
    assert t.handle.cached == 1
    assert t.opt.stats()["grad_norm"].item() == pytest.approx(want, rel=1e-14)


@pytest.mark.parametrize("set_to_none", [True, False])
@pytest.mark.parametrize("path", list(PATHS))
def test_zero_grad_with_a_param_left_out_of_backward(path, set_to_none, flag_mode):
    t = Twins(path)
    for i, (x, y) in enumerate(worker.batches()):
        for m in (t.fast, t.slow):
            m.zero_grad(set_to_none=set_to_none)
            if i < 2:
                _loss(m, x, y).backward()
            else:  # the first layer's bias takes no part: its gradient stays as zeroed
                m[2](torch.tanh(x @ m[0].weight.T)).square().mean().backward()
        t.step()
    t.assert_equal_to_reference()
    if set_to_none:  # no gradient: the param sits the step out, the rest is cached
        _expect(t.handle, flag_mode, cached=STEPS)
    else:  # a zeroed gradient no hook saw since
        _expect(t.handle, flag_mode, cached=2, **{bn.EDITED: 2})


@pytest.mark.parametrize("path", list(PATHS))
def test_params_without_gradients(path, flag_mode):
    t = Twins(path)
    for m in (t.fast, t.slow):
        m[2].bias.requires_grad_(False)  # frozen: never a gradient, never hooked
    for i, (x, y) in enumerate(worker.batches()):
        for m in (t.fast, t.slow):
            m.zero_grad()
            out = m[0](x) if i % 2 else m(x)  # odd steps: the last layer has no gradient
            (out.square().mean() if i % 2 else _loss(m, x, y)).backward()
        t.step()
    t.assert_equal_to_reference()
    _expect(t.handle, flag_mode, cached=STEPS)


@pytest.mark.parametrize("path", list(PATHS))
def test_cast_after_construction(path, flag_mode):
    kw = dict(lr=0.3, decay=0.2, momentum=0.9, weight_decay=0.05)
    fast = worker.make_model(torch.float32)
    opt = SuperLevelSGD(fast.parameters(), **kw, **PATHS[path])
    handle = norm_in_backward(opt)
    x, y = worker.batches(1, torch.float32)[0]
    _loss(fast, x, y).backward()
    opt.step()
    slow = copy.deepcopy(fast).double()
    ref = ReferenceSuperLevelSGD(list(slow.parameters()), **kw)
    ref.t = 1
    for p, q in zip(fast.parameters(), slow.parameters(), strict=True):
        ref.buffers[id(q)] = opt.state[p]["momentum_buffer"].double().clone()
    fast.double()  # after construction and after the hooks: they stay on the params
    for x, y in worker.batches(3, seed=2):
        for m in (fast, slow):
            m.zero_grad()
            _loss(m, x, y).backward()
        opt.step()
        ref.step()
    for p, q in zip(fast.parameters(), slow.parameters(), strict=True):
        assert p.dtype == torch.float64
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-13, atol=1e-14)
    # With device scalars the float32 step is cached, the float64 ones cannot be.
    want = (4, {}) if _host(flag_mode) else (1, {bn.WIDE: 3})
    assert (handle.cached, dict(handle.reasons)) == want, handle


@pytest.mark.parametrize("path", list(PATHS))
def test_cast_between_backward_and_step(path, flag_mode):
    # module.double() swaps each gradient's data without a version change: caught by
    # its storage, and the step takes the norm of the cast gradients.
    t = Twins(path, dtype=torch.float32)
    for i, (x, y) in enumerate(worker.batches()):
        t.backward(x, y)
        if i == 1:
            t.fast.double()
            # the reference continues from the fast model's exact state
            for p, q in zip(t.fast.parameters(), t.slow.parameters(), strict=True):
                q.data.copy_(p.data)
                q.grad = p.grad.clone()
                t.ref.buffers[id(q)] = t.opt.state[p]["momentum_buffer"].double().clone()
        t.step()
    for p, q in zip(t.fast.parameters(), t.slow.parameters(), strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-13, atol=1e-14)
    assert t.handle.reasons[bn.MOVED] == 1, t.handle


@pytest.mark.parametrize("path", list(PATHS))
def test_state_dict_round_trip(path, flag_mode):
    t = Twins(path)
    batches = worker.batches(2 * STEPS)
    for x, y in batches[:STEPS]:
        t.backward(x, y)
        t.step()
    saved = copy.deepcopy(t.opt.state_dict())
    plain = Twins(path, hooked=False)  # the hooks add nothing to the state dict
    for x, y in batches[:STEPS]:
        plain.backward(x, y)
        plain.opt.step()
    unhooked = plain.opt.state_dict()
    assert saved["param_groups"] == unhooked["param_groups"]
    assert saved["state"].keys() == unhooked["state"].keys()
    for k, entry in saved["state"].items():
        assert torch.equal(entry["momentum_buffer"], unhooked["state"][k]["momentum_buffer"])
    # Resume in a new optimizer with its own hooks, and keep the old one going.
    model = copy.deepcopy(t.fast)
    resumed = SuperLevelSGD(model.parameters(), **KW, **PATHS[path])
    resumed.load_state_dict(saved)
    handle = norm_in_backward(resumed)
    t.opt.load_state_dict(copy.deepcopy(saved))  # loading keeps the hooks working
    for x, y in batches[STEPS:]:
        t.backward(x, y)
        model.zero_grad()
        _loss(model, x, y).backward()
        resumed.step()
        t.step()
    t.assert_equal_to_reference()
    for p, q in zip(model.parameters(), t.fast.parameters(), strict=True):
        assert torch.equal(p, q)
    _expect(t.handle, flag_mode, cached=2 * STEPS)
    _expect(handle, flag_mode, cached=STEPS)


def test_param_group_added_later_is_hooked_from_the_next_step():
    t = Twins("foreach")
    extra_fast = nn.Parameter(torch.ones(4, dtype=torch.float64))
    extra_slow = nn.Parameter(torch.ones(4, dtype=torch.float64))
    t.opt.add_param_group({"params": [extra_fast]})
    t.ref.param_groups.append({**t.ref.param_groups[0], "params": [extra_slow]})
    for x, y in worker.batches():
        t.backward(x, y)
        for e in (extra_fast, extra_slow):
            e.grad = None
            (e * x[0, :4]).sum().backward()
        t.step()
    t.assert_equal_to_reference()
    assert (t.handle.cached, dict(t.handle.reasons)) == (STEPS - 1, {bn.NO_HOOK: 1})


def test_nonfinite_and_huge_gradients_with_the_shares(flag_mode):
    # A nan gradient skips the step (as without hooks); a huge finite float32 gradient
    # overflows the float32 squares on the host, and the overflow-free norm is taken.
    t = Twins("foreach")
    for i, (x, y) in enumerate(worker.batches()):
        if i == 1:
            x = x.clone()
            x[0, 0] = math.nan
        t.backward(x, y)
        t.step()
    t.assert_equal_to_reference()
    assert t.ref.skipped == 1
    p = nn.Parameter(torch.zeros(3))
    opt = SuperLevelSGD([p], lr=1.0)
    handle = norm_in_backward(opt)
    (p * torch.tensor([3e19, 4e19, 0.0])).sum().backward()
    opt.step()
    assert opt.stats()["grad_norm"].item() == pytest.approx(5e19, rel=1e-6)
    assert opt.stats()["skipped"].item() == 0
    assert handle.cached == 1


# ---------------------------------------------------------------- two processes (gloo)
@pytest.fixture(scope="module")
def distributed(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("backward_norm") / "result.pt"
    run_torchrun(worker.__file__, out)
    return torch.load(out)


def _reference() -> tuple[list[torch.Tensor], list[float]]:
    """The reference on one process and the full batches: params and norms."""
    model = worker.make_model()
    ref = ReferenceSuperLevelSGD(list(model.parameters()), **worker.KWARGS)
    norms = []
    for x, y in worker.batches():
        model.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        ref.step()
        norms.append(ref.last_norm)
    return [p.detach() for p in model.parameters()], norms


def _assert_equal_to_reference(got: dict) -> None:
    params, norms = _reference()
    torch.testing.assert_close(torch.tensor(got["norms"]), torch.tensor(norms), rtol=1e-13, atol=0)
    for p, q in zip(got["params"], params, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-13, atol=1e-14)


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo")
@pytest.mark.parametrize("setup", ["ddp", "ddp-bucket-view"])
def test_ddp_falls_back_and_equals_one_process(distributed, setup):
    # DDP writes the averaged gradients after the hooks: every step falls back, and the
    # per-gradient checks alone would have refused each step too (a copy into the
    # gradient, a gradient replaced by or living in a bucket view).
    got = distributed[setup]
    assert (got["cached"], got["reasons"]) == (0, {bn.DISTRIBUTED: worker.STEPS})
    assert all(why in (bn.EDITED, bn.REPLACED, bn.VIEW) for why in got["own_checks"]), got
    _assert_equal_to_reference(got)


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo")
def test_fsdp2_falls_back_and_equals_one_process(distributed):
    # FSDP2's sharded DTensor params are not hooked (FSDP2 sets their gradients itself).
    got = distributed["fsdp2"]
    assert (got["cached"], got["reasons"]) == (0, {bn.DTENSOR: worker.STEPS})
    _assert_equal_to_reference(got)


def test_one_process_uses_the_shares_and_equals_the_reference():
    # The workers' training loop on one process: cached, and the same reference.
    model = worker.make_model()
    opt = SuperLevelSGD(model.parameters(), **worker.KWARGS)
    got = worker.train(model, opt, worker.batches())
    assert (got["cached"], got["own_checks"]) == (worker.STEPS, [""] * worker.STEPS)
    _assert_equal_to_reference({**got, "params": [p.detach() for p in model.parameters()]})


# ---------------------------------------------------------------- attaching and removing
def test_hooks_go_with_the_optimizer_and_with_remove():
    model = worker.make_model()
    params = list(model.parameters())

    def hooks():
        return sum(len(p._post_accumulate_grad_hooks or {}) for p in params)

    opt = SuperLevelSGD(params)
    handle = norm_in_backward(opt)
    assert hooks() == len(params) and handle.attached
    del opt
    gc.collect()
    assert hooks() == 0 and not handle.attached  # even though the handle is still held

    opt = SuperLevelSGD(params)
    handle = norm_in_backward(opt)
    handle.remove()
    handle.remove()  # twice is fine
    assert hooks() == 0 and bn.attached(opt) is None
    x, y = worker.batches(1)[0]
    _loss(model, x, y).backward()
    opt.step()  # plain step again, not counted
    assert (handle.cached, handle.fallbacks) == (0, 0)

    with norm_in_backward(opt) as handle:  # attach again, removed on leaving the block
        assert hooks() == len(params) and bn.attached(opt) is handle
    assert hooks() == 0 and bn.attached(opt) is None


def test_hooks_do_not_keep_the_optimizer_alive():
    import weakref

    model = worker.make_model()
    opt = SuperLevelSGD(model.parameters())
    norm_in_backward(opt)
    x, y = worker.batches(1)[0]
    _loss(model, x, y).backward()
    opt.step()
    ref = weakref.ref(opt)
    del opt
    gc.collect()
    assert ref() is None
    _loss(model, x, y).backward()  # the hooks are gone: backward runs as before


def test_attaching_is_checked():
    opt = SuperLevelSGD(worker.make_model().parameters())
    norm_in_backward(opt)
    with pytest.raises(ValueError, match="attached to this optimizer already"):
        norm_in_backward(opt)
    with pytest.raises(TypeError, match="needs a SuperLevelSGD, got SGD"):
        norm_in_backward(torch.optim.SGD(worker.make_model().parameters(), lr=0.1))


@pytest.mark.slow
def test_compiled_step_takes_the_norm_itself():
    model, twin = worker.make_model(torch.float32), worker.make_model(torch.float32)
    opt = SuperLevelSGD(model.parameters(), **KW)
    eager = SuperLevelSGD(twin.parameters(), **KW, foreach=True)
    handle = norm_in_backward(opt)

    @torch.compile(fullgraph=True)
    def step():
        opt.step()

    for x, y in worker.batches(3, torch.float32):
        for m in (model, twin):
            m.zero_grad()
            _loss(m, x, y).backward()
        step()
        eager.step()
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    assert (handle.cached, handle.fallbacks) == (0, 0)  # compiled steps are not counted
