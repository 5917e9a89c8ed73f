"""Settings for the whole suite."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Generated data sets are cached in a folder of this test session, not the user's
    (worker processes started by tests inherit it)."""
    os.environ["SUPERLEVEL_CACHE"] = str(tmp_path_factory.mktemp("cache"))
