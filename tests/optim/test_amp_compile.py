"""GradScaler training (inf steps skipped) and a torch.compile(fullgraph=True) step."""

from __future__ import annotations

import pytest
import torch

from superlevel.optim import SuperLevelSGD


def _twin_models(seed=0):
    torch.manual_seed(seed)
    a = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    b = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    b.load_state_dict(a.state_dict())
    return a, b


def _batches(n, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(16, 6, generator=gen), torch.randn(16, 3, generator=gen)) for _ in range(n)
    ]


def test_grad_scaler_skips_inf_steps_and_otherwise_matches_unscaled_training():
    scaled, plain = _twin_models()
    kw = dict(lr=0.2, decay=0.05, momentum=0.9)
    opt_s, opt_p = SuperLevelSGD(scaled.parameters(), **kw), SuperLevelSGD(plain.parameters(), **kw)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1000)
    inf_at = {2, 5}
    for i, (x, y) in enumerate(_batches(8)):
        before = [p.detach().clone() for p in scaled.parameters()]
        opt_s.zero_grad()
        loss = torch.nn.functional.mse_loss(scaled(x), y)
        scaler.scale(loss).backward()
        if i in inf_at:
            scaled[0].weight.grad[0, 0] = float("inf")
        scaler.step(opt_s)
        scale_before = scaler.get_scale()
        scaler.update()
        if i in inf_at:
            assert all(torch.equal(p, b) for p, b in zip(scaled.parameters(), before, strict=True))
            assert scaler.get_scale() == scale_before / 2
            continue
        opt_p.zero_grad()
        torch.nn.functional.mse_loss(plain(x), y).backward()
        opt_p.step()
    # Power-of-two scaling is exact, so the runs agree to rounding of the norm.
    for p, q in zip(scaled.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    assert opt_s.stats()["step"].item() == 8 - len(inf_at) == opt_p.stats()["step"].item()


@pytest.mark.slow
def test_compiled_fullgraph_step_equals_eager_foreach():
    # fullgraph=True fails on any graph break, so this also proves the step has no
    # .item()/host read. Under compile the fused kernel is replaced by the foreach path.
    compiled_model, eager_model = _twin_models()
    kw = dict(lr=0.1, decay=0.05, momentum=0.9, weight_decay=0.01)
    compiled_opt = SuperLevelSGD(compiled_model.parameters(), **kw)
    eager_opt = SuperLevelSGD(eager_model.parameters(), **kw, foreach=True)

    @torch.compile(fullgraph=True)
    def compiled_step():
        compiled_opt.step()

    for i, (x, y) in enumerate(_batches(4)):
        for m in (compiled_model, eager_model):
            m.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            if i == 2:
                m[0].weight.grad[0, 0] = float("nan")
        compiled_step()
        eager_opt.step()
        for p, q in zip(compiled_model.parameters(), eager_model.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    assert compiled_opt.stats()["step"].item() == 3
    assert compiled_opt.stats()["skipped"].item() == 1


def _scheduled(lr):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(16, 16)) for _ in range(2)]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = SuperLevelSGD(params, lr=lr, decay=1e-3, foreach=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100))
    return opt, sched


@pytest.mark.parametrize(
    ("lr", "graphs"), [(0.1, 2), (torch.tensor(0.1), 1)], ids=["float", "tensor"]
)
def test_a_changing_lr_compiles_the_step_once_or_twice_not_per_value(lr, graphs):
    # Before: checking a float lr's value while tracing broke the graph and specialized
    # it (4 graphs, 5 of 12 steps compiling); the first step's lazily created counters
    # forced a second compilation for a tensor lr too. A float is now a graph input
    # after its first change (dynamo's automatic dynamic: 2 compilations).
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()
    opt, sched = _scheduled(lr)

    @torch.compile(backend=counter)
    def step():
        opt.step()

    for _ in range(8):
        step()
        sched.step()
    assert counter.frame_count == graphs
    assert opt.stats()["step"].item() == 8


@pytest.mark.parametrize("set_lr", [False, True], ids=["step", "step+lr"])
def test_an_eager_step_after_a_compiled_one_works_on_cpu(set_lr):
    # dynamo traces every group with capturable=True and writes that back into the real
    # groups when the compiled function changes them (the first step created the
    # counters; a hand-written schedule sets group["lr"]): the next eager step on CPU
    # then refused "capturable=True". The counters now exist before, and the device
    # check of capturable runs where the user sets it.
    torch._dynamo.reset()
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(16, 16)) for _ in range(2)]
    for p in params:
        p.grad = torch.randn_like(p)
    # no scheduler: its wrapper around opt.step would break the graph before the write
    opt = SuperLevelSGD(params, lr=0.1, decay=1e-3, foreach=True)

    @torch.compile(backend="eager")
    def step():
        opt.step()
        if set_lr:
            opt.param_groups[0]["lr"] = 0.05

    step()
    if not set_lr:
        assert opt.param_groups[0]["capturable"] is False  # nothing written back
    opt.step()
    assert opt.stats()["step"].item() == 2
