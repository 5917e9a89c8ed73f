"""The study's one door into the benchmark harness.

Sections describe runs as :class:`~superlevel.bench.run.RunConfig` (through
:func:`config`) and hand them to :func:`run`; they read results back with
:func:`results`. Everything that depends on the harness's API (worker pools,
executors) is decided here, so a change of the harness touches this module only.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from superlevel.bench.executors import make_executor
from superlevel.bench.run import WARNING, RunConfig, make_config, run_many
from superlevel.study.common import Context


def config(
    task: str,
    optimizer: str,
    seed: int,
    *,
    budget: str = "quick",
    epochs: int | None = None,
    hparams: Mapping[str, Any] | None = None,
    task_options: Mapping[str, Any] | None = None,
) -> RunConfig:
    """A validated run configuration (see :func:`superlevel.bench.run.make_config`)."""
    return make_config(
        task,
        optimizer,
        seed,
        budget=budget,
        epochs=epochs,
        hparams=hparams,
        task_options=task_options,
    )


def _unique(configs: Sequence[RunConfig]) -> list[RunConfig]:
    seen: dict[str, RunConfig] = {}
    for c in configs:
        seen.setdefault(c.run_id, c)
    return list(seen.values())


def run(ctx: Context, configs: Sequence[RunConfig], tag: str) -> None:
    """Run every config not yet done (each once), tagging it ``tag``; logs progress with an ETA.

    With ``ctx.workers > 1`` the runs train in the harness's local worker pool (the
    results do not depend on the number of workers).
    """
    todo = _unique(configs)
    pending = [c for c in todo if ctx.store.status(c.run_id) not in ("finished", "diverged")]
    for c in todo:  # runs already done (by another section or profile) get this tag too
        if ctx.store.status(c.run_id) in ("finished", "diverged"):
            ctx.store.add_tags(c.run_id, [tag])
    ctx.log(f"{tag}: {len(todo)} runs, {len(todo) - len(pending)} already stored")
    if not pending:
        return
    start = time.perf_counter()
    done = [0]

    def log(line: str) -> None:
        if line.startswith(WARNING):  # a note about a run, not a finished run
            ctx.log(f"  {line}")
            return
        done[0] += 1
        elapsed = time.perf_counter() - start
        eta = elapsed / done[0] * (len(pending) - done[0])
        ctx.log(f"  {line} | {done[0]}/{len(pending)}, ETA {eta / 60:.1f} min")

    with make_executor("local", workers=ctx.workers) as executor:
        run_many(
            pending,
            ctx.store,
            executor=executor,
            device=ctx.device,
            data_dir=ctx.data_dir,
            checkpoint_dir=ctx.checkpoint_dir,
            tags=(tag,),
            log=log,
        )


def results(ctx: Context, configs: Sequence[RunConfig]) -> dict[str, dict[str, Any]] | None:
    """``{run_id: stored run}`` for ``configs``, or ``None`` unless every one is done."""
    out = {}
    for c in _unique(configs):
        row = ctx.store.get_run(c.run_id)
        if row is None or row["status"] not in ("finished", "diverged"):
            return None
        out[c.run_id] = row
    return out


def count_done(ctx: Context, configs: Sequence[RunConfig]) -> tuple[int, int]:
    """``(done, total)`` over the distinct ``configs``."""
    todo = _unique(configs)
    done = sum(ctx.store.status(c.run_id) in ("finished", "diverged") for c in todo)
    return done, len(todo)
