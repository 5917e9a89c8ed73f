"""``superlevel study``: bad arguments are refused before the store exists, a read-only
rebuild writes nothing, and a failed first call leaves no empty store behind."""

from __future__ import annotations

from pathlib import Path

from superlevel.cli import main


def test_a_bad_device_or_thread_count_is_refused_before_the_store(tmp_path: Path, capsys) -> None:
    db = tmp_path / "s.db"
    for extra, fragment in ((["--device", "tpu"], "'tpu'"),
                            (["--threads", "100000"], "--threads must be in 0..")):  # fmt: skip
        code = main(["study", "--only", "E1", "--db", str(db), "--out", str(tmp_path), *extra])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and fragment in err, err
    assert not db.exists()


def test_report_only_on_an_empty_file_writes_no_schema(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    code = main(["study", "--report-only", "--db", str(empty), "--out", str(tmp_path / "o")])
    assert code == 2 and "is empty: nothing to read" in capsys.readouterr().err
    assert empty.stat().st_size == 0


def test_missing_data_leaves_no_empty_store(tmp_path: Path, capsys) -> None:
    db = tmp_path / "s.db"
    argv = ["study", "--only", "E3", "--db", str(db), "--out",
            str(tmp_path / "o"), "--data-dir", str(tmp_path / "no-data"),
            "--checkpoint-dir", str(tmp_path / "ck")]  # fmt: skip
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "mnist" in err and "superlevel data download mnist" in err
    assert not db.exists()


def test_stored_runs_of_other_code_are_refused_unless_accepted_or_rerun(
    tmp_path: Path, capsys
) -> None:
    import sqlite3

    db, out = tmp_path / "s.db", tmp_path / "o"
    argv = ["study", "--profile", "tiny", "--only", "E1", "--db", str(db), "--out", str(out),
            "--checkpoint-dir", str(tmp_path / "ck")]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    with sqlite3.connect(db) as con:  # as if an older revision of the code had made them
        con.execute("UPDATE runs SET code_id = 'older-code'")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "\nerror: 24 stored run(s) were made by other code" in err, err
    assert "--other-code rerun" in err and "Traceback" not in err
    assert main([*argv, "--other-code", "rerun"]) == 0
    with sqlite3.connect(db) as con:
        left = con.execute("SELECT COUNT(*) FROM runs WHERE code_id = 'older-code'").fetchone()
    assert left == (0,)
