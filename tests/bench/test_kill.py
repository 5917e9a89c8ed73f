"""A real ``kill -9`` of the parent in the middle of a run, then the same command again.

In this process and with a worker pool: every run exactly once, the killed one resumed,
and (pool) no worker outlives its parent.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from superlevel.bench.store import Store

EPOCHS = 8


def _snapshot(db: Path) -> dict[str, tuple[str, float | None]]:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            rows = con.execute("SELECT run_id, status, finished_at FROM runs").fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return {}
    return {r[0]: (r[1], r[2]) for r in rows}


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_mid_run_then_rerun_gives_every_run_exactly_once(
    tmp_path: Path, workers: int
) -> None:
    import psutil

    db = tmp_path / "r.db"
    ckpt = tmp_path / "checkpoints"
    cmd = [
        sys.executable,
        "-m",
        "superlevel.cli",
        "bench",
        "run",
        "--task",
        "digits_mlp",
        "--optimizers",
        "sgd,adam",
        "--seeds",
        "2",
        "--epochs",
        str(EPOCHS),
        "--db",
        str(db),
        "--device",
        "cpu",
        "--quiet",
        "--workers",
        str(workers),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    killed_run = None
    children: list[psutil.Process] = []
    try:
        # Kill when one run is finished and another is part-way (it has a checkpoint).
        while time.monotonic() < deadline and proc.poll() is None:
            snap = _snapshot(db) if db.exists() else {}
            done = [k for k, (s, _) in snap.items() if s == "finished"]
            running = [p.stem for p in ckpt.glob("*.pt") if p.stem not in snap]
            if done and running:
                children = psutil.Process(proc.pid).children(recursive=True)
                os.kill(proc.pid, signal.SIGKILL)
                killed_run = running[0]
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None and killed_run is None:
            proc.kill()
        proc.wait()
    assert killed_run is not None, "the run finished or stalled before it could be killed"
    assert proc.returncode == -signal.SIGKILL
    # The pool's workers (and multiprocessing's helpers); none in process.
    assert len(children) >= workers + 1 if workers > 1 else not children
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, "a worker outlived its killed parent"
    before = _snapshot(db)
    finished_before = {k: v for k, v in before.items() if v[0] == "finished"}
    assert killed_run not in before  # only outcomes reach the store

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "4 runs" in rerun.stdout and f"{len(finished_before)} skipped" in rerun.stdout

    store = Store(db)
    runs = store.runs()
    assert len(runs) == store.count("configs") == 4
    assert sorted((r["optimizer"], r["seed"]) for r in runs) == [
        ("adam", 1),
        ("adam", 2),
        ("sgd", 1),
        ("sgd", 2),
    ]
    assert all(r["status"] == "finished" for r in runs)
    assert store.count("epoch_metrics") == 4 * (EPOCHS + 1) * 3
    for r in runs:
        assert r["steps"] == EPOCHS * (r["steps"] // EPOCHS)
        assert store.step_metrics(r["run_id"])[-1]["step"] == r["steps"]
        if r["run_id"] in finished_before:  # not redone
            assert r["finished_at"] == finished_before[r["run_id"]][1]
            assert r["resumed_from_epoch"] == 0
    assert store.get_run(killed_run)["resumed_from_epoch"] >= 1  # resumed, not restarted
    assert not list(ckpt.glob("*.pt"))
