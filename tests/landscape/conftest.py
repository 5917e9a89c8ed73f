"""Shared fixtures for the landscape tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Run on one intra-op thread: these tensors are tiny, and on a busy machine
    several threads per op cost more in contention than they gain (5x measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
