"""The runner: identity, validation, resume after interruption, divergence, failed commits."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from superlevel.bench import run as runner
from superlevel.bench.run import (
    RunConfig,
    checkpointing,
    console,
    loop,
    make_config,
    run_one,
    worker,
)
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


def _interrupted(cfg: runner.RunConfig, store: Store, monkeypatch, log_points: int = 100) -> Path:
    """Run ``cfg`` until the end of epoch 1 (then interrupt); its checkpoint."""
    real = loop._record_eval

    def interrupt_at_epoch_2(task, state, epoch, wall):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(task, state, epoch, wall)

    monkeypatch.setattr(loop, "_record_eval", interrupt_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run_one(cfg, store, log_points=log_points)
    monkeypatch.setattr(loop, "_record_eval", real)
    path = runner.checkpoint_path(store.path.parent / "checkpoints", cfg.run_id)
    assert path.exists()
    return path


def test_interrupted_run_resumes_to_the_same_result(tmp_path: Path, monkeypatch) -> None:
    cfg = make_config("digits_mlp", "momentum", 1, epochs=3)
    clean = Store(tmp_path / "clean.db")
    # 10 log points: log windows straddle epoch ends, so the window is part of the resume.
    run_one(cfg, clean, log_points=10)
    expected = clean.get_run(cfg.run_id)

    store = Store(tmp_path / "r.db")
    _interrupted(cfg, store, monkeypatch, log_points=10)
    assert store.status(cfg.run_id) is None  # only outcomes reach the store
    assert len(list((tmp_path / "checkpoints").glob("*.pt"))) == 1
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
    real_finish = store.record_run

    def locked(*a, **kw):
        raise StoreError("results database is locked by another process")

    monkeypatch.setattr(store, "record_run", locked)
    with pytest.raises(StoreError, match="locked"):
        run_one(cfg, store)
    assert len(list((tmp_path / "checkpoints").glob("*.pt"))) == 1
    monkeypatch.setattr(store, "record_run", real_finish)

    def no_training(*a, **kw):
        raise AssertionError("the finished run was trained again")

    monkeypatch.setattr(worker, "train", no_training)
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


# ------------------------------------------------------------------ failed runs and checkpoints


def test_a_run_that_raises_is_stored_failed_and_skipped_unless_retried(
    tmp_path: Path, monkeypatch
) -> None:
    store = Store(tmp_path / "r.db")
    cfg = make_config("quadratic", "sgd", 1, epochs=2)
    real = worker.train

    def boom(*a, **kw):
        raise RuntimeError("overflow in the update")

    monkeypatch.setattr(worker, "train", boom)
    out = run_one(cfg, store)
    assert out.status == "failed" and out.error == "RuntimeError: overflow in the update"
    run = store.get_run(cfg.run_id)
    assert run["status"] == "failed" and run["info"]["error"] == out.error
    assert "Traceback" in run["info"]["traceback"]
    # The next call does not train it again...
    monkeypatch.setattr(worker, "train", real)
    again = run_one(cfg, store, tags=["tuned"])
    assert again.status == "failed" and again.previous and again.error == out.error
    assert store.get_run(cfg.run_id)["tags"] == ["default", "tuned"]
    # ... unless asked to.
    retried = run_one(cfg, store, retry_failed=True)
    assert retried.status == "finished" and store.get_run(cfg.run_id)["status"] == "finished"
    assert store.count("runs") == 1


def _run_logged(cfg: runner.RunConfig, store: Store) -> tuple[runner.RunOutcome, list[str]]:
    lines: list[str] = []
    out = runner.run_many([cfg], store, log=lines.append)[0]
    return out, [m for m in lines if m.startswith(runner.WARNING)]


def test_a_corrupted_checkpoint_is_set_aside_and_the_run_restarted(tmp_path: Path) -> None:
    cfg = make_config("quadratic", "adam", 1, epochs=2)
    clean = Store(tmp_path / "clean" / "r.db")
    expected = run_one(cfg, clean).summary
    store = Store(tmp_path / "r.db")
    path = runner.checkpoint_path(tmp_path / "checkpoints", cfg.run_id)
    path.parent.mkdir()
    path.write_bytes(b"\x80\x02 not a checkpoint")
    out, warnings = _run_logged(cfg, store)
    assert out.status == "finished"
    assert len(warnings) == 1 and f"checkpoint {path} is unusable" in warnings[0]
    assert "run restarted" in warnings[0]
    aside = list(path.parent.glob(f"{path.name}.unusable-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == b"\x80\x02 not a checkpoint"
    for key in ("test_metric", "val_metric", "train_loss", "steps"):
        assert out.summary[key] == expected[key], key
    assert out.summary["resumed_from_epoch"] == 0


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda c: c["state"].update(epoch=500, done="finished"), "claims epoch 500"),
        (lambda c: c["state"].update(step=10_000), "claims 10000 steps"),
        (lambda c: c.update(run_id="0123456789abcdef"), "belongs to run '0123456789abcdef'"),
        (lambda c: c.update(version=1), "format 1"),
    ],
)
def test_a_checkpoint_that_does_not_match_its_run_is_refused(
    tmp_path: Path, monkeypatch, tamper, reason
) -> None:
    cfg = make_config("quadratic", "sgd", 1, epochs=3)
    store = Store(tmp_path / "r.db")
    path = _interrupted(cfg, store, monkeypatch)
    ckpt = torch.load(path, weights_only=True)
    tamper(ckpt)
    torch.save(ckpt, path)
    out, warnings = _run_logged(cfg, store)
    assert len(warnings) == 1 and reason in warnings[0], warnings
    steps_per_epoch = build_task("quadratic", seed=1).steps_per_epoch
    run = store.get_run(cfg.run_id)
    assert out.status == "finished" and run["steps"] == 3 * steps_per_epoch
    assert run["resumed_from_epoch"] == 0 and len(store.epoch_metrics(cfg.run_id)) == 4 * 3


def test_orphan_temporary_checkpoints_are_removed(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    cfg = make_config("quadratic", "sgd", 1, epochs=1)
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    host = socket.gethostname()
    orphans = [
        folder / f".{cfg.run_id}.pt.{host}-{dead.pid}.tmp",
        folder / f".{cfg.run_id}.pt.{dead.pid}.tmp",
    ]
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    live = folder / f".{cfg.run_id}.pt.{host}-{writer.pid}.tmp"  # a writer still at work
    other = folder / f".{cfg.run_id}.pt.elsewhere-1.tmp"  # another host's, recent
    for p in [*orphans, live, other]:
        p.write_bytes(b"half a checkpoint")
    try:
        out, warnings = _run_logged(cfg, Store(tmp_path / "r.db"))
    finally:
        writer.kill()
        writer.wait()
    assert out.status == "finished"
    assert not any(p.exists() for p in orphans) and live.exists() and other.exists()
    assert sorted(warnings) == sorted(
        f"{runner.WARNING}{cfg.label()}: removed orphan temporary file {p.name}" for p in orphans
    )


def test_checkpoint_state_is_typed(tmp_path: Path, monkeypatch) -> None:
    cfg = make_config("quadratic", "sgd", 1, epochs=3)
    path = _interrupted(cfg, Store(tmp_path / "r.db"), monkeypatch)
    ckpt = torch.load(path, weights_only=True)
    state = checkpointing.RunState(**ckpt["state"])
    assert state.epoch == 1 and state.done is None and ckpt["run_id"] == cfg.run_id
    assert state.step == build_task("quadratic", seed=1).steps_per_epoch


# ------------------------------------------------------------------ progress and messages


def test_progress_without_a_terminal_is_plain_periodic_lines(monkeypatch) -> None:
    lines: list[str] = []
    bar = console.Progress(3, True, lines.append, interval=0.0)
    for _ in range(3):
        bar.advance()
    bar.close()
    assert len(lines) == 2  # after runs 1 and 2; the last one needs no ETA
    assert lines[0].startswith("progress: 1/3 runs, ") and " elapsed, ETA " in lines[0]
    assert not any("\r" in m for m in lines)


def test_a_run_in_a_pipe_writes_no_carriage_returns(tmp_path: Path, capfd) -> None:
    from superlevel.cli import main

    argv = ["bench", "run", "--task", "digits_mlp", "--optimizers", "sgd", "--epochs", "1",
            "--db", str(tmp_path / "r.db"), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    out, err = capfd.readouterr()
    assert "\r" not in out and "\r" not in err
    assert "digits_mlp/sgd/s1" in out


def test_run_many_reports_through_its_log_only(tmp_path: Path, capfd) -> None:
    empty = tmp_path / "no-data"
    empty.mkdir()
    configs = [
        make_config("mnist_mlp", "sgd", 1, epochs=1),
        make_config("quadratic", "sgd", 1, epochs=1),
    ]
    lines: list[str] = []
    store = Store(tmp_path / "r.db")
    outs = runner.run_many(configs, store, data_dir=empty, log=lines.append, skip_missing_data=True)
    assert [o.status for o in outs] == ["missing_data", "finished"]
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert lines[0].startswith(f"{runner.WARNING}[1/2] mnist_mlp: SKIPPED, its data is missing")


def test_a_run_that_fails_for_missing_data_creates_no_folders(tmp_path: Path, capsys) -> None:
    from superlevel.cli import main

    empty = tmp_path / "no-data"
    empty.mkdir()
    db = tmp_path / "results" / "r.db"
    argv = ["bench", "run", "--task", "mnist_mlp", "--optimizers", "sgd", "--db", str(db),
            "--data-dir", str(empty), "--quiet"]  # fmt: skip
    assert main(argv) == 2
    assert "error: " in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no-data"]
    # Also when the data goes missing only once the run has started: no checkpoints/.
    store = Store(tmp_path / "other" / "r.db")
    with pytest.raises(Exception, match="mnist"):
        run_one(make_config("mnist_mlp", "sgd", 1, epochs=1), store, data_dir=empty)
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["r.db"]


def test_progress_in_a_terminal_is_one_overall_bar(monkeypatch) -> None:
    monkeypatch.setattr(console.sys.stderr, "isatty", lambda: True, raising=False)
    lines: list[str] = []
    bar = console.Progress(2, True, lines.append, interval=0.0)
    assert bar.bar is not None and bar.bar.total == 2 and bar.bar.unit == "run"
    bar.say("[1/2] a run")
    bar.advance()
    bar.advance()
    assert bar.bar.n == 2 and lines == ["[1/2] a run"]  # no plain progress lines
    bar.close()


def test_the_guarded_stepper_restores_batchnorm_buffers_on_a_rejected_step() -> None:
    from superlevel.bench.optimizers import get_optimizer

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 1)
    )
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    # A huge step and no retries: the loss rises, the step is rejected, nothing may change.
    stepper = get_optimizer("superlevel_guarded").build(
        model.parameters(), {"lr": 100.0, "max_retries": 0}, buffers=model.buffers()
    )
    before = [b.clone() for b in model.buffers()]

    def closure() -> torch.Tensor:
        stepper.optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)  # train mode: updates the BN stats
        loss.backward()
        return loss

    stepper.step(closure)
    assert not stepper.guard.last.applied
    for b, ref in zip(model.buffers(), before, strict=True):
        assert torch.equal(b, ref)


def test_a_finished_run_stores_the_sharpness_of_its_final_model(tmp_path: Path) -> None:
    from superlevel.stability import sharpness

    cfg = make_config(
        "digits_mlp", "superlevel", 1, epochs=1, task_options={"sharpness_examples": 100}
    )
    assert cfg.run_id != make_config("digits_mlp", "superlevel", 1, epochs=1).run_id
    with Store(tmp_path / "r.db") as store:
        run_one(cfg, store, checkpoint_dir=tmp_path / "ck")
        probe = store.get_run(cfg.run_id)["info"]["probe"]
    assert probe["sharpness_examples"] == 100 and probe["sharpness"] > 0
    # The same number from the trained model directly: retrain (the run is deterministic).
    task, stepper = loop.build(cfg, torch.device("cpu"), None)
    for x, y in task.train_batches(0):

        def closure(x=x, y=y):
            stepper.optimizer.zero_grad(set_to_none=True)
            loss = task.loss_fn(task.model(x), y)
            loss.backward()
            return loss

        stepper.step(closure)
    x, y = next(iter(task.eval_batches("train")))
    direct = sharpness(
        lambda: task.loss_fn(task.model(x[:100]), y[:100]), task.model, model=task.model
    )
    assert probe["sharpness"] == pytest.approx(direct, rel=1e-6)
    with pytest.raises(ValueError, match="sharpness_examples must be an int >= 0"):
        build_task("digits_mlp", seed=1, sharpness_examples=-1)
