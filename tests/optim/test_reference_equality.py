"""Every path (per-tensor, foreach, fused) equals the slow reference, for every flag."""

from __future__ import annotations

import itertools

import pytest
import torch

from .helpers import PATHS, grad_sequence, run_pair

MOMENTUM = [  # (momentum, dampening, nesterov)
    (0.0, 0.0, False),
    (0.9, 0.0, False),
    (0.9, 0.0, True),
    (0.8, 0.3, False),
]
SCHEDULE = [  # (lr, decay, min_lr)
    (0.3, 0.0, 0.0),
    (0.5, 0.4, 0.1),
]
CASES = [
    dict(
        lr=lr,
        decay=dec,
        min_lr=mn,
        momentum=m,
        dampening=d,
        nesterov=n,
        weight_decay=wd,
        maximize=mx,
        norm_scale=ns,
    )
    for (m, d, n), (lr, dec, mn), wd, mx, ns in itertools.product(
        MOMENTUM, SCHEDULE, [0.0, 0.1], [False, True], [1.0, 0.25]
    )
]
# Step 1 is non-finite, param 3 first gets a gradient at step 1 (a buffer created on a
# skipped step) and param 0 has none at step 3.
SEQ = dict(steps=6, inf_at=(1,), none_at=((0, 3), (3, 0)))


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("kwargs", CASES, ids=lambda k: "-".join(f"{v}" for v in k.values()))
def test_paths_equal_reference_float64(path, kwargs, flag_mode):
    opt, fast, ref_opt, ref = run_pair(kwargs, path, grad_sequence(**SEQ))
    for p, q in zip(fast, ref, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-13, atol=1e-14)
    if kwargs["momentum"]:
        for p, q in zip(fast, ref, strict=True):
            torch.testing.assert_close(
                opt.state[p]["momentum_buffer"], ref_opt.buffers[id(q)], rtol=1e-13, atol=1e-14
            )
    stats = opt.stats()
    assert stats["step"].item() == ref_opt.t == 5
    assert stats["skipped"].item() == ref_opt.skipped == 1
    assert stats["lr"].item() == pytest.approx(ref_opt.last_lr, rel=1e-13)
    assert stats["grad_norm"].item() == pytest.approx(ref_opt.last_norm, rel=1e-13)


@pytest.mark.parametrize("path", list(PATHS))
def test_paths_equal_reference_float32(path, flag_mode):
    kwargs = dict(lr=0.4, decay=0.1, momentum=0.9, nesterov=True, weight_decay=0.05)
    seq = grad_sequence(dtype=torch.float32, **SEQ)
    _, fast, _, ref = run_pair(kwargs, path, seq, dtype=torch.float32)
    for p, q in zip(fast, ref, strict=True):
        torch.testing.assert_close(p, q, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("path", list(PATHS))
def test_param_groups_share_one_norm_and_t(path, flag_mode):
    groups = [
        {"params": [0, 1], "lr": 0.5, "decay": 0.3},
        {"params": [2], "lr": 0.05, "momentum": 0.9, "weight_decay": 0.2, "maximize": True},
        {"params": [3], "min_lr": 0.2, "decay": 1.0, "momentum": 0.5, "dampening": 0.5},
    ]
    opt, fast, _, ref = run_pair({"lr": 0.3}, path, grad_sequence(**SEQ), groups=groups)
    for p, q in zip(fast, ref, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-13, atol=1e-14)
    steps = {g["step"].item() for g in opt.param_groups}
    assert steps == {5.0}


def test_paths_agree_bitwise_on_plain_sgd_float64():
    # Without momentum/decay each path computes p - (a*eta)*g with one rounding per op.
    results = []
    for path in PATHS:
        _, fast, _, _ = run_pair({"lr": 0.1}, path, grad_sequence(steps=4))
        results.append(fast)
    for other in results[1:]:
        for p, q in zip(results[0], other, strict=True):
            torch.testing.assert_close(p, q, rtol=1e-15, atol=0)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float16, 4e-3), (torch.bfloat16, 3e-2)])
# On CPU "fused" half floats take foreach (torch's CPU kernel fails its probe), with a warning.
@pytest.mark.filterwarnings("ignore:fused=True:RuntimeWarning")
def test_half_precision_paths_stay_within_rounding_of_reference(path, dtype, tol, flag_mode):
    kwargs = dict(lr=0.3, decay=0.1, momentum=0.9, weight_decay=0.05)
    seq = grad_sequence(dtype=dtype, **SEQ)
    opt, fast, _, ref = run_pair(kwargs, path, seq, dtype=dtype)
    for p, q in zip(fast, ref, strict=True):
        assert p.dtype == dtype
        torch.testing.assert_close(p.float(), q.float(), rtol=tol, atol=tol)
    assert opt.stats()["skipped"].item() == 1
