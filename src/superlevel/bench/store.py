"""The results store: one SQLite file holding every run, its configuration and its metrics.

Tables:

- ``configs``: a run's identity (task, task options, budget, epochs, optimizer,
  hyperparameters, seed); ``run_id`` is a hash of exactly these fields.
- ``runs``: status (``finished``, ``diverged``, ``paused`` (stopped at an epoch, to be
  trained further), ``failed``; ``running`` only in stores of older versions), final
  metrics, timings, the id of the code that trained it.
- ``tags``: why a run exists (``default``, ``trial``, ``grid``, ``tuned``); one run may
  serve several purposes (a tuning trial reused as a final seed).
- ``epoch_metrics``: per epoch and split (train/val/test) loss, metric and wall time.
- ``step_metrics``: subsampled per-step training loss, gradient norm, lr, effective lr.
- ``environment``: torch version, device name, git revision, ... of the machine a run used.
- ``tunings``: per tuning (setting, optimizer, protocol), its result: the search, the
  extensions of its ranges, the selection, the final runs (:mod:`superlevel.bench.tune`).
- ``code``: per code id, the hash of every module and the package versions it stands for
  (see :func:`superlevel.bench.run.identity.code_identity`).

A run is written in one transaction, its config, environment, code, status, metrics and
tags together: readers see all of it or none of it, and no half-written run remains
after a kill. A store of schema 1 (before code ids) is upgraded in place when opened
for writing (its runs then have no code id); read-only opens read it as it is.
The store never deletes or rewrites a file it cannot read: a corrupted or locked
database raises :class:`StoreError` with a message saying what to do.

Our files are marked with ``PRAGMA application_id`` (:data:`APPLICATION_ID`); a file is
recognised as ours (by that mark, or for files written before it, by the ``meta`` row
and tables) *before* anything is written, so another application's SQLite file stays
byte-identical; so does a table-less file whose ``user_version`` another application
set. ``path`` is a file path, nothing else: a SQLite URI (``file:...``) or a special
name (``:memory:``, the empty string) is refused, since SQLite would open something
other than that file (an in-memory database keeps nothing; a URI may name another
file or mode). A JSON cell that no longer parses (a hand-edited or damaged row) is a
:class:`StoreError` naming its table, column and run. ``Store(path, readonly=True)``
(``bench results``, ``bench report``) opens the file read-only and never creates or
changes one.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

SCHEMA_VERSION = "2"
_READABLE_VERSIONS = ("1", "2")  # 1: before code ids and paused runs; upgraded on write
APPLICATION_ID = 0x534C5642  # "SLVB": PRAGMA application_id of a superlevel results store
_TABLES = {"meta", "environment", "configs", "runs", "tags", "epoch_metrics", "step_metrics"}
_UPGRADE_1_TO_2 = (
    "ALTER TABLE runs ADD COLUMN code_id TEXT",
    "ALTER TABLE runs ADD COLUMN epochs_done INTEGER",
    "ALTER TABLE runs ADD COLUMN initial_val_metric REAL",
    "ALTER TABLE runs ADD COLUMN initial_test_metric REAL",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS environment (
    env_id INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL UNIQUE,
    info TEXT NOT NULL,
    first_seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS code (
    code_id TEXT PRIMARY KEY,
    info TEXT NOT NULL,
    first_seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tunings (
    tuning_id TEXT PRIMARY KEY,
    setting TEXT NOT NULL,
    optimizer TEXT NOT NULL,
    protocol TEXT NOT NULL,
    result TEXT NOT NULL,
    finished_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS configs (
    run_id TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    task_options TEXT NOT NULL,
    budget TEXT NOT NULL,
    epochs INTEGER NOT NULL,
    optimizer TEXT NOT NULL,
    hparams TEXT NOT NULL,
    seed INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY REFERENCES configs(run_id),
    status TEXT NOT NULL,
    env_id INTEGER REFERENCES environment(env_id),
    started_at REAL,
    finished_at REAL,
    steps INTEGER,
    wall_s REAL,
    train_s REAL,
    resumed_from_epoch INTEGER,
    metric_name TEXT,
    higher_is_better INTEGER,
    target REAL,
    steps_to_target INTEGER,
    train_loss REAL,
    val_loss REAL,
    val_metric REAL,
    test_loss REAL,
    test_metric REAL,
    info TEXT,
    code_id TEXT,
    epochs_done INTEGER,
    initial_val_metric REAL,
    initial_test_metric REAL
);
CREATE TABLE IF NOT EXISTS tags (
    run_id TEXT NOT NULL REFERENCES configs(run_id),
    tag TEXT NOT NULL,
    PRIMARY KEY (run_id, tag)
);
CREATE TABLE IF NOT EXISTS epoch_metrics (
    run_id TEXT NOT NULL REFERENCES configs(run_id),
    epoch INTEGER NOT NULL,
    step INTEGER NOT NULL,
    split TEXT NOT NULL,
    loss REAL,
    metric REAL,
    wall_s REAL,
    PRIMARY KEY (run_id, epoch, split)
);
CREATE TABLE IF NOT EXISTS step_metrics (
    run_id TEXT NOT NULL REFERENCES configs(run_id),
    step INTEGER NOT NULL,
    loss REAL,
    grad_norm REAL,
    lr REAL,
    effective_lr REAL,
    PRIMARY KEY (run_id, step)
);
"""

_RUN_FIELDS = (
    "steps",
    "epochs_done",
    "wall_s",
    "train_s",
    "resumed_from_epoch",
    "metric_name",
    "higher_is_better",
    "target",
    "steps_to_target",
    "train_loss",
    "val_loss",
    "val_metric",
    "test_loss",
    "test_metric",
    "initial_val_metric",
    "initial_test_metric",
)

DONE = ("finished", "diverged")
PAUSED = "paused"  # stopped at an epoch boundary; its checkpoint lets it go on
FAILED = "failed"  # the run raised; ``info`` holds the error; rerun only when asked
STATUSES = (*DONE, PAUSED, FAILED)


class StoreError(RuntimeError):
    """The results database cannot be used (corrupted, locked, wrong schema)."""


def _check_path_name(path: str | Path) -> None:
    """Refuse what SQLite would not read as this file: a URI, ``:memory:``, ``""``."""
    text = str(path)
    if isinstance(path, str) and text.lower().startswith("file:"):
        raise StoreError(
            f"results database {text!r} is a SQLite URI; give the path of a file "
            f"(./{text} for a file of that name)"
        )
    if text in ("", ":memory:") or (isinstance(path, str) and text.strip() == ""):
        raise StoreError(
            f"results database {text!r} is not a file path (an in-memory or temporary "
            "database would keep nothing); give the path of a file"
        )


def _json_cell(text: str | None, path: Path, table: str, column: str, key: str) -> Any:
    """``json.loads(text)``, a damaged cell being a :class:`StoreError` that names it."""
    try:
        return json.loads(text) if text else None
    except (json.JSONDecodeError, TypeError) as exc:
        raise StoreError(
            f"results database {path}: the {column} of {key} in table {table} is not valid JSON "
            f"({exc}: {str(text)[:40]!r}); the file was not changed - repair or remove that "
            "row, or choose another --db"
        ) from exc


def _finite_or_none(x: Any) -> Any:
    # SQLite stores NaN as NULL anyway; inf is kept as a REAL but breaks JSON/CSV readers.
    if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
        return None
    return x


class Store:
    """A results database at ``path``.

    Args:
        path: the SQLite file; created (with its parent folder) if absent, unless
            ``readonly``.
        timeout: seconds to wait for another process's lock before :class:`StoreError`.
        readonly: open for reading only: the file must exist and be a results store; it is
            never created, initialised or changed.

    Raises:
        StoreError: the file is not a readable results store of this schema (another
            application's database, corrupted, empty when ``readonly``), is locked, or
            its folder cannot be created.
    """

    def __init__(self, path: str | Path, *, timeout: float = 5.0, readonly: bool = False) -> None:
        _check_path_name(path)
        if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout >= 0):
            raise StoreError(f"the lock timeout must be a finite number of seconds >= 0, "
                             f"got {timeout!r}")  # fmt: skip
        self.path = Path(path)
        self.timeout = timeout
        self.readonly = readonly
        self.schema_version = SCHEMA_VERSION
        if self.path.is_dir():
            raise StoreError(f"results database {self.path} is a directory, not a file")
        exists = self.path.is_file() and self.path.stat().st_size > 0
        if readonly and not exists:
            what = "is empty" if self.path.is_file() else "does not exist"
            raise StoreError(f"results database {self.path} {what}: nothing to read")
        if not readonly:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                # mkdir says "File exists" when a file is where the folder should be.
                cause = "a file is in the way" if isinstance(exc, FileExistsError) else None
                raise StoreError(
                    f"cannot create the folder of results database {self.path}: "
                    f"{cause or exc.strerror or exc} ({exc.filename or self.path.parent})"
                ) from exc
        state = "blank"
        if exists:
            state = self._inspect_file()
            if state == "blank" and readonly:
                raise StoreError(f"results database {self.path} has no tables: nothing to read")
        self._conn = self._connect(readonly=readonly)
        if not readonly and state != "ours":
            try:
                self._init_schema()
                self.schema_version = SCHEMA_VERSION
            except StoreError:
                self._conn.close()
                raise

    # -- plumbing ---------------------------------------------------------------------------

    def _connect(self, *, readonly: bool) -> sqlite3.Connection:
        target = str(self.path)
        if readonly:
            # Quoted as bytes: a file name that is not UTF-8 (surrogate escapes) still works.
            target = f"file:{urllib.parse.quote(os.fsencode(self.path.resolve()))}?mode=ro"
        try:
            conn = sqlite3.connect(target, timeout=self.timeout, isolation_level=None, uri=readonly)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open results database {self.path}: {exc}") from exc
        conn.row_factory = sqlite3.Row
        return conn

    def _translate(self, exc: sqlite3.Error) -> StoreError:
        msg = str(exc).lower()
        if "locked" in msg or "busy" in msg:
            return StoreError(
                f"results database {self.path} is locked by another process "
                f"(waited {self.timeout:g} s); nothing was written - retry when it is free"
            )
        if "readonly" in msg or "read-only" in msg:
            return StoreError(
                f"results database {self.path} is read-only ({exc}); nothing was written - "
                "make it writable or choose another --db"
            )
        if "full" in msg:
            return StoreError(
                f"results database {self.path}: {exc}; this write was rolled back, earlier "
                "results are intact - free some space and run the command again"
            )
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
            return StoreError(
                f"results database {self.path} is corrupted or not a SQLite file ({exc}); "
                "it was left untouched - move it aside or choose another --db"
            )
        return StoreError(f"results database {self.path}: {exc}")

    def _rollback(self) -> None:
        """Roll back the open transaction, if SQLite has not already done so.

        After some errors (a full disk, I/O errors) SQLite rolls back by itself; a second
        ROLLBACK would raise "no transaction is active" and hide the real cause.
        """
        if self._conn.in_transaction:
            # The error being raised is the one that matters, not a failed rollback.
            with suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; takes the write lock up front (BEGIN IMMEDIATE).

        Every SQLite error inside it, the commit included, becomes a :class:`StoreError`
        naming the database and the cause; the transaction is rolled back.
        """
        if self.readonly:
            raise StoreError(f"results database {self.path} was opened read-only")
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        try:
            yield self._conn
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise self._translate(exc) from exc
        except BaseException:
            self._rollback()
            raise

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc

    def _inspect_file(self) -> str:
        """:meth:`_inspect` through a read-only connection: nothing is written to a file
        before it is known to be ours.

        One exception: a writer killed inside a transaction leaves a *hot journal*, which
        only a read-write connection can roll back (SQLite does so on the first read,
        restoring the last committed state). A read-only open then refuses with a message
        saying so; a read-write open inspects through a read-write connection.
        """
        journal = self.path.with_name(self.path.name + "-journal")
        self._conn = self._connect(readonly=True)
        try:
            return self._inspect()
        except StoreError as exc:
            if not ("readonly" in str(exc.__cause__) and journal.exists()):
                raise
            if self.readonly:
                raise StoreError(
                    f"results database {self.path} has an unfinished transaction of a "
                    f"writer that was stopped ({journal}); a read-only command cannot "
                    "roll it back - run a write command (bench run) on it once"
                ) from exc
        finally:
            self._conn.close()
        self._conn = self._connect(readonly=False)
        try:
            return self._inspect()
        finally:
            self._conn.close()

    def _inspect(self) -> str:
        """Check an existing file is a healthy store of this schema.

        Returns:
            ``"ours"`` (marked store), ``"unmarked"`` (a store written before the mark) or
            ``"blank"`` (a valid SQLite database without tables, which may become a store).

        Raises:
            StoreError: corrupted, another application's database, or another schema.
        """
        try:
            check = self._conn.execute("PRAGMA quick_check").fetchone()[0]
            app_id = self._conn.execute("PRAGMA application_id").fetchone()[0]
            user_version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master")}
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        if check != "ok":
            raise StoreError(
                f"results database {self.path} is corrupted (integrity check: {check}); "
                "it was left untouched - move it aside or choose another --db"
            )
        if not tables and app_id in (0, APPLICATION_ID) and user_version == 0:
            return "blank"  # nothing in it says it is anyone's: it may become a store
        # Ours: marked, or (files written before the mark) our meta row and tables.
        if app_id != APPLICATION_ID and not (app_id == 0 and tables >= _TABLES):
            listed = ", ".join(sorted(tables)) or "none"
            raise StoreError(
                f"{self.path} is a SQLite database of another application "
                f"(application_id {app_id}, user_version {user_version}, tables: {listed}); "
                "it was left untouched - choose another --db"
            )
        row = self._query("SELECT value FROM meta WHERE key='schema_version'")
        version = row[0][0] if row else None
        if version not in _READABLE_VERSIONS:
            raise StoreError(
                f"results database {self.path} has schema version {version!r}, "
                f"this superlevel writes {SCHEMA_VERSION!r}; choose another --db"
            )
        self.schema_version = version
        if version != SCHEMA_VERSION:
            return "old"
        return "ours" if app_id == APPLICATION_ID else "unmarked"

    def _init_schema(self) -> None:
        """Create the tables (idempotent: also completes an unmarked store), upgrade a
        schema-1 store, and mark the file; one transaction."""
        with self._tx() as c:
            columns = {r[1] for r in c.execute("PRAGMA table_info(runs)")}
            if columns and "code_id" not in columns:
                for statement in _UPGRADE_1_TO_2:
                    c.execute(statement)
            # Statement by statement: executescript() would commit the open transaction.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    c.execute(statement)
            c.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)",
                (SCHEMA_VERSION,),
            )
            c.execute(f"PRAGMA application_id = {APPLICATION_ID}")

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes -----------------------------------------------------------------------------

    def record_run(
        self,
        config: Mapping[str, Any],
        *,
        status: str,
        summary: Mapping[str, Any] | None = None,
        epochs: Sequence[Mapping[str, Any]] = (),
        steps: Sequence[Mapping[str, Any]] = (),
        info: Mapping[str, Any] | None = None,
        environment: Mapping[str, Any] | None = None,
        code: Mapping[str, Any] | None = None,
        tags: Iterable[str] = (),
        replace: bool = False,
    ) -> bool:
        """Write one run and all it has, in ONE transaction.

        Args:
            config: the keys of the ``configs`` table (``run_id`` included).
            status: ``finished``, ``diverged``, ``paused`` or ``failed``.
            summary: the run's row (:data:`_RUN_FIELDS`); missing keys are stored NULL.
            epochs, steps: its metrics; they replace any stored for this run.
            info: free-form details (a failed run's ``error``).
            environment: the machine it ran on (stored once per distinct value).
            code: ``{"id": ..., "modules": ..., "versions": ...}`` of its code.
            tags: why it exists; added to the tags it has.
            replace: overwrite a stored ``finished`` or ``diverged`` result (a rerun by
                new code); otherwise such a result is kept (another writer got there
                first) and only the tags are added.

        Returns:
            Whether this result was written (``False``: a done result was kept).
        """
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        summary = dict(summary or {})
        values = [_finite_or_none(summary.get(k)) for k in _RUN_FIELDS]
        run_id = config["run_id"]
        now = time.time()
        with self._tx() as c:
            c.execute(
                "INSERT OR IGNORE INTO configs(run_id, task, task_options, budget, epochs, "
                "optimizer, hparams, seed) VALUES (?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    config["task"],
                    json.dumps(config["task_options"], sort_keys=True),
                    config["budget"],
                    int(config["epochs"]),
                    config["optimizer"],
                    json.dumps(config["hparams"], sort_keys=True),
                    int(config["seed"]),
                ),
            )
            c.executemany(
                "INSERT OR IGNORE INTO tags(run_id, tag) VALUES (?, ?)",
                [(run_id, t) for t in tags],
            )
            row = c.execute("SELECT status FROM runs WHERE run_id=?", (run_id,)).fetchone()
            if row is not None and row[0] in DONE and not replace:
                return False
            env_id = None
            if environment:
                fingerprint = json.dumps(dict(environment), sort_keys=True)
                c.execute(
                    "INSERT OR IGNORE INTO environment(fingerprint, info, first_seen) "
                    "VALUES (?,?,?)",
                    (fingerprint, fingerprint, now),
                )
                env_id = c.execute(
                    "SELECT env_id FROM environment WHERE fingerprint=?", (fingerprint,)
                ).fetchone()[0]
            code_id = None
            if code:
                code_id = code["id"]
                details = {k: v for k, v in code.items() if k != "id"}
                c.execute(
                    "INSERT OR IGNORE INTO code(code_id, info, first_seen) VALUES (?,?,?)",
                    (code_id, json.dumps(details, sort_keys=True), now),
                )
            c.execute("DELETE FROM epoch_metrics WHERE run_id=?", (run_id,))
            c.execute("DELETE FROM step_metrics WHERE run_id=?", (run_id,))
            c.execute("DELETE FROM runs WHERE run_id=?", (run_id,))
            c.executemany(
                "INSERT INTO epoch_metrics(run_id, epoch, step, split, loss, metric, wall_s) "
                "VALUES (?,?,?,?,?,?,?)",
                [
                    (run_id, e["epoch"], e["step"], e["split"], _finite_or_none(e["loss"]),
                     _finite_or_none(e["metric"]), e["wall_s"])
                    for e in epochs
                ],
            )  # fmt: skip
            c.executemany(
                "INSERT INTO step_metrics(run_id, step, loss, grad_norm, lr, effective_lr) "
                "VALUES (?,?,?,?,?,?)",
                [
                    (run_id, s["step"], _finite_or_none(s["loss"]),
                     _finite_or_none(s["grad_norm"]), _finite_or_none(s["lr"]),
                     _finite_or_none(s["effective_lr"]))
                    for s in steps
                ],
            )  # fmt: skip
            fields = ", ".join(_RUN_FIELDS)
            marks = ", ".join("?" for _ in _RUN_FIELDS)
            c.execute(
                f"INSERT INTO runs(run_id, status, env_id, code_id, started_at, finished_at, "
                f"info, {fields}) VALUES (?,?,?,?,?,?,?,{marks})",
                (run_id, status, env_id, code_id, now - float(summary.get("wall_s") or 0.0),
                 now, json.dumps(dict(info or {}), default=str), *values),
            )  # fmt: skip
        return True

    def save_tuning(self, tuning_id: str, setting: Mapping[str, Any], optimizer: str,
                    protocol: Mapping[str, Any], result: Mapping[str, Any]) -> None:  # fmt: skip
        """Keep (or replace) the result of one tuning."""
        with self._tx() as c:
            c.execute(
                "INSERT OR REPLACE INTO tunings(tuning_id, setting, optimizer, protocol, result, "
                "finished_at) VALUES (?,?,?,?,?,?)",
                (tuning_id, json.dumps(dict(setting), sort_keys=True), optimizer,
                 json.dumps(dict(protocol), sort_keys=True), json.dumps(dict(result),
                                                                         default=str),
                 time.time()),
            )  # fmt: skip

    def tunings(self) -> list[dict[str, Any]]:
        """Every kept tuning result (a dict), oldest first."""
        if self.schema_version == "1":
            return []
        rows = self._query("SELECT tuning_id, result FROM tunings ORDER BY finished_at, tuning_id")
        return [_json_cell(r[1], self.path, "tunings", "result", f"tuning {r[0]}") for r in rows]

    def add_tags(self, run_id: str, tags: Iterable[str]) -> None:
        """Attach ``tags`` to an existing run."""
        with self._tx() as c:
            c.executemany(
                "INSERT OR IGNORE INTO tags(run_id, tag) VALUES (?, ?)",
                [(run_id, t) for t in tags],
            )

    # -- reads ------------------------------------------------------------------------------

    def status(self, run_id: str) -> str | None:
        """The status of ``run_id`` or ``None`` when it is unknown."""
        rows = self._query("SELECT status FROM runs WHERE run_id=?", (run_id,))
        return rows[0][0] if rows else None

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """One run as :meth:`runs` returns it, or ``None`` when unknown."""
        found = self.runs(run_id=run_id)
        return found[0] if found else None

    def runs(
        self, *, tag: str | None = None, task: str | None = None, run_id: str | None = None
    ) -> list[dict[str, Any]]:
        """All runs (config + results + tags + environment), optionally filtered."""
        sql = (
            "SELECT c.*, r.*, e.info AS env, "
            "(SELECT group_concat(tag, ',') FROM tags t WHERE t.run_id=c.run_id) AS tags "
            "FROM configs c JOIN runs r ON r.run_id=c.run_id "
            "LEFT JOIN environment e ON e.env_id=r.env_id"
        )
        where, args = [], []
        if tag is not None:
            where.append("EXISTS (SELECT 1 FROM tags t WHERE t.run_id=c.run_id AND t.tag=?)")
            args.append(tag)
        if task is not None:
            where.append("c.task=?")
            args.append(task)
        if run_id is not None:
            where.append("c.run_id=?")
            args.append(run_id)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY c.task, c.optimizer, c.seed, c.run_id"
        out = []
        for row in self._query(sql, args):
            d = dict(row)
            where = f"run {d['run_id']}"
            d["task_options"] = _json_cell(
                d["task_options"], self.path, "configs", "task_options", where
            )
            d["hparams"] = _json_cell(d["hparams"], self.path, "configs", "hparams", where)
            d["env"] = _json_cell(d["env"], self.path, "environment", "info", where) or {}
            d["info"] = _json_cell(d["info"], self.path, "runs", "info", where) or {}
            d["tags"] = sorted(d["tags"].split(",")) if d["tags"] else []
            out.append(d)
        return out

    def code_info(self, code_id: str) -> dict[str, Any] | None:
        """What code id ``code_id`` stands for (``modules``, ``versions``), or ``None``."""
        if self.schema_version == "1":
            return None
        rows = self._query("SELECT info FROM code WHERE code_id=?", (code_id,))
        return (
            _json_cell(rows[0][0], self.path, "code", "info", f"code {code_id}") if rows else None
        )

    def epoch_metrics(self, run_id: str) -> list[dict[str, Any]]:
        """Per-epoch rows of ``run_id`` ordered by epoch and split."""
        rows = self._query(
            "SELECT * FROM epoch_metrics WHERE run_id=? ORDER BY epoch, split", (run_id,)
        )
        return [dict(r) for r in rows]

    def step_metrics(self, run_id: str) -> list[dict[str, Any]]:
        """Subsampled per-step rows of ``run_id`` ordered by step."""
        rows = self._query("SELECT * FROM step_metrics WHERE run_id=? ORDER BY step", (run_id,))
        return [dict(r) for r in rows]

    def count(self, table: str) -> int:
        """Number of rows in ``table`` (one of the store's tables)."""
        if table not in {"configs", "runs", "tags", "epoch_metrics", "step_metrics", "environment",
                         "code", "tunings"}:  # fmt: skip
            raise ValueError(f"unknown table {table!r}")
        return int(self._query(f"SELECT count(*) FROM {table}")[0][0])
