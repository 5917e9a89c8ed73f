"""Fixtures shared by the optimizer tests."""

from __future__ import annotations

import pytest

from superlevel.optim import functional


@pytest.fixture(params=["host-flag", "select"])
def flag_mode(request, monkeypatch):
    """On CPU the single/foreach paths read the norm and flag on the host; "select" forces the
    sync-free torch.where selection they use on accelerators and under torch.compile."""
    if request.param == "select":
        monkeypatch.setattr(functional, "host_scalars", lambda devices, lrs=(): False)
    return request.param
