"""Hypothesis properties of the rule (each would fail if the rule were broken)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from superlevel.optim import SuperLevelSGD

from .helpers import PATHS

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)
pos = st.floats(min_value=1e-3, max_value=10.0)


@SETTINGS
@given(
    lr=pos,
    norm_scale=pos,
    log_gscale=st.floats(min_value=-6, max_value=6),
    seed=st.integers(0, 2**16),
    path=st.sampled_from(list(PATHS)),
)
def test_step_length_is_a_times_n_over_1_plus_n_over_s_and_below_a_s(
    lr, norm_scale, log_gscale, seed, path
):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(5, generator=gen, dtype=torch.float64) for _ in range(3)]
    start = [p.clone() for p in params]
    for p in params:
        p.grad = torch.randn(5, generator=gen, dtype=torch.float64) * 10.0**log_gscale
    n = math.sqrt(sum(float((p.grad**2).sum()) for p in params))
    SuperLevelSGD(params, lr=lr, norm_scale=norm_scale, **PATHS[path]).step()
    moved = math.sqrt(sum(float(((p - q) ** 2).sum()) for p, q in zip(params, start, strict=True)))
    assert moved == pytest.approx(lr * n / (1 + n / norm_scale), rel=1e-9)
    # With the default norm_scale = 1 this is the paper's bound: step length < a_t.
    assert moved < lr * norm_scale


@SETTINGS
@given(
    lr=pos,
    decay=st.floats(min_value=0.0, max_value=2.0),
    min_frac=st.floats(min_value=0.0, max_value=1.0),
    steps=st.integers(1, 12),
)
def test_decayed_lr_is_monotone_floored_and_exact(lr, decay, min_frac, steps):
    min_lr = lr * min_frac
    p = torch.zeros(3, dtype=torch.float64)
    opt = SuperLevelSGD([p], lr=lr, decay=decay, min_lr=min_lr)
    seen = []
    for t in range(steps):
        p.grad = torch.ones_like(p)
        opt.step()
        a = opt.stats()["lr"].item()
        assert a == pytest.approx(max(lr * math.exp(-decay * t), min_lr), rel=1e-12)
        assert a >= min_lr * (1 - 1e-15)
        seen.append(a)
    assert all(b <= a for a, b in zip(seen, seen[1:], strict=False))


@SETTINGS
@given(
    skip_mask=st.lists(st.booleans(), min_size=1, max_size=10),
    decay=st.floats(min_value=0.01, max_value=1.0),
)
def test_t_counts_only_non_skipped_steps(skip_mask, decay):
    p = torch.zeros(2, dtype=torch.float64)
    opt = SuperLevelSGD([p], lr=1.0, decay=decay)
    done = 0
    for skip in skip_mask:
        p.grad = torch.tensor([float("nan") if skip else 1.0, 0.0], dtype=torch.float64)
        opt.step()
        if not skip:
            assert opt.stats()["lr"].item() == pytest.approx(math.exp(-decay * done), rel=1e-12)
            done += 1
    assert opt.stats()["step"].item() == done
    assert opt.stats()["skipped"].item() == len(skip_mask) - done
