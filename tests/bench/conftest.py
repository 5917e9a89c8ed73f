"""Fixtures shared by the harness tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest


@pytest.fixture
def foreign_db(tmp_path: Path) -> tuple[Path, bytes]:
    """Another application's SQLite file with a table called ``runs``, and its bytes."""
    path = tmp_path / "jogging.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, km REAL)")
    con.execute("INSERT INTO runs(km) VALUES (5.0)")
    con.commit()
    con.close()
    return path, path.read_bytes()
