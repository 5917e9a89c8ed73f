"""The fence around torch's private APIs: fails loudly when torch changes one of them."""

from __future__ import annotations

import pytest
import torch

from superlevel.optim import SuperLevelSGD, _torch_api


def test_every_private_api_is_present():
    assert _torch_api.missing() == [], (
        "torch changed a private API SuperLevelSGD uses; the fallbacks run (slower): "
        f"{_torch_api.missing()}"
    )


def test_grouping_by_device_and_dtype_keeps_order_and_indices():
    ts = [torch.zeros(2), torch.zeros(2, dtype=torch.float64), torch.zeros(3), torch.zeros(1)]
    got = _torch_api.group_by_device_and_dtype(ts)
    cpu = torch.device("cpu")
    assert got == {(cpu, torch.float32): [0, 2, 3], (cpu, torch.float64): [1]}


def test_grouping_fallback_gives_the_same_buckets(monkeypatch):
    ts = [torch.zeros(2), torch.zeros(2, dtype=torch.float64), torch.zeros(3)]
    want = _torch_api.group_by_device_and_dtype(ts)
    monkeypatch.setattr(_torch_api, "_GROUP", None)
    assert _torch_api.group_by_device_and_dtype(ts) == want


@pytest.mark.parametrize("powsum", [True, False])
def test_foreach_sum_of_squares_is_the_sum_of_squares(monkeypatch, powsum):
    if not powsum:
        monkeypatch.setattr(_torch_api, "_POWSUM", None)
    ts = [torch.arange(4.0), torch.tensor([3.0, 4.0])]
    got = _torch_api.foreach_sum_of_squares(ts, torch.float64)
    assert [g.dtype for g in got] == [torch.float64] * 2
    assert [g.item() for g in got] == pytest.approx([14.0, 25.0], rel=1e-15)


def test_fused_sgd_takes_a_tensor_lr_and_found_inf():
    assert {"cpu", "cuda"} <= set(_torch_api.fused_devices())
    p, g = torch.ones(3, dtype=torch.float64), torch.full((3,), 2.0, dtype=torch.float64)
    kw = dict(momentum=0.0, dampening=0.0, nesterov=False, maximize=False, is_first_step=False)
    lr = torch.tensor(0.25, dtype=torch.float64)
    _torch_api.fused_sgd_([p], [g], [], lr=lr, found_inf=torch.tensor(1.0), **kw)
    assert torch.equal(p, torch.ones(3, dtype=torch.float64))  # skipped in the kernel
    _torch_api.fused_sgd_([p], [g], [], lr=lr, found_inf=torch.tensor(0.0), **kw)
    assert torch.equal(p, torch.full((3,), 0.5, dtype=torch.float64))


def test_capture_health_check_runs_outside_capture():
    opt = SuperLevelSGD([torch.nn.Parameter(torch.zeros(2))])
    _torch_api.capture_health_check(opt)  # no capture in progress: nothing to refuse


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cpu_fused_kernel_still_leaves_half_floats_unchanged(dtype):
    # torch 2.13's CPU fused SGD kernel updates only the tail of a half-float tensor
    # shorter than its vector width. When this test fails, torch fixed the kernel: drop
    # the foreach route in functional.bucket_impl (and this test).
    p, g = torch.zeros(64, dtype=dtype), torch.ones(64, dtype=dtype)
    kw = dict(momentum=0.0, dampening=0.0, nesterov=False, maximize=False, is_first_step=False)
    lr = torch.tensor(0.5, dtype=torch.float64)
    _torch_api.fused_sgd_([p], [g], [], lr=lr, found_inf=torch.zeros(()), **kw)
    assert int((p != 0).sum()) < 64, "torch's CPU fused SGD kernel updates half floats now"
    assert _torch_api.fused_sgd_updates_all("cpu", dtype) is False


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_probe_passes_where_the_kernel_works(dtype):
    assert _torch_api.fused_sgd_updates_all("cpu", dtype) is True
    assert _torch_api.fused_sgd_updates_all("cuda", dtype) is True  # trusted: no probe sync
