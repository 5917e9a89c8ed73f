"""Fixtures of the JAX tests (the modules themselves skip when jax is not installed)."""

from __future__ import annotations

import pytest


@pytest.fixture
def x64():
    """float64 arrays (``jax_enable_x64``) for one test, float32 again afterwards."""
    jax = pytest.importorskip("jax", reason="the JAX tests need the jax extra")
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)
