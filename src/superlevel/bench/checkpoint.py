"""Checkpoint files: written atomically, read back with errors that name the file.

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
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "load", "remove_orphans", "save_atomic", "temporary_path"]


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
