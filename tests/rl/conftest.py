"""Fixtures of the RL tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Run each RL test on one thread: the networks are tiny, and on a shared CPU more
    threads only contend (a 4 s training run took minutes with two)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
