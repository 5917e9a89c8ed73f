"""What docs/integrations.md says about lr schedulers on top of SuperLevelSGD."""

from __future__ import annotations

import math

import pytest
import torch

from superlevel.optim import SuperLevelSGD


def _step(opt, w):
    opt.zero_grad()
    (w * w).sum().backward()
    opt.step()
    return float(opt.stats()["lr"])


def test_a_scheduler_rescales_a0_and_min_lr_floors_the_product():
    w = torch.ones(2, requires_grad=True)
    opt = SuperLevelSGD([w], lr=0.4, decay=0.1, min_lr=0.05)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.1, patience=0)
    assert _step(opt, w) == pytest.approx(0.4)  # t = 0
    plateau.step(1.0)
    plateau.step(1.0)  # no improvement: group lr 0.4 -> 0.04
    assert opt.param_groups[0]["lr"] == pytest.approx(0.04)
    # a_t = max(0.04 * exp(-0.1), 0.05): the floor wins, the plateau cut has no effect
    assert _step(opt, w) == pytest.approx(0.05)
    no_floor = SuperLevelSGD([w], lr=0.04, decay=0.1)
    no_floor.param_groups[0]["step"] = torch.tensor(1.0)
    assert _step(no_floor, w) == pytest.approx(0.04 * math.exp(-0.1))


def test_swalr_is_overridden_by_the_floor():
    w = torch.ones(2, requires_grad=True)
    opt = SuperLevelSGD([w], lr=0.5, decay=0.0, min_lr=0.1)
    swa = torch.optim.swa_utils.SWALR(opt, swa_lr=0.01, anneal_epochs=1)
    swa.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
    assert _step(opt, w) == pytest.approx(0.1)  # SWALR asked for 0.01
