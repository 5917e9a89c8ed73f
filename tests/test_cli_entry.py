"""What the ``superlevel`` entry point does for every sub-command: a reader that goes away
(``| head``) ends the command quietly, and unprintable paths are escaped, not fatal."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from superlevel.bench.store import Store
from superlevel.cli import BROKEN_PIPE, main

pytest.importorskip("matplotlib", reason="landscape demo and the report draw with matplotlib")


def test_a_closed_pipe_ends_the_real_command_quietly() -> None:
    # The console script's main in a fresh interpreter, its stdout a pipe nobody reads.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from superlevel.cli import main; "
         "sys.exit(main(['data', 'list']))"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    proc.stdout.close()  # `| head` that has read enough
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == BROKEN_PIPE == 141
    assert err == ""  # no traceback, no "Exception ignored" at exit


class _ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


@pytest.fixture
def small_store(tmp_path: Path) -> Path:
    db = tmp_path / "r.db"
    argv = "bench run --task quadratic --optimizers sgd --epochs 1 --quiet --db"
    assert main([*argv.split(), str(db)]) == 0
    return db


def test_every_sub_command_handles_a_broken_pipe_in_one_place(
    small_store: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    for argv in (
        ["data", "list"],
        ["landscape", "demo", "--steps", "5", "--resolution", "21"],
        ["study", "--report-only", "--db", str(small_store), "--out", str(tmp_path / "s")],
        ["bench", "list"],
        ["bench", "results", "--db", str(small_store)],
    ):
        capsys.readouterr()
        monkeypatch.setattr(sys, "stdout", _ClosedPipe())
        assert main(argv) == BROKEN_PIPE, argv
        monkeypatch.undo()
        assert "error" not in capsys.readouterr().err, argv  # not "error: Broken pipe"


def test_a_path_that_is_not_utf8_is_printed_escaped(
    small_store: Path, tmp_path: Path, monkeypatch
) -> None:
    odd = tmp_path / os.fsdecode(b"r\xff\xfe")  # a Latin-1 file name on a UTF-8 system
    raw = io.BytesIO()
    strict = io.TextIOWrapper(raw, encoding="utf-8", errors="strict")
    monkeypatch.setattr(sys, "stdout", strict)
    assert main(["bench", "report", "--db", str(small_store), "--out", str(odd)]) == 0
    db = odd / "x.db"
    argv = ["bench", "run", "--task", "quadratic", "--optimizers", "sgd", "--epochs", "1"]
    assert main([*argv, "--quiet", "--db", str(db)]) == 0
    assert main(["bench", "results", "--db", str(db)]) == 0  # read-only: a URI of its path
    strict.flush()
    text = raw.getvalue().decode("utf-8")
    assert "r\\udcff\\udcfe" in text and "1 finished" in text and "(1 runs)" in text
    assert (odd / "report.md").is_file() and Store(db, readonly=True).count("runs") == 1
