"""Runs as Ray tasks on a local Ray with 2 CPUs: the local pool's numbers, kill-safely."""

from __future__ import annotations

from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the optional extra 'ray' is not installed")

import superlevel  # noqa: E402
from superlevel.bench.executors import LocalPoolExecutor, RayExecutor  # noqa: E402
from superlevel.bench.run import checkpoint_path, make_config, run_many  # noqa: E402
from superlevel.bench.store import Store  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of 2 CPUs whose workers import this checkout of the package."""
    src = str(Path(superlevel.__file__).resolve().parents[1])
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": src}},
    )
    yield
    ray.shutdown()


def test_a_suite_through_ray_equals_the_local_pool_run_for_run(
    tmp_path: Path, local_ray, store_numbers
) -> None:
    configs = [
        make_config("quadratic", o, s, epochs=2) for o in ("sgd", "superlevel") for s in (1, 2)
    ]
    configs.append(make_config("digits_mlp", "adam", 1, epochs=2))
    with RayExecutor() as ex:
        assert ex.workers == 2 and ex.remote
        on_ray = Store(tmp_path / "ray.db")
        outs = run_many(configs, on_ray, executor=ex)
    assert ray.is_initialized()  # it used the Ray it found and left it running
    assert [o.status for o in outs] == ["finished"] * 5
    pooled = Store(tmp_path / "pool.db")
    with LocalPoolExecutor(2) as pool:
        run_many(configs, pooled, executor=pool)
    assert store_numbers(on_ray) == store_numbers(pooled)
    assert len(store_numbers(on_ray)) == 5


def _ray_task_pids() -> list[int]:
    import psutil

    pids = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if cmd and cmd[0].startswith("ray::_ray_execute"):
            pids.append(p.pid)
    return pids


def test_a_killed_ray_worker_is_retried_and_its_run_stored_once(
    tmp_path: Path, local_ray, kill_first
) -> None:
    cfg = make_config("digits_mlp", "momentum", 1, epochs=12)
    ckpt = checkpoint_path(tmp_path / "checkpoints", cfg.run_id)

    def the_worker_once_it_has_a_checkpoint() -> int | None:
        pids = _ray_task_pids()
        return pids[0] if len(pids) == 1 and ckpt.exists() else None

    store = Store(tmp_path / "r.db")
    with kill_first(the_worker_once_it_has_a_checkpoint) as killed, RayExecutor() as ex:
        (out,) = run_many([cfg], store, executor=ex)
    assert killed, "the run finished before its Ray worker could be killed"
    assert out.status == "finished"
    run = store.get_run(cfg.run_id)
    assert run["resumed_from_epoch"] >= 1  # the retry resumed from the checkpoint
    assert store.count("runs") == 1 and len(store.epoch_metrics(cfg.run_id)) == (12 + 1) * 3
    assert not ckpt.exists()
