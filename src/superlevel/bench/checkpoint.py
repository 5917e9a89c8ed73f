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
from contextlib import suppress
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "load", "save_atomic", "temporary_path"]


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or read; the message names the file and the cause."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


def temporary_path(path: Path) -> Path:
    """Where :func:`save_atomic` writes before the rename (hidden, per process)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


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
