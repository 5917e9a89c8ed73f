"""The parent side: decide which runs to train, hand them to an executor, store each result.

:func:`run_many` works in two steps:

1. **Plan.** Each distinct config is looked up in the store. A run already ``finished``
   or ``diverged`` (or ``paused`` at or after the requested epoch) is reused, when the
   code that stored it is this code (:func:`~superlevel.bench.run.identity.code_identity`).
   A stored run of *other* code is refused by default (:class:`OtherCodeError` names the
   runs and what changed); ``other_code="accept"`` reuses it (the report says so) and
   ``"rerun"`` trains it again (the old result stays until the new one is committed).
   A ``failed`` run is skipped unless ``retry_failed``, or unless other code failed it.
   A ``running`` row (left by an older version killed mid-commit) is trained again.
2. **Commit.** The executor trains the rest (this process, a local worker pool or Ray:
   :mod:`superlevel.bench.executors`) and yields results as they arrive; each is written
   in one transaction (config, environment, code, status, metrics, tags), then handed to
   ``on_outcome``. The final checkpoint is written *before* that commit and removed after
   it, so a failed commit or a killed parent loses nothing: the rerun commits without
   retraining. A run that raises is stored as ``failed`` with its error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from superlevel.bench.executors import Executor, InProcessExecutor
from superlevel.bench.run.checkpointing import CheckpointError, checkpoint_path
from superlevel.bench.run.console import WARNING, Log, Progress, describe
from superlevel.bench.run.identity import RunConfig, code_identity
from superlevel.bench.run.worker import (
    CHECKPOINT_ERROR,
    DIVERGED,
    FAILED,
    FINISHED,
    MISSING_DATA,
    PAUSED,
    RunJob,
    RunResult,
    check_device_name,
    resolve_device,
)
from superlevel.bench.store import Store

OTHER_CODE_POLICIES = ("refuse", "accept", "rerun")
DONE = (FINISHED, DIVERGED)


@dataclass
class RunOutcome:
    """What happened to one config in :func:`run_many`.

    ``status``: ``finished``, ``diverged``, ``paused`` (stopped at the requested epoch),
    ``failed`` (``error`` says why), ``skipped`` (already done), ``missing_data``.
    ``previous`` is true when the outcome is an earlier call's (a stored run not trained
    again); ``other_code`` when that stored run was made by other code and accepted.
    """

    config: RunConfig
    status: str
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    previous: bool = False
    other_code: bool = False


class OtherCodeError(RuntimeError):
    """Stored runs were made by other code than this; nothing was trained or written."""


@dataclass
class _Plan:
    outcomes: list[RunOutcome | None]  # reused runs, by config index; None: train it
    todo: list[int]  # indices of the configs to train (first occurrence of each run)
    replace: set[str]  # run ids whose stored (other code's) result the new one replaces
    refused: list[str]  # lines naming stored runs of other code, when refused


def _stored_code_note(store: Store, row: dict[str, Any], config: RunConfig) -> str | None:
    """Why the stored ``row`` is not this code's (``None`` when it is)."""
    mine = code_identity(config.task)
    theirs = row.get("code_id")
    if theirs == mine.id:
        return None
    if theirs is None:
        return "stored before runs recorded their code"
    changed = mine.changed(store.code_info(theirs) or {})
    shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
    return f"code {theirs} (now {mine.id}; changed: {shown or 'unknown'})"


def _plan(
    configs: Sequence[RunConfig],
    store: Store,
    *,
    until_epoch: int | None,
    retry_failed: bool,
    other_code: str,
) -> _Plan:
    plan = _Plan([None] * len(configs), [], set(), [])
    seen: set[str] = set()
    for i, cfg in enumerate(configs):
        if cfg.run_id in seen:
            continue
        seen.add(cfg.run_id)
        row = store.get_run(cfg.run_id)
        status = None if row is None else row["status"]
        enough = status in DONE or (
            status == PAUSED and until_epoch is not None and row["epochs_done"] >= until_epoch
        )
        if status is None or (status not in (*DONE, PAUSED, FAILED)):
            plan.todo.append(i)  # new, or a stale `running` row: train (it resumes)
            continue
        assert row is not None
        note = _stored_code_note(store, row, cfg)
        if status == FAILED:
            if retry_failed or note is not None:
                plan.todo.append(i)
            else:
                error = row["info"].get("error")
                plan.outcomes[i] = RunOutcome(cfg, FAILED, error=error, previous=True)
            continue
        if note is not None and other_code == "refuse":
            plan.refused.append(f"{cfg.label()} ({cfg.run_id}, {status}): {note}")
            continue
        if note is not None and other_code == "rerun":
            plan.replace.add(cfg.run_id)
            plan.todo.append(i)
            continue
        if not enough:
            plan.todo.append(i)  # a paused run to train further
            continue
        shown = "skipped" if status in DONE else PAUSED
        plan.outcomes[i] = RunOutcome(
            cfg, shown, _row_summary(row), previous=True, other_code=note is not None
        )
    return plan


def _row_summary(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("steps", "epochs_done", "wall_s", "metric_name", "val_metric", "test_metric",
            "test_loss")  # fmt: skip
    return {k: row.get(k) for k in keys}


def _refusal(refused: list[str]) -> OtherCodeError:
    shown = "\n  ".join(refused[:5]) + (f"\n  ... and {len(refused) - 5} more" if
                                         len(refused) > 5 else "")  # fmt: skip
    return OtherCodeError(
        f"{len(refused)} stored run(s) were made by other code than this one:\n  {shown}\n"
        "Nothing was trained. Rerun them (--other-code rerun), reuse them as they are "
        "(--other-code accept; the report then says so), or use another --db."
    )


def _commit(store: Store, config: RunConfig, result: RunResult, tags: list[str],
            checkpoint_dir: str, replace: bool) -> None:  # fmt: skip
    """Write ``result`` in one transaction (the parent is the only writer); then drop the
    final checkpoint of a run that has ended."""
    store.record_run(
        {"run_id": config.run_id, **asdict(config)},
        status=result.status,
        summary=result.summary,
        epochs=result.epochs,
        steps=result.steps,
        info=result.info if result.status != FAILED else {**result.info, "error": result.error},
        environment=result.environment,
        code=result.code,
        tags=tags,
        replace=replace,
    )
    if result.status in DONE:
        checkpoint_path(checkpoint_dir, config.run_id).unlink(missing_ok=True)


@contextmanager
def executor_or_default(executor: Executor | None) -> Iterator[Executor]:
    """``executor``, or one that trains in this process (closed on exit)."""
    if executor is not None:
        yield executor
        return
    with InProcessExecutor() as own:
        yield own


def run_many(
    configs: Sequence[RunConfig],
    store: Store,
    *,
    executor: Executor | None = None,
    device: str = "cpu",
    data_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    tags: Iterable[str] = ("default",),
    log_points: int = 100,
    progress: bool = False,
    log: Log | None = None,
    on_outcome: Callable[[RunOutcome], None] | None = None,
    skip_missing_data: bool = False,
    retry_failed: bool = False,
    until_epoch: int | None = None,
    other_code: str = "refuse",
) -> list[RunOutcome]:
    """Run ``configs`` on ``executor`` and store each result as it arrives.

    Results do not depend on the executor or its number of workers: each run is seeded
    by its config alone. A config listed twice runs once.

    Args:
        configs: the runs.
        store: where results go; this process is its only writer.
        executor: where runs train (default: this process, one at a time).
        device: ``auto``, ``cpu`` or ``cuda[:N]`` (resolved where the run trains).
        data_dir: data folder for tasks with real data (``None``: env ``SUPERLEVEL_DATA``).
        checkpoint_dir: per-epoch checkpoints (default: ``checkpoints/`` next to the
            database; created on the first checkpoint). On a cluster: a shared path.
        tags: why these runs exist; added even to reused runs.
        log_points: about how many per-step records to keep per run (every ``k`` steps
            with ``k = ceil(total_steps / log_points)``).
        progress: an overall bar with ETA in a terminal, else a line every 30 s.
        log: receives one line per run; lines starting with :data:`WARNING` (a skipped
            task's missing data, a checkpoint set aside) must be shown even when quiet.
        on_outcome: called with each :class:`RunOutcome` once it is stored (reused runs
            first, then trained ones in the order they finish).
        skip_missing_data: a run whose data files are absent is reported (status
            ``missing_data``) and skipped; otherwise ``MissingDataError`` propagates.
        retry_failed: run ``failed`` runs again.
        until_epoch: train each run only to this epoch (``paused`` until a later call
            takes it further; ``None``: to its end).
        other_code: what to do with stored runs of other code: ``refuse`` (raise
            :class:`OtherCodeError` before anything is trained), ``accept`` or ``rerun``.

    Returns:
        One :class:`RunOutcome` per config, in the order of ``configs``.

    Raises:
        OtherCodeError: stored runs of other code, with ``other_code="refuse"``.
    """
    from superlevel.data.base import MissingDataError

    if other_code not in OTHER_CODE_POLICIES:
        raise ValueError(f"other_code must be one of {OTHER_CODE_POLICIES}, got {other_code!r}")
    if until_epoch is not None and (isinstance(until_epoch, bool) or until_epoch < 1):
        raise ValueError(f"until_epoch must be None or an integer >= 1, got {until_epoch!r}")
    tags = list(tags)
    ckpt_dir = str(Path(checkpoint_dir) if checkpoint_dir else store.path.parent / "checkpoints")
    plan = _plan(configs, store, until_epoch=until_epoch, retry_failed=retry_failed,
                 other_code=other_code)  # fmt: skip
    if plan.refused:
        raise _refusal(plan.refused)
    outcomes = plan.outcomes
    notify = on_outcome or (lambda _out: None)
    with executor_or_default(executor) as ex:
        # Where the runs train decides what "auto" means; a local one fails early here.
        device = check_device_name(device) if ex.remote else str(resolve_device(device))
        threads = torch.get_num_threads()
        jobs = [
            RunJob(configs[i], device, None if data_dir is None else str(data_dir), ckpt_dir,
                   log_points, threads, progress and ex.in_process, until_epoch)
            for i in plan.todo
        ]  # fmt: skip
        bar = Progress(len(jobs), progress, log)
        n = len(plan.todo) + sum(o is not None for o in outcomes)
        k = 0
        with ExitStack() as stack:
            stack.callback(bar.close)
            for out in outcomes:
                if out is not None:
                    store.add_tags(out.config.run_id, tags)
                    k += 1
                    bar.say(describe(k, n, out))
                    notify(out)
            missing: set[str] = set()
            results = stack.enter_context(closing(ex.map(jobs)))  # an error stops its workers
            for j, result in results:
                cfg = configs[plan.todo[j]]
                for note in result.warnings:
                    bar.say(f"{WARNING}{cfg.label()}: {note}")
                k += 1
                if result.status == CHECKPOINT_ERROR:
                    raise CheckpointError(result.error or "", Path(result.info["path"]))
                if result.status == MISSING_DATA:
                    if not skip_missing_data:
                        raise MissingDataError(result.error)
                    out = RunOutcome(cfg, MISSING_DATA, error=result.error)
                    if cfg.task not in missing:
                        missing.add(cfg.task)
                        bar.say(f"{WARNING}[{k}/{n}] {cfg.task}: SKIPPED, its data is missing "
                                f"({result.error})")  # fmt: skip
                else:
                    _commit(store, cfg, result, tags, ckpt_dir, cfg.run_id in plan.replace)
                    out = RunOutcome(cfg, result.status, result.summary, error=result.error)
                    bar.say(describe(k, n, out))
                outcomes[plan.todo[j]] = out
                notify(out)
                bar.advance()
    first = {c.run_id: o for c, o in zip(configs, outcomes, strict=True) if o is not None}
    return [o if o is not None else _repeat(first[c.run_id]) for c, o in
            zip(configs, outcomes, strict=True)]  # fmt: skip


def _repeat(out: RunOutcome) -> RunOutcome:
    """The outcome of a config listed again: its first listing's, as already done."""
    return RunOutcome(out.config, "skipped" if out.status in DONE else out.status, out.summary,
                      out.error, previous=True, other_code=out.other_code)  # fmt: skip


def run_one(config: RunConfig, store: Store, **kwargs: Any) -> RunOutcome:
    """Train ``config`` (or resume it, or skip it when done) and store the result.

    The one-run case of :func:`run_many` (same keyword arguments); missing data raises
    ``MissingDataError``.
    """
    return run_many([config], store, **kwargs)[0]
