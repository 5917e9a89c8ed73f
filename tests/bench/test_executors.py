"""Executors: a local worker pool gives the in-process results run for run, kill-safely."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from superlevel.bench import run as runner
from superlevel.bench.executors import (
    InProcessExecutor,
    LocalPoolExecutor,
    default_workers,
    make_executor,
)
from superlevel.bench.run import checkpoint_path, make_config, run_many, worker
from superlevel.bench.store import Store
from superlevel.bench.tune import Protocol, tune


@pytest.fixture(scope="module")
def pool():
    """Two worker processes shared by the tests of this module (they start once)."""
    with LocalPoolExecutor(2) as ex:
        yield ex


def _suite() -> list[runner.RunConfig]:
    quad = [make_config("quadratic", "sgd", s, epochs=2) for s in (1, 2)]
    digits = [make_config("digits_mlp", o, 1, epochs=1) for o in ("adam", "superlevel_guarded")]
    return quad + digits


def _grid(store: Store, executor) -> None:
    tune("quadratic", ["superlevel"], Protocol(trials=2, seeds=2, halving=1, max_rounds=0,
         search="lr-grid"), store, epochs=2, executor=executor)  # fmt: skip


def test_workers_2_give_the_results_of_workers_1_run_for_run(
    tmp_path: Path, pool, store_numbers
) -> None:
    one, two = Store(tmp_path / "one.db"), Store(tmp_path / "two.db")
    out1 = run_many(_suite(), one)
    out2 = run_many(_suite(), two, executor=pool)
    assert [o.config for o in out2] == [o.config for o in out1]  # in the order given
    assert [o.status for o in out2] == ["finished"] * 4
    _grid(one, None)
    _grid(two, pool)
    got, expected = store_numbers(two), store_numbers(one)
    assert len(got) == 4 + 2 + 2  # grid points on the tuning seed, finals on seeds 1-2
    assert got == expected
    env = {r["env"]["torch_threads"] for r in two.runs()}
    assert env == {r["env"]["torch_threads"] for r in one.runs()}
    # Skipped the second time, wherever: only outcomes, no new rows.
    again = run_many(_suite(), two, executor=pool)
    assert {o.status for o in again} == {"skipped"} and two.count("runs") == 8


def test_a_run_does_not_depend_on_the_runs_before_it_in_its_process(
    tmp_path: Path, store_numbers
) -> None:
    # A pool hands each worker a different sequence of runs: any state one run leaves in
    # its process (global RNGs, caches, torch settings) would change the next one's numbers.
    suite = _suite() + [make_config("multiwell", "superlevel_momentum", 2, epochs=1)]
    forward, backward = Store(tmp_path / "f.db"), Store(tmp_path / "b.db")
    run_many(suite, forward)
    run_many(suite[::-1], backward)
    assert store_numbers(backward) == store_numbers(forward)


def test_a_killed_worker_is_replaced_and_its_run_resumed_and_stored_once(
    tmp_path: Path, pool, kill_first
) -> None:
    long = make_config("digits_mlp", "momentum", 1, epochs=8)
    short = make_config("quadratic", "sgd", 1, epochs=2)
    ckpt = checkpoint_path(tmp_path / "checkpoints", long.run_id)
    store = Store(tmp_path / "r.db")
    # Once the run has a checkpoint (epoch 1 done), kill the worker training it.
    with kill_first(lambda: ckpt.exists() and pool.running().get(long.run_id)) as killed:
        outs = run_many([long, short], store, executor=pool)
    assert killed, "the run finished before its worker could be killed"
    assert [o.status for o in outs] == ["finished", "finished"]
    run = store.get_run(long.run_id)
    assert run["resumed_from_epoch"] >= 1 and store.count("runs") == 2
    assert len(store.epoch_metrics(long.run_id)) == (8 + 1) * 3  # each epoch once
    assert not ckpt.exists()


def test_a_run_that_kills_its_worker_every_time_fails_after_max_attempts(tmp_path: Path) -> None:
    cfg = make_config("quadratic", "sgd", 1, epochs=1)
    job = runner.RunJob(cfg, "cpu", None, str(tmp_path))
    with LocalPoolExecutor(1, max_attempts=2) as ex:
        ex_map = ex.map([job])
        started = []

        def killer() -> None:
            while len(started) < 2:
                for pid in ex.running().values():
                    if pid not in started:
                        started.append(pid)
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.002)

        t = threading.Thread(target=killer, daemon=True)
        t.start()
        ((i, result),) = list(ex_map)
        t.join(timeout=60)
    assert i == 0 and result.status == "failed"
    assert result.error == "the worker process died 2 times while training this run"


def test_make_executor_and_defaults() -> None:
    assert isinstance(make_executor("local"), InProcessExecutor)
    assert isinstance(make_executor("local", workers=1), InProcessExecutor)
    ex = make_executor("local", workers=3)
    assert isinstance(ex, LocalPoolExecutor) and ex.workers == 3
    ex.close()  # never started a process
    assert 1 <= default_workers() <= 8
    with pytest.raises(ValueError, match="workers must be an integer >= 1, got 0"):
        make_executor("local", workers=0)
    with pytest.raises(ValueError, match="executor must be one of local, ray, got 'dask'"):
        make_executor("dask")
    with pytest.raises(ValueError, match="--address 'x:1' needs --executor ray"):
        make_executor("local", address="x:1")


def test_a_halving_search_in_a_pool_equals_it_in_this_process(tmp_path: Path, pool,
                                                              store_numbers) -> None:  # fmt: skip
    protocol = Protocol(trials=4, seeds=1, halving=2, max_rounds=1)
    one, two = Store(tmp_path / "one.db"), Store(tmp_path / "two.db")
    a = tune("quadratic", ["sgd", "superlevel"], protocol, one, epochs=4)
    b = tune("quadratic", ["sgd", "superlevel"], protocol, two, epochs=4, executor=pool)

    def decisions(res):  # everything but the seconds it took
        return {k: {**v.to_json(), "compute": {**v.compute, "train_s": None}}
                for k, v in res.items()}  # fmt: skip

    assert decisions(a) == decisions(b)
    assert store_numbers(one) == store_numbers(two)


def test_demo_calls_the_benchmark_directly_on_every_core(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    from superlevel.bench import cli as bench_cli
    from superlevel.bench import suites
    from superlevel.cli import build_parser, main

    assert build_parser().parse_args(["demo"]).workers == default_workers()

    def not_through_the_cli(args):
        raise AssertionError("demo went through the command line")

    for name in ("cmd_run", "cmd_tune", "cmd_report"):
        monkeypatch.setattr(bench_cli, name, not_through_the_cli)
    tiny = suites.Suite("quick", "stand-in", ("quadratic",), ("sgd",), 1, "quick",
                        tune_tasks=("quadratic",), trials=2)  # fmt: skip
    monkeypatch.setitem(suites.SUITES, "quick", tiny)
    db, out = tmp_path / "d.db", tmp_path / "rep"
    argv = ["demo", "--db", str(db), "--out", str(out), "--quiet", "--workers", "2"]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "runs trained" in stdout and str(out / "report.html") in stdout
    assert len({r["run_id"] for r in Store(db).runs(tag="trial")}) >= 2
    assert (out / "report.md").exists()


def test_cli_flags_retry_failed_storage_workers(tmp_path: Path, monkeypatch, capsys) -> None:
    from superlevel.cli import main

    db = str(tmp_path / "r.db")
    run = ["bench", "run", "--task", "quadratic", "--optimizers", "sgd", "--epochs", "1",
           "--db", db, "--quiet"]  # fmt: skip
    real = worker.train

    def boom(*a, **kw):
        raise RuntimeError("overflow in the update")

    monkeypatch.setattr(worker, "train", boom)
    assert main(run) == 1
    assert "1 runs (1 failed)" in capsys.readouterr().out
    monkeypatch.setattr(worker, "train", real)
    assert main([*run, "--quiet"]) == 1  # skipped: still failed
    assert main([*run, "--retry-failed"]) == 0
    assert "1 runs (1 finished)" in capsys.readouterr().out

    tune = ["bench", "tune", "--task", "quadratic", "--optimizers", "sgd", "--trials", "1",
            "--seeds", "1", "--epochs", "1", "--db", db, "--quiet"]  # fmt: skip
    assert main(tune) == 0
    capsys.readouterr()
    for extra, message in (
        (["--tuning-seed", "1"], "tuning_seed 1 is one of the final seeds 1..1"),
        (["--search", "tpe"], None),
        (["--workers", "0"], "--workers must be >= 1, got 0"),
        (["--address", "h:1"], "--address 'h:1' needs --executor ray"),
    ):
        if message is None:  # argparse refuses it
            with pytest.raises(SystemExit):
                main([*tune, *extra])
            capsys.readouterr()
            continue
        assert main([*tune, *extra]) == 2
        assert capsys.readouterr().err.startswith(f"error: {message}")
