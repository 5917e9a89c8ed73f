"""The runner: identity, validation, resume after interruption, divergence, failed commits."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from superlevel.bench import runner
from superlevel.bench.runner import RunConfig, make_config, run_one
from superlevel.bench.store import Store, StoreError
from superlevel.bench.tasks import UnknownNameError, build_task


def test_run_id_is_stable_and_covers_every_field() -> None:
    base = make_config("quadratic", "sgd", 1, epochs=3)
    assert base.run_id == make_config("quadratic", "sgd", 1, epochs=3, hparams={"lr": 0.1}).run_id
    assert len(base.run_id) == 16
    variants = [
        dataclasses.replace(base, task="multiwell"),
        dataclasses.replace(base, optimizer="adam"),
        dataclasses.replace(base, seed=2),
        dataclasses.replace(base, budget="full"),
        dataclasses.replace(base, epochs=4),
        dataclasses.replace(base, hparams={"lr": 0.2}),
        dataclasses.replace(base, task_options={"noise": 0.5}),
    ]
    ids = {v.run_id for v in variants}
    assert len(ids) == len(variants) and base.run_id not in ids


def test_make_config_resolves_and_validates() -> None:
    cfg = make_config("quadratic", "adam", 2)
    assert cfg.epochs == 20 and cfg.hparams["lr"] == 1e-3 and cfg.budget == "quick"
    with pytest.raises(UnknownNameError, match="quadratc.*Did you mean 'quadratic'"):
        make_config("quadratc", "sgd", 1)
    with pytest.raises(UnknownNameError, match="'sdg'"):
        make_config("quadratic", "sdg", 1)
    with pytest.raises(ValueError, match="seed must be an integer >= 1, got 0"):
        make_config("quadratic", "sgd", 0)
    with pytest.raises(ValueError, match="epochs must be an integer >= 1, got 0"):
        make_config("quadratic", "sgd", 1, epochs=0)
    with pytest.raises(ValueError, match="no budget 'huge'"):
        make_config("quadratic", "sgd", 1, budget="huge")
    with pytest.raises(ValueError, match="no option 'subset'"):
        make_config("quadratic", "sgd", 1, task_options={"subset": 3})


def test_run_records_and_is_not_redone(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    cfg = make_config("quadratic", "superlevel", 1, epochs=3)
    out = run_one(cfg, store, log_points=10)
    assert out.status == "finished"
    run = store.get_run(cfg.run_id)
    steps_per_epoch = build_task("quadratic", seed=1).steps_per_epoch
    assert run["steps"] == 3 * steps_per_epoch and run["status"] == "finished"
    epochs = store.epoch_metrics(cfg.run_id)
    assert len(epochs) == 4 * 3  # epoch 0 (initial) .. 3, train/val/test
    steps = store.step_metrics(cfg.run_id)
    assert 10 <= len(steps) <= 11 and steps[-1]["step"] == run["steps"]
    # The superlevel schedule: a(t) decreases, effective lr below a(t).
    assert all(s["effective_lr"] < s["lr"] for s in steps)
    assert steps[0]["lr"] > steps[-1]["lr"]
    assert run["test_metric"] == pytest.approx(epochs[-1]["metric"])
    assert run["env"]["device"] == "cpu" and run["env"]["torch"] == torch.__version__
    assert not list((tmp_path / "checkpoints").glob("*.pt"))  # removed after the commit
    again = run_one(cfg, store, tags=["tuned"])
    assert again.status == "skipped"
    assert store.get_run(cfg.run_id)["tags"] == ["default", "tuned"]
    assert store.count("runs") == 1


def test_interrupted_run_resumes_to_the_same_result(tmp_path: Path, monkeypatch) -> None:
    cfg = make_config("digits_mlp", "momentum", 1, epochs=3)
    clean = Store(tmp_path / "clean.db")
    # 10 log points: log windows straddle epoch ends, so the window is part of the resume.
    run_one(cfg, clean, log_points=10)
    expected = clean.get_run(cfg.run_id)

    store = Store(tmp_path / "r.db")
    real = runner._record_eval

    def interrupt_at_epoch_2(task, state, epoch, wall):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(task, state, epoch, wall)

    monkeypatch.setattr(runner, "_record_eval", interrupt_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run_one(cfg, store, log_points=10)
    assert store.status(cfg.run_id) == "running"
    assert len(list((tmp_path / "checkpoints").glob("*.pt"))) == 1
    monkeypatch.setattr(runner, "_record_eval", real)
    out = run_one(cfg, store, log_points=10)
    got = store.get_run(cfg.run_id)
    assert out.status == "finished" and got["resumed_from_epoch"] == 1
    assert got["steps"] % 3 == 0 and (got["steps"] // 3) % got["info"]["log_every"] != 0
    for key in ("test_metric", "test_loss", "val_metric", "train_loss", "steps"):
        assert got[key] == expected[key], key
    assert len(store.epoch_metrics(cfg.run_id)) == len(clean.epoch_metrics(cfg.run_id))
    assert store.step_metrics(cfg.run_id) == [
        dict(r, run_id=cfg.run_id) for r in clean.step_metrics(cfg.run_id)
    ]


def test_diverged_run_is_recorded_not_crashed(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    cfg = make_config("quadratic", "sgd", 1, epochs=2, hparams={"lr": 1e3})
    out = run_one(cfg, store)
    run = store.get_run(cfg.run_id)
    assert out.status == "diverged" and run["status"] == "diverged"
    assert run["test_metric"] is None
    assert run["steps"] < 2 * build_task("quadratic", seed=1).steps_per_epoch  # stopped early
    assert run_one(cfg, store).status == "skipped"


def test_failed_commit_loses_nothing(tmp_path: Path, monkeypatch) -> None:
    store = Store(tmp_path / "r.db")
    cfg = make_config("quadratic", "adam", 1, epochs=2)
    real_finish = store.finish_run

    def locked(*a, **kw):
        raise StoreError("results database is locked by another process")

    monkeypatch.setattr(store, "finish_run", locked)
    with pytest.raises(StoreError, match="locked"):
        run_one(cfg, store)
    assert len(list((tmp_path / "checkpoints").glob("*.pt"))) == 1
    monkeypatch.setattr(store, "finish_run", real_finish)

    def no_training(*a, **kw):
        raise AssertionError("the finished run was trained again")

    monkeypatch.setattr(runner, "_train", no_training)
    assert run_one(cfg, store).status == "finished"
    assert store.get_run(cfg.run_id)["resumed_from_epoch"] == 2
    assert not list((tmp_path / "checkpoints").glob("*.pt"))


def test_resolve_device() -> None:
    assert runner.resolve_device("cpu") == torch.device("cpu")
    assert runner.resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="'tpu'"):
        runner.resolve_device("tpu")


def test_run_config_label() -> None:
    assert RunConfig("t", "o", 3, "quick", 1).label() == "t/o/s3"


def test_guarded_run_records_its_guard_counters(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    cfg = make_config("quadratic", "superlevel_guarded", 1, epochs=1, hparams={"lr": 50.0})
    run_one(cfg, store)
    run = store.get_run(cfg.run_id)
    counters = run["info"]["guard"]
    assert counters["steps"] == run["steps"]
    assert counters["violations"] > 0  # lr=50 overshoots this quadratic: steps rejected
