"""E2's per-row updates are the optimizers they stand for."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from superlevel.landscape import Himmelblau
from superlevel.optim import SuperLevelSGD
from superlevel.study import e2


def _library(fn, x0, arm, lr, steps, decay_total):
    beta = decay_total / steps
    x = x0.clone().requires_grad_(True)
    if arm == "SuperLevelSGD":
        opt = SuperLevelSGD([x], lr=lr, decay=beta)
        sched = None
    else:
        opt = torch.optim.SGD([x], lr=lr)
        gamma = 1.0 if arm == "GD" else math.exp(-beta)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=gamma)
    out = [x.detach().clone()]
    for _ in range(steps):
        opt.zero_grad()
        fn(x).backward()
        if arm == "clip + GD + decay":
            torch.nn.utils.clip_grad_norm_([x], 1.0)
        opt.step()
        if sched is not None:
            sched.step()
        out.append(x.detach().clone())
    return torch.stack(out).numpy()


@pytest.mark.parametrize("arm", e2.ARMS)
def test_rows_follow_the_library_optimizers(arm):
    fn = Himmelblau()
    x0 = e2.starts_for(fn, 3)
    pts, div = e2.trajectories(fn, x0, arm, 0.01, 25, 2.0)
    assert (div == -1).all()
    for i in range(3):
        np.testing.assert_allclose(
            pts[i], _library(fn, x0[i], arm, 0.01, 25, 2.0), rtol=1e-9, atol=1e-10
        )


def test_divergent_rows_are_frozen_and_marked():
    fn = Himmelblau()
    x0 = e2.starts_for(fn, 4)
    pts, div = e2.trajectories(fn, x0, "GD", 1.0, 10, 0.0)
    assert (div > 0).all()
    for i, d in enumerate(div):
        assert np.all(np.isfinite(pts[i]))
        np.testing.assert_array_equal(pts[i, d - 1], pts[i, -1])


def test_unknown_arm():
    with pytest.raises(ValueError, match="unknown arm"):
        e2.trajectories(Himmelblau(), torch.zeros(1, 2), "adam", 0.1, 1, 0.0)
