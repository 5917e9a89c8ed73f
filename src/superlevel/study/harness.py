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

    Every config goes to :func:`~superlevel.bench.run.run_many`, stored ones included, so
    a stored run of other code is refused, accepted or rerun by ``ctx.other_code`` (never
    silently reused). With ``ctx.workers > 1`` the runs train in the harness's local
    worker pool (the results do not depend on the number of workers).
    """
    todo = _unique(configs)
    pending = sum(ctx.store.status(c.run_id) not in ("finished", "diverged") for c in todo)
    ctx.log(f"{tag}: {len(todo)} runs, {len(todo) - pending} already stored")
    start = time.perf_counter()
    done = [0]

    def progress(out: Any) -> None:
        if out.previous:
            return
        done[0] += 1
        eta = (time.perf_counter() - start) / done[0] * max(pending - done[0], 0)
        ctx.log(f"  {out.config.label()}: {out.status} | {done[0]}/{pending}, "
                f"ETA {eta / 60:.1f} min")  # fmt: skip

    def warn(line: str) -> None:
        if line.startswith(WARNING):  # a note about a run; finished runs come by progress
            ctx.log(f"  {line}")

    # A pool only when something trains: checking stored runs needs no workers.
    with make_executor("local", workers=ctx.workers if pending else 1) as executor:
        run_many(
            todo,
            ctx.store,
            executor=executor,
            device=ctx.device,
            data_dir=ctx.data_dir,
            checkpoint_dir=ctx.checkpoint_dir,
            tags=(tag,),
            log=warn,
            other_code=ctx.other_code,
            on_outcome=progress,
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
