"""The worker side: train one :class:`RunJob` and hand back a :class:`RunResult`.

A worker never touches the results store; whatever runs it (this process, a local pool,
Ray) hands the result to the parent, the store's only writer. Executors import this
module alone.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from superlevel.bench.run.checkpointing import (
    CheckpointError,
    RunState,
    checkpoint_path,
    make_checkpoint,
    mismatch,
    remove_orphans,
    restore,
    save_atomic,
    set_aside,
)
from superlevel.bench.run.checkpointing import load as load_checkpoint
from superlevel.bench.run.identity import RunConfig, code_identity, environment
from superlevel.bench.run.loop import build, summary, train

FINISHED, DIVERGED, PAUSED, FAILED = "finished", "diverged", "paused", "failed"
MISSING_DATA = "missing_data"  # the run's data set is absent on the worker
CHECKPOINT_ERROR = "checkpoint_error"  # a worker could not write a checkpoint


@dataclass(frozen=True)
class RunJob:
    """One run to train, with everything a worker (maybe on another machine) needs.

    Attributes:
        config: the run.
        device: ``auto``, ``cpu`` or ``cuda[:N]``, resolved by the worker.
        data_dir: data folder (``None``: the worker's ``$SUPERLEVEL_DATA``).
        checkpoint_dir: where the run's checkpoints live (a shared path for a cluster).
        log_points: about how many per-step records to keep.
        threads: torch CPU threads in the worker (0: leave torch's setting).
        progress: show a per-step bar (only meaningful in a terminal, in this process).
        until_epoch: stop after this epoch, keeping the checkpoint (``None``: to the end).
    """

    config: RunConfig
    device: str
    data_dir: str | None
    checkpoint_dir: str
    log_points: int = 100
    threads: int = 0
    progress: bool = False
    until_epoch: int | None = None


@dataclass
class RunResult:
    """What a worker hands back: a trained (or paused) run, or why there is none.

    ``status`` is ``finished``, ``diverged``, ``paused`` (stopped at ``until_epoch``),
    ``failed`` (``error`` says why, ``info`` has the traceback), ``missing_data``
    (``error`` names the data) or ``checkpoint_error`` (a checkpoint could not be
    written: the folder is at fault, the caller stops). ``code`` is the identity of the
    code that trained it (:func:`~superlevel.bench.run.identity.code_identity`).
    """

    run_id: str
    status: str
    summary: dict[str, Any] = field(default_factory=dict)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    code: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


def check_device_name(device: str) -> str:
    """``device`` if it is ``auto``, ``cpu`` or ``cuda[:N]``, else ``ValueError`` naming it."""
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    return device


def resolve_device(device: str) -> torch.device:
    """``auto`` -> ``cuda`` when available else ``cpu``; otherwise ``torch.device(device)``."""
    if check_device_name(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


def missing_data(
    task: str, data_dir: str | Path | None, options: Mapping[str, Any] | None = None
) -> str | None:
    """Where the data of ``task`` was looked for, when it is absent; else ``None``.

    A task with a ``corpus`` option (the character models) reads one text file: the
    ``corpus`` given in ``options``, else its default (``text/kjv.txt.gz`` in the data
    folder); the others read their data folder (``get_task(task).needs_data``).
    """
    from superlevel.bench.tasks import get_task
    from superlevel.data.base import resolve_data_dir

    spec = get_task(task)
    if "corpus" in spec.options:
        from superlevel.data.text import corpus_path

        corpus = {**spec.options, **(options or {})}["corpus"]
        path = corpus_path(corpus, None if data_dir is None else str(data_dir))
        return None if path.is_file() else f"no file {path}"
    if spec.needs_data is None:
        return None
    folder = resolve_data_dir(data_dir) / spec.needs_data
    return None if folder.is_dir() else f"no folder {folder}"


def require_data(
    task: str, data_dir: str | Path | None, options: Mapping[str, Any] | None = None
) -> None:
    """Raise ``MissingDataError`` when the data of ``task`` (with ``options``) is absent.

    A cheap check before anything is created (a database, a checkpoint folder); the
    loaders still check every file when the task is built.
    """
    from superlevel.data.base import MissingDataError

    where = missing_data(task, data_dir, options)
    if where is not None:
        how = (
            "put a UTF-8 text file there or pass --option corpus=FILE"
            if where.startswith("no file")
            else "set --data-dir or $SUPERLEVEL_DATA; `superlevel data download` fetches it"
        )
        raise MissingDataError(f"task {task!r} needs its data set: {where} ({how})")


def execute_job(job: RunJob) -> RunResult:
    """Train ``job`` (resuming from its checkpoint) and return the result; never raises.

    Any exception becomes a ``failed`` result with the error and its traceback, absent
    data a ``missing_data`` one, a checkpoint that cannot be written a
    ``checkpoint_error`` one. Interrupts (``KeyboardInterrupt``) propagate.
    """
    from superlevel.data.base import MissingDataError

    if job.threads:
        torch.set_num_threads(job.threads)
    env: dict[str, Any] = {}
    code: dict[str, Any] = {}
    try:
        identity = code_identity(job.config.task)
        code = {"id": identity.id, **identity.info()}
        dev = resolve_device(job.device)
        env = environment(dev)
        result = _train_job(job, dev, identity.id)
    except MissingDataError as exc:
        result = RunResult(job.config.run_id, MISSING_DATA, error=str(exc))
    except CheckpointError as exc:  # the folder's fault, not the run's: stop the command
        result = RunResult(
            job.config.run_id, CHECKPOINT_ERROR, info={"path": str(exc.path)}, error=str(exc)
        )
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        result = RunResult(
            job.config.run_id,
            FAILED,
            info={"error": error, "traceback": traceback.format_exc()},
            error=error,
        )
    result.environment, result.code = env, code
    return result


def _train_job(job: RunJob, dev: torch.device, code_id: str) -> RunResult:
    config = job.config
    path = checkpoint_path(job.checkpoint_dir, config.run_id)
    notes = [f"removed orphan temporary file {p.name}" for p in remove_orphans(path)]
    task, stepper = build(config, dev, job.data_dir)
    total = config.epochs * task.steps_per_epoch
    log_every = max(1, math.ceil(total / max(1, job.log_points)))
    state = RunState(log_every=log_every)
    if path.exists():
        try:
            ckpt = load_checkpoint(path, map_location=dev)
            reason = mismatch(ckpt, config, code_id, task.steps_per_epoch, log_every)
            if reason is not None:
                raise ValueError(reason)
            state = restore(ckpt, task.model, stepper, dev)
        except Exception as exc:  # unreadable, foreign or inconsistent: never trust half of it
            notes.append(set_aside(path, f"{type(exc).__name__}: {exc}"))
            task, stepper = build(config, dev, job.data_dir)
            state = RunState(log_every=log_every)
    resumed_from = state.epoch
    if state.done is None:
        train(config, task, stepper, state, path, dev, code_id=code_id, progress=job.progress,
              until_epoch=job.until_epoch)  # fmt: skip
    info: dict[str, Any] = {"task_info": task.info, "device": str(dev), "log_every": log_every}
    if task.probe is not None and state.done == FINISHED:
        info["probe"] = task.probe()  # the trained model, measured once
    guard = getattr(stepper, "guard", None)
    if guard is not None:  # how often the Lyapunov check rejected a step
        info["guard"] = dict(guard.counters)
    if state.done is not None:
        # Written before the store commit: if that commit fails, the rerun just commits.
        save_atomic(make_checkpoint(state, config.run_id, code_id, task.model, stepper, dev), path)
    return RunResult(
        config.run_id,
        state.done or PAUSED,
        summary=summary(task, state, resumed_from),
        epochs=state.epochs,
        steps=state.steps,
        info=info,
        warnings=notes,
    )
