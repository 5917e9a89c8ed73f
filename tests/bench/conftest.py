"""Fixtures and helpers shared by the harness tests."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from superlevel.bench.store import Store

RESULT_FIELDS = (
    "status",
    "steps",
    "train_loss",
    "val_loss",
    "val_metric",
    "test_loss",
    "test_metric",
    "steps_to_target",
    "resumed_from_epoch",
)


def numbers(store: Store) -> dict[str, Any]:
    """Every number a run produced (timings aside), by run id: to compare two stores."""
    out = {}
    for r in store.runs():
        rid = r["run_id"]
        epochs = [(e["epoch"], e["split"], e["step"], e["loss"], e["metric"])
                  for e in store.epoch_metrics(rid)]  # fmt: skip
        steps = [(s["step"], s["loss"], s["grad_norm"], s["lr"], s["effective_lr"])
                 for s in store.step_metrics(rid)]  # fmt: skip
        out[rid] = ({k: r[k] for k in RESULT_FIELDS}, sorted(r["tags"]), epochs, steps)
    return out


@pytest.fixture
def store_numbers():
    """:func:`numbers` as a fixture."""
    return numbers


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


@contextmanager
def _kill_first(find: Callable[[], int | None], timeout: float = 180.0) -> Iterator[list[int]]:
    """While the body runs, ``SIGKILL`` the first pid that ``find()`` (polled) returns.

    Yields the list of killed pids (one at most), filled in by the watching thread.
    """
    killed: list[int] = []
    done = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while not done.is_set() and time.monotonic() < deadline:
            pid = find()
            if pid:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        yield killed
    finally:
        done.set()
        watcher.join()


@pytest.fixture
def kill_first():
    """:func:`_kill_first` as a fixture."""
    return _kill_first
