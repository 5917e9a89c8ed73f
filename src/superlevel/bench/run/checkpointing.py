"""Checkpoints of runs: the run's state, its file format, atomic writes, consistency checks.

A run checkpoints at every epoch end (and once when it ends, before its result is stored)
and an interrupted run, even by ``kill -9``, resumes from its last completed epoch. A
checkpoint it cannot use (unreadable, another format, not this run's, inconsistent with
the configuration) is set aside with a warning and the run restarts; temporary files left
by a killed writer are removed.

A checkpoint is written to a temporary file next to it, flushed to disk, then renamed
over the old one (``os.replace`` is atomic on POSIX and Windows), so the file on disk is
always either the previous checkpoint or the new one. A failed write (full disk,
read-only folder) removes its temporary file, leaves the previous checkpoint as it was
and raises :class:`CheckpointError` naming the path and the cause; so does reading a
checkpoint that is truncated, corrupted or not a checkpoint at all.
"""

from __future__ import annotations

import os
import pickle
import socket
import time
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from superlevel.bench.optimizers import Stepper
    from superlevel.bench.run.identity import RunConfig

__all__ = [
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "RunState",
    "checkpoint_path",
    "load",
    "make_checkpoint",
    "mismatch",
    "remove_orphans",
    "restore",
    "save_atomic",
    "set_aside",
    "temporary_path",
]

CHECKPOINT_VERSION = 3  # 3: records the code that wrote it


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or read; the message names the file and the cause."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


ORPHAN_AGE_S = 3600.0  # a temporary file of another host this old is an orphan


def temporary_path(path: Path) -> Path:
    """Where :func:`save_atomic` writes before the rename: ``.<name>.<host>-<pid>.tmp``.

    Host and process id in the name, so that a live writer's file (on a folder shared by
    several machines too) is never taken for an orphan by :func:`remove_orphans`.
    """
    return path.with_name(f".{path.name}.{socket.gethostname()}-{os.getpid()}.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_orphans(path: Path) -> list[Path]:
    """Remove the temporary files of ``path`` left by writers that died mid-write.

    An orphan's writer ran on this host and is gone, or (another host's, on a shared
    folder) the file is older than :data:`ORPHAN_AGE_S`. Files named by older versions
    (``.<name>.<pid>.tmp``) count as this host's. Returns the removed files.
    """
    removed = []
    host = socket.gethostname()
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        owner = tmp.name[len(path.name) + 2 : -len(".tmp")]
        who, _, pid = owner.rpartition("-")
        if not pid.isdigit():
            who, pid = "", owner
        try:
            if who in ("", host):
                if _alive(int(pid)):
                    continue
            elif time.time() - tmp.stat().st_mtime < ORPHAN_AGE_S:
                continue
            tmp.unlink()
        except (FileNotFoundError, ValueError):
            continue
        removed.append(tmp)
    return removed


def _cause(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically (temporary file, fsync, rename).

    Raises:
        CheckpointError: the write failed; ``path`` still holds what it held before.
    """
    tmp = temporary_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # created with the first checkpoint
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch reports some write failures as RuntimeError
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise CheckpointError(
            f"cannot write checkpoint {path}: {_cause(exc)}; the previous checkpoint, "
            "if any, is unchanged",
            path,
        ) from exc


def load(path: Path, map_location: Any = None) -> dict[str, Any]:
    """The checkpoint at ``path`` (tensors only: ``weights_only=True``) as a dict.

    Raises:
        CheckpointError: the file cannot be read, is truncated or corrupted, or does not
            hold a checkpoint dict.
    """
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is unreadable or corrupted ({_cause(exc)})", path
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(state).__name__}, not a checkpoint", path
        )
    return state


# ------------------------------------------------------------------ a run's state


@dataclass
class RunState:
    """Where a run stands: everything a checkpoint needs besides model, optimizer and RNG.

    Attributes:
        epoch: completed epochs.
        step: optimizer steps taken.
        train_s: seconds inside the training loop (evaluation excluded).
        wall_s: seconds since the run started (across resumes).
        epochs: per-epoch records (epoch, step, split, loss, metric, wall_s), epoch 0 first.
        steps: per-step log records (step, loss, grad_norm, lr, effective_lr).
        steps_to_target: first step whose epoch-end validation metric reached the target.
        window_sum: training-loss sum since the last log point (it spans epoch ends).
        window_n: steps in that sum.
        log_every: steps between log points.
        done: ``None`` while training, then ``finished`` or ``diverged``.
    """

    epoch: int = 0
    step: int = 0
    train_s: float = 0.0
    wall_s: float = 0.0
    epochs: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    steps_to_target: int | None = None
    window_sum: float = 0.0
    window_n: int = 0
    log_every: int = 1
    done: str | None = None


def checkpoint_path(checkpoint_dir: str | Path, run_id: str) -> Path:
    """The checkpoint file of ``run_id`` in ``checkpoint_dir``."""
    return Path(checkpoint_dir) / f"{run_id}.pt"


def make_checkpoint(state: RunState, run_id: str, code_id: str, model: torch.nn.Module,
                    stepper: Stepper, dev: torch.device) -> dict[str, Any]:  # fmt: skip
    """The checkpoint payload: format version, run id, the id of the code that wrote it,
    state, model, stepper and RNG."""
    return {
        "version": CHECKPOINT_VERSION,
        "run_id": run_id,
        "code_id": code_id,
        "state": asdict(state),
        "model": model.state_dict(),
        "stepper": stepper.state_dict(),
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
    }


def mismatch(ckpt: Any, config: RunConfig, code_id: str, steps_per_epoch: int,
             log_every: int) -> str | None:  # fmt: skip
    """Why checkpoint ``ckpt`` cannot be this run's, or ``None`` when it is consistent.

    Consistent means: this format, this ``run_id``, written by this code (a run is
    trained by one code from start to end), ``0 <= epoch <= epochs`` (``epochs``
    when finished), ``step <= steps_per_epoch * (epoch + diverged)``, this ``log_every``
    and one record per split for epochs ``0..epoch``.
    """
    if not isinstance(ckpt, dict) or ckpt.get("version") != CHECKPOINT_VERSION:
        found = ckpt.get("version") if isinstance(ckpt, dict) else type(ckpt).__name__
        return f"format {found!r}, expected {CHECKPOINT_VERSION}"
    if ckpt.get("run_id") != config.run_id:
        return f"it belongs to run {ckpt.get('run_id')!r}"
    if ckpt.get("code_id") != code_id:
        return f"it was written by other code ({ckpt.get('code_id')}, this is {code_id})"
    try:
        s = RunState(**ckpt["state"])
    except TypeError as exc:
        return f"its state has other fields ({exc})"
    if s.done not in (None, "finished", "diverged"):
        return f"its status is {s.done!r}"
    if not 0 <= s.epoch <= config.epochs or (s.done == "finished" and s.epoch != config.epochs):
        return f"it claims epoch {s.epoch} ({s.done or 'running'}) of a {config.epochs}-epoch run"
    max_steps = steps_per_epoch * min(config.epochs, s.epoch + (s.done == "diverged"))
    if not 0 <= s.step <= max_steps:
        return f"it claims {s.step} steps after epoch {s.epoch}; at most {max_steps} fit"
    if s.log_every != log_every:
        return f"it logs every {s.log_every} steps, this run every {log_every}"
    if len(s.epochs) != 3 * (s.epoch + 1):
        return f"it has {len(s.epochs)} epoch records for epoch {s.epoch}"
    return None


def restore(ckpt: dict[str, Any], model: torch.nn.Module, stepper: Stepper,
            dev: torch.device) -> RunState:  # fmt: skip
    """Load a consistent checkpoint (see :func:`mismatch`) into model, stepper and RNG."""
    model.load_state_dict(ckpt["model"])
    stepper.load_state_dict(ckpt["stepper"])
    torch.set_rng_state(ckpt["rng"].cpu())
    if dev.type == "cuda" and ckpt.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(ckpt["cuda_rng"].cpu(), dev)
    return RunState(**ckpt["state"])


def set_aside(path: Path, reason: str) -> str:
    """Move an unusable checkpoint out of the way; the warning that says so."""
    aside = path.with_name(f"{path.name}.unusable-{time.strftime('%Y%m%dT%H%M%S')}")
    try:
        os.replace(path, aside)
    except OSError as exc:
        raise CheckpointError(
            f"checkpoint {path} is unusable ({reason}) and cannot be moved aside: "
            f"{exc.strerror or exc}",
            path,
        ) from exc
    return f"checkpoint {path} is unusable ({reason}); moved it to {aside.name}, run restarted"
