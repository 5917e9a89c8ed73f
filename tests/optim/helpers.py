"""Shared helpers: run the fast optimizer and the reference on the same gradients."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from superlevel.optim import ReferenceSuperLevelSGD, SuperLevelSGD

PATHS = {"single": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
SHAPES = [(3, 4), (5,), (2, 2, 2), (7,)]


def grad_sequence(steps, shapes=SHAPES, dtype=torch.float64, seed=0, inf_at=(), none_at=()):
    """One gradient per param per step; inf at ``inf_at`` steps, None at ``none_at`` (step, i)."""
    gen = torch.Generator().manual_seed(seed)
    seq = []
    for s in range(steps):
        gs = [torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype) for shape in shapes]
        if s in inf_at:
            gs[1].view(-1)[2] = float("inf")
        for step, i in none_at:
            if step == s:
                gs[i] = None
        seq.append(gs)
    return seq


def init_params(shapes=SHAPES, dtype=torch.float64, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in shapes]


def run_pair(kwargs, path, seq, dtype=torch.float64, groups=None):
    """Step SuperLevelSGD(path) and the reference through ``seq``; return both optimizers+params."""
    fast = [p.clone() for p in init_params(dtype=dtype)]
    ref = [p.clone() for p in init_params(dtype=dtype)]

    def build(ps):
        if groups is None:
            return ps
        return [{**g, "params": [ps[i] for i in g["params"]]} for g in groups]

    opt = SuperLevelSGD(build(fast), **kwargs, **PATHS[path])
    ref_opt = ReferenceSuperLevelSGD(build(ref), **kwargs)
    for gs in seq:
        for p, q, g in zip(fast, ref, gs, strict=True):
            p.grad = None if g is None else g.clone()
            q.grad = None if g is None else g.clone()
        opt.step()
        ref_opt.step()
    return opt, fast, ref_opt, ref


# Ops that read a tensor's value on the host: on an accelerator each is a device sync.
# (.item(), float(t), bool(t), `if t` all end in _local_scalar_dense.)
_SYNC_OPS = (
    "aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten.equal",
    "aten._unique2", "aten.unique_consecutive",
)  # fmt: skip


class HostReads(TorchDispatchMode):
    """Records every op that reads a tensor's value on the host (the CPU stand-in for
    ``torch.cuda.set_sync_debug_mode("error")``: on an accelerator each would sync).

    Usage: ``with HostReads() as reads: opt.step()``, then ``assert reads.ops == []``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if name in _SYNC_OPS:
            self.ops.append(name)
        return func(*args, **(kwargs or {}))
