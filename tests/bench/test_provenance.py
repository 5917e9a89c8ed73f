"""Runs are tied to their code: identity, refusal of other code's runs, accept, rerun;
paused runs (successive halving) and stale rows of older versions."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest

from superlevel.bench.run import identity, parent, worker
from superlevel.bench.run.identity import (
    CodeIdentity,
    code_identity_of,
    make_config,
    module_closure,
)
from superlevel.bench.run.parent import OtherCodeError, run_many
from superlevel.bench.store import Store


def _package(root: Path, b_source: str) -> None:
    pkg = root / "provpkg"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "import numpy\n"
        "if TYPE_CHECKING:\n"
        "    from provpkg import c\n"
        "def f():\n"
        "    from provpkg.b import g  # a lazy import counts\n"
        "    return g()\n"
    )
    (pkg / "b.py").write_text(b_source)
    (pkg / "c.py").write_text("X = 1\n")


def test_the_code_of_a_module_is_what_its_imports_reach(tmp_path: Path, monkeypatch) -> None:
    _package(tmp_path, "def g():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    modules, external = module_closure(("provpkg.a",), package="provpkg")
    assert sorted(modules) == ["provpkg.a", "provpkg.b"]  # not c: only for type checkers
    assert "numpy" in external and "typing" not in external  # the standard library is not


def test_the_identity_changes_with_the_source_and_only_then(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    _package(tmp_path, "def g():\n    return 1\n")
    roots = ("superlevel.bench.run.loop",)
    first = code_identity_of(roots)
    code_identity_of.cache_clear()
    assert code_identity_of(roots).id == first.id  # deterministic
    assert "superlevel.optim.functional" in first.modules  # the optimizer's core is reached
    assert "superlevel.bench.report" not in first.modules  # the report cannot change numbers
    assert first.versions["torch"] and first.versions["python"] == sys.version.split()[0]
    other = CodeIdentity("x", {**first.modules, "superlevel.optim.norm": "changed"},
                         first.versions)  # fmt: skip
    assert other.changed(first.info()) == ["superlevel.optim.norm"]


def _fake_code(monkeypatch, new_id: str = "feedfacecafebeef") -> CodeIdentity:
    """Make this process believe its code changed: every module of the optimizer differs."""
    real = identity.code_identity("quadratic")
    fake = CodeIdentity(new_id, {**real.modules, "superlevel.optim.optimizer": "edited"},
                        real.versions)  # fmt: skip
    monkeypatch.setattr(parent, "code_identity", lambda task: fake)
    monkeypatch.setattr(worker, "code_identity", lambda task: fake)
    return fake


def test_a_run_of_other_code_is_refused_accepted_or_rerun(tmp_path: Path, monkeypatch) -> None:
    store = Store(tmp_path / "r.db")
    cfg = make_config("quadratic", "sgd", 1, epochs=2)
    (first,) = run_many([cfg], store)
    assert store.get_run(cfg.run_id)["code_id"] == identity.code_identity("quadratic").id
    fake = _fake_code(monkeypatch)
    before = store.get_run(cfg.run_id)
    with pytest.raises(OtherCodeError, match=r"quadratic/sgd/s1.*superlevel\.optim\.optimizer"):
        run_many([cfg], store)
    assert store.get_run(cfg.run_id) == before  # refused before anything was written
    (accepted,) = run_many([cfg], store, other_code="accept")
    assert accepted.status == "skipped" and accepted.other_code
    assert store.get_run(cfg.run_id)["code_id"] == before["code_id"]
    (rerun,) = run_many([cfg], store, other_code="rerun")
    assert rerun.status == "finished" and not rerun.previous
    assert store.get_run(cfg.run_id)["code_id"] == fake.id and store.count("runs") == 1
    assert rerun.summary["test_metric"] == first.summary["test_metric"]  # same real code


def test_a_run_stored_before_code_ids_counts_as_other_code(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    cfg = make_config("quadratic", "sgd", 1, epochs=1)
    run_many([cfg], store)
    store._conn.execute("UPDATE runs SET code_id=NULL")
    with pytest.raises(OtherCodeError, match="stored before runs recorded their code"):
        run_many([cfg], store)


def test_a_checkpoint_of_other_code_is_not_resumed(tmp_path: Path, monkeypatch) -> None:
    store = Store(tmp_path / "r.db")
    cfg = make_config("quadratic", "sgd", 1, epochs=3)
    (paused,) = run_many([cfg], store, until_epoch=1)
    assert paused.status == "paused"
    _fake_code(monkeypatch)
    lines: list[str] = []
    (out,) = run_many([cfg], store, other_code="rerun", log=lines.append)
    assert out.status == "finished" and out.summary["resumed_from_epoch"] == 0
    assert any("written by other code" in line for line in lines)


def test_successive_halving_pauses_and_resumes_without_retraining(
    tmp_path: Path, monkeypatch
) -> None:
    store = Store(tmp_path / "r.db")
    cfg = make_config("quadratic", "adam", 1, epochs=4)
    (paused,) = run_many([cfg], store, until_epoch=1)
    row = store.get_run(cfg.run_id)
    assert paused.status == row["status"] == "paused" and row["epochs_done"] == 1
    assert row["val_metric"] is not None
    (again,) = run_many([cfg], store, until_epoch=1)  # already that far: reused
    assert again.status == "paused" and again.previous
    (done,) = run_many([cfg], store, until_epoch=2)
    assert done.summary["resumed_from_epoch"] == 1 and done.status == "paused"
    (full,) = run_many([cfg], store)
    assert full.status == "finished" and full.summary["resumed_from_epoch"] == 2
    straight = run_many([cfg], Store(tmp_path / "straight.db"))[0]
    for key in ("test_metric", "val_metric", "train_loss", "steps"):
        assert full.summary[key] == straight.summary[key], key
    assert not list((tmp_path / "checkpoints").glob("*.pt"))  # the ended run's is gone


def test_a_stale_running_row_of_an_older_version_is_recovered(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    cfg = make_config("quadratic", "sgd", 1, epochs=1)
    store = Store(path)
    run_many([cfg], store)
    con = sqlite3.connect(path)
    con.execute("UPDATE runs SET status='running', test_metric=NULL")  # killed mid-commit
    con.commit()
    con.close()
    (out,) = run_many([cfg], store)
    assert out.status == "finished" and store.get_run(cfg.run_id)["test_metric"] is not None


def test_outcomes_reach_the_callback_as_they_are_stored(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    configs = [make_config("quadratic", "sgd", s, epochs=1) for s in (1, 2)]
    run_many(configs[:1], store)
    seen: list[tuple[str, str, str | None]] = []

    def on_outcome(out: parent.RunOutcome) -> None:
        seen.append((out.config.label(), out.status, store.status(out.config.run_id)))

    run_many(configs, store, on_outcome=on_outcome)
    assert seen == [("quadratic/sgd/s1", "skipped", "finished"),
                    ("quadratic/sgd/s2", "finished", "finished")]  # fmt: skip
