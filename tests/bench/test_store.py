"""The results store: schema, one-transaction commits, corrupted and locked databases."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from superlevel.bench.store import APPLICATION_ID, Store, StoreError

CONFIG = {
    "run_id": "r1",
    "task": "quadratic",
    "task_options": {},
    "budget": "quick",
    "epochs": 2,
    "optimizer": "sgd",
    "hparams": {"lr": 0.1},
    "seed": 1,
}
ENV = {"torch": "x", "device": "cpu"}
CODE = {"id": "c0de", "modules": {"superlevel.optim": "ab12"}, "versions": {"torch": "x"}}


def _epochs(n: int = 2) -> list[dict]:
    return [
        {"epoch": e, "step": 10 * e, "split": s, "loss": 1.0 / (e + 1), "metric": 0.5, "wall_s": e}
        for e in range(n + 1)
        for s in ("train", "val", "test")
    ]


def _record(store: Store, run_id: str = "r1", **kw) -> bool:
    return store.record_run(
        {**CONFIG, "run_id": run_id},
        status=kw.get("status", "finished"),
        summary={"steps": 20, "wall_s": 1.5, "test_metric": 0.5, "test_loss": float("inf")},
        epochs=kw.get("epochs", _epochs()),
        steps=kw.get("steps", [
            {"step": i, "loss": 1.0, "grad_norm": 2.0, "lr": 0.1, "effective_lr": 0.1}
            for i in (5, 10, 15, 20)
        ]),
        environment=ENV,
        code=kw.get("code", CODE),
        tags=kw.get("tags", ["default"]),
        replace=kw.get("replace", False),
    )  # fmt: skip


def _filled(path: Path) -> Store:
    store = Store(path)
    _record(store)
    return store


def test_round_trip_and_exactly_once(tmp_path: Path) -> None:
    store = _filled(tmp_path / "r.db")
    run = store.get_run("r1")
    assert run["status"] == "finished" and run["hparams"] == {"lr": 0.1}
    assert run["tags"] == ["default"] and run["env"] == {"torch": "x", "device": "cpu"}
    assert run["code_id"] == "c0de"
    assert store.code_info("c0de") == {k: v for k, v in CODE.items() if k != "id"}
    assert run["test_loss"] is None  # inf is not a number a CSV reader can use
    # Recording a done run again keeps the stored result (another writer was first) and
    # adds the tags; with replace (a rerun by new code) it replaces, never duplicates.
    assert not _record(store, tags=["tuned"], code={**CODE, "id": "other"})
    assert store.get_run("r1")["code_id"] == "c0de"
    assert store.get_run("r1")["tags"] == ["default", "tuned"]
    assert _record(store, code={**CODE, "id": "new"}, replace=True)
    assert store.get_run("r1")["code_id"] == "new"
    assert store.count("runs") == store.count("configs") == 1
    assert store.count("environment") == 1 and store.count("code") == 2
    assert store.count("epoch_metrics") == 9 and store.count("step_metrics") == 4
    assert [m["epoch"] for m in store.epoch_metrics("r1")][::3] == [0, 1, 2]
    assert store.get_run("nope") is None and store.status("nope") is None


def test_a_paused_run_is_replaced_by_its_continuation(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    _record(store, status="paused", epochs=_epochs(1))
    assert store.status("r1") == "paused" and store.count("epoch_metrics") == 6
    assert _record(store)  # no replace needed: a paused run is not done
    assert store.status("r1") == "finished" and store.count("epoch_metrics") == 9


def test_a_run_is_one_transaction(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    bad = _epochs()
    del bad[-1]["loss"]  # fails after some rows were inserted
    with pytest.raises(KeyError):
        _record(store, "r2", epochs=bad)
    assert store.status("r2") is None  # nothing of it: no config, no tag, no half run
    assert store.count("configs") == store.count("tags") == store.count("environment") == 0
    assert store.count("epoch_metrics") == 0 and store.count("step_metrics") == 0
    with pytest.raises(ValueError, match="status"):
        _record(store, "r2", status="crashed")


def test_a_schema_1_store_is_read_as_it_is_and_upgraded_on_write(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _filled(path).close()
    con = sqlite3.connect(path)  # make it what the first schema wrote
    con.execute("ALTER TABLE runs DROP COLUMN code_id")
    for column in ("epochs_done", "initial_val_metric", "initial_test_metric"):
        con.execute(f"ALTER TABLE runs DROP COLUMN {column}")
    con.execute("DROP TABLE code")
    con.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    con.commit()
    con.close()
    before = path.read_bytes()
    with Store(path, readonly=True) as store:
        run = store.get_run("r1")
        assert run["status"] == "finished" and run.get("code_id") is None
        assert store.code_info("c0de") is None
    assert path.read_bytes() == before
    with Store(path) as store:
        assert store.get_run("r1")["code_id"] is None  # a run of unknown code
        _record(store, "r2")
        assert store.get_run("r2")["code_id"] == "c0de"
    con = sqlite3.connect(path)
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "2"
    con.close()


def test_garbage_file_is_reported_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    payload = b"this is not a database\n" * 200
    path.write_bytes(payload)
    with pytest.raises(StoreError, match=r"corrupted or not a SQLite file.*left untouched"):
        Store(path)
    assert path.read_bytes() == payload


def test_damaged_database_is_reported_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    _filled(path).close()
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 3 * page
    data[2 * page + 8 : 3 * page] = b"\xff" * (page - 8)  # smash a b-tree page's cells
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="corrupted"):
        Store(path)
    assert path.read_bytes() == bytes(data)


def test_locked_database_is_reported_and_nothing_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    _filled(path).close()
    before = path.read_bytes()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match=r"locked by another process.*nothing was written"):
            Store(path, timeout=0.2)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert path.read_bytes() == before
    store = Store(path)
    assert store.status("r1") == "finished" and store.count("epoch_metrics") == 9


def test_lock_taken_between_open_and_write(tmp_path: Path) -> None:
    store = _filled(tmp_path / "r.db")
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    store.timeout = 0.2
    store._conn.execute("PRAGMA busy_timeout = 200")
    try:
        with pytest.raises(StoreError, match="locked"):
            _record(store, "r3")
    finally:
        other.execute("ROLLBACK")
        other.close()
    _record(store, "r3")
    assert store.status("r3") == "finished"


def test_foreign_database_and_directory_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE accounts (id INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="another application"):
        Store(path)
    with pytest.raises(StoreError, match="directory"):
        Store(tmp_path)


def test_a_foreign_file_with_a_runs_table_stays_byte_identical(foreign_db) -> None:
    path, before = foreign_db
    for readonly in (False, True):
        with pytest.raises(StoreError, match=r"another application.*tables: runs.*untouched"):
            Store(path, readonly=readonly)
        assert path.read_bytes() == before


def test_read_only_open_never_creates_or_changes_a_file(tmp_path: Path) -> None:
    absent = tmp_path / "sub" / "absent.db"
    with pytest.raises(StoreError, match="does not exist"):
        Store(absent, readonly=True)
    assert not absent.parent.exists()
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(StoreError, match="is empty"):
        Store(empty, readonly=True)
    assert empty.stat().st_size == 0
    path = tmp_path / "r.db"
    _filled(path).close()
    before = path.read_bytes()
    with Store(path, readonly=True) as store:
        assert store.get_run("r1")["status"] == "finished" and store.count("runs") == 1
        with pytest.raises(StoreError, match="read-only"):
            store.add_tags("r1", ["x"])
    assert path.read_bytes() == before


def test_our_files_are_marked_and_an_unmarked_store_is_recognised(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    _filled(path).close()
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    con.execute("PRAGMA application_id = 0")  # as written before the mark existed
    con.commit()
    con.close()
    with Store(path, readonly=True) as store:
        assert store.status("r1") == "finished"
    with Store(path) as store:
        assert store.status("r1") == "finished"
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    con.close()


def test_a_read_only_database_is_reported_with_its_path(tmp_path: Path) -> None:
    store = _filled(tmp_path / "r.db")
    store._conn.execute("PRAGMA query_only = ON")  # what SQLite does on a read-only file
    with pytest.raises(StoreError, match=r"r\.db is read-only \(attempt to write a readonly"):
        store.add_tags("r1", ["tuned"])
    with pytest.raises(StoreError, match="read-only"):
        _record(store, "r2")
    assert store.get_run("r1")["tags"] == ["default"] and store.status("r2") is None


def test_a_full_disk_reports_the_real_cause_and_keeps_earlier_results(tmp_path: Path) -> None:
    store = _filled(tmp_path / "r.db")
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full now
    row = {"loss": 1.0, "grad_norm": 2.0, "lr": 0.1, "effective_lr": 0.1}
    many = [{"step": i, **row} for i in range(5000)]
    with pytest.raises(StoreError, match="database or disk is full") as err:
        _record(store, "r2", steps=many)
    assert "rollback" not in str(err.value).split(";")[0]
    assert store.status("r2") is None and store.status("r1") == "finished"
    assert store.count("step_metrics") == 4


def test_a_database_under_a_regular_file_is_refused_with_the_cause(tmp_path: Path) -> None:
    blocker = tmp_path / "results"
    blocker.write_text("a file, not a folder")
    with pytest.raises(StoreError, match=r"cannot create the folder.*a file is in the way"):
        Store(blocker / "r.db")
    with pytest.raises(StoreError, match=r"cannot create the folder.*Not a directory"):
        Store(blocker / "sub" / "r.db")
    assert blocker.read_text() == "a file, not a folder"


def test_a_writer_killed_inside_a_transaction_is_recovered_by_the_next_writer(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    path = tmp_path / "r.db"
    _filled(path).close()
    # A writer dies (os._exit) in the middle of a large transaction: a hot journal is left.
    killed = (
        "import os, sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('PRAGMA cache_size = 1'); c.execute('BEGIN')\n"
        "for i in range(3000):\n"
        "    c.execute('INSERT INTO environment(fingerprint, info, first_seen) "
        "VALUES (?, ?, 0)', (str(i) * 50, 'x' * 500))\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", killed, str(path)], check=True)
    assert path.with_name("r.db-journal").exists()
    with pytest.raises(StoreError, match="unfinished transaction.*run a write command"):
        Store(path, readonly=True)
    with Store(path) as store:  # rolls the journal back: the last committed state
        assert store.count("environment") == 1 and store.status("r1") == "finished"
    with Store(path, readonly=True) as store:
        assert store.count("runs") == 1
