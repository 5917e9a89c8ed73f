"""Shared helpers: run the fast optimizer and the reference on the same gradients."""

from __future__ import annotations

import torch

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
