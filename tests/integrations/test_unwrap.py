"""The helpers see through framework wrappers; nothing imports a framework until used."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from superlevel.integrations import find_guard, find_superlevel, optimizer_chain, superlevel_stats
from superlevel.optim import SuperLevelSGD
from superlevel.stability import LyapunovGuard


def _step(opt, w, backward=None):
    opt.zero_grad()
    loss = (w * w).sum()
    (backward or (lambda x: x.backward()))(loss)
    opt.step()


def test_stats_behind_accelerates_wrapper():
    accelerate = pytest.importorskip("accelerate", reason="the accelerate extra is not installed")
    w = torch.nn.Parameter(torch.ones(3))
    model = torch.nn.Module()
    model.w = w
    opt = SuperLevelSGD([w], lr=0.5, decay=0.1)
    acc = accelerate.Accelerator(cpu=True)
    model, wrapped = acc.prepare(model, opt)
    assert type(wrapped).__name__ == "AcceleratedOptimizer"
    assert not hasattr(wrapped, "stats")  # what users hit: the wrapper hides it
    assert find_superlevel(wrapped) is opt and find_guard(wrapped) is None
    for _ in range(2):
        _step(wrapped, model.w, acc.backward)
    stats = superlevel_stats(wrapped)
    assert stats["superlevel/step"] == 2.0
    assert stats["superlevel/lr"] == pytest.approx(0.5 * torch.exp(torch.tensor(-0.1)).item())
    tensors = superlevel_stats(wrapped, "x", tensors=True)
    assert set(tensors) == {f"x/{k}" for k in opt.stats()}
    assert all(torch.is_tensor(v) and v.ndim == 0 for v in tensors.values())


def test_chain_through_lightnings_wrapper_and_the_guard():
    pytest.importorskip("lightning", reason="the lightning extra is not installed")
    from lightning.pytorch.core.optimizer import LightningOptimizer

    w = torch.ones(2, requires_grad=True)
    opt = SuperLevelSGD([w], lr=0.1)
    guard = LyapunovGuard(opt)
    lo = LightningOptimizer(guard)
    assert optimizer_chain(lo)[1:] == [guard, opt]
    assert find_guard(lo) is guard and find_superlevel(lo) is opt
    stats = superlevel_stats(lo)
    assert {"superlevel/guard_steps", "superlevel/lr"} <= set(stats)
    with pytest.raises(ValueError, match="no SuperLevelSGD"):
        superlevel_stats(torch.optim.SGD([w], lr=0.1))


def test_import_without_the_frameworks():
    code = """
import sys
for name in ("lightning", "transformers", "accelerate", "stable_baselines3"):
    sys.modules[name] = None  # as if not installed
import torch
import superlevel, superlevel.integrations as i
from superlevel.optim import SuperLevelSGD
w = torch.ones(1, requires_grad=True)
print(i.find_superlevel(SuperLevelSGD([w])) is not None)
for mod in ("lightning", "hf", "sb3"):
    try:
        __import__("superlevel.integrations." + mod)
    except ImportError as exc:
        print(str(exc).split(":")[1].strip())
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split("\n")
    assert out[:4] == [
        "True",
        "pip install 'superlevel[lightning]'",
        "pip install 'superlevel[hf]'",
        "pip install 'superlevel[rl]'",
    ]
