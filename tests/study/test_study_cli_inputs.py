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
