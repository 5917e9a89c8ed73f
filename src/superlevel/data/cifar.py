"""CIFAR-10 from the standard python-pickle batches, with checksums.

Layout: ``<data_dir>/cifar-10-batches-py/{data_batch_1..5, test_batch}``, each a pickled
dict with ``b"data"`` (``uint8 (n, 3072)``, channel-major: 1024 red, 1024 green, 1024
blue values of a 32x32 image) and ``b"labels"`` (``n`` ints in ``0..9``). The checksum
of every file is verified *before* it is unpickled, so only the known files (or files
whose checksums the caller supplies) ever reach :mod:`pickle`.
"""

from __future__ import annotations

import functools
import io
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from superlevel.data.base import (
    DataIntegrityError,
    MissingDataError,
    resolve_data_dir,
    verify_md5,
)

__all__ = ["CIFAR10_DIR", "CIFAR10_FILES", "load_cifar10", "read_cifar_batch"]

CIFAR10_DIR = "cifar-10-batches-py"
# md5 of each batch file as published with the official archive.
CIFAR10_FILES: dict[str, str] = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only builtins and numpy arrays (the batches hold dicts, lists and bytes)."""

    _ALLOWED = {
        ("_codecs", "encode"),  # protocol-2 pickles written by Python 3 encode bytes this way
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def read_cifar_batch(
    path: str | os.PathLike[str], md5: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR batch file: images ``uint8 (n, 3, 32, 32)`` and labels ``int64 (n,)``.

    Raises:
        DataIntegrityError: checksum mismatch, a truncated or malformed pickle, or
            inconsistent sizes (the message names the file).
    """
    p = Path(path)
    raw = p.read_bytes()
    verify_md5(raw, md5, p, "file")
    try:
        batch = _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise DataIntegrityError(f"{p}: not a readable CIFAR pickle batch ({exc})") from exc
    if not isinstance(batch, Mapping) or b"data" not in batch or b"labels" not in batch:
        raise DataIntegrityError(f"{p}: expected a dict with b'data' and b'labels'")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataIntegrityError(
            f"{p}: data must be uint8 (n, 3072), got {data.dtype} {data.shape}"
        )
    if labels.shape != (data.shape[0],):
        raise DataIntegrityError(f"{p}: {data.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataIntegrityError(f"{p}: labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels


@functools.lru_cache(maxsize=2)
def _load_cached(
    folder: str, checksums: tuple[tuple[str, str | None], ...]
) -> dict[str, np.ndarray]:
    sums = dict(checksums)
    parts = {}
    for name in [*_TRAIN, "test_batch"]:
        path = Path(folder) / name
        if not path.is_file():
            raise MissingDataError(
                f"cifar10: {path} not found. Get it with `superlevel data download cifar10 "
                f"--data-dir {Path(folder).parent}` (unpacks {CIFAR10_DIR}/ there)"
            )
        parts[name] = read_cifar_batch(path, sums.get(name))
    train = [parts[n] for n in _TRAIN]
    return {
        "train_images": np.concatenate([x for x, _ in train]),
        "train_labels": np.concatenate([y for _, y in train]),
        "test_images": parts["test_batch"][0],
        "test_labels": parts["test_batch"][1],
    }


def load_cifar10(
    data_dir: str | os.PathLike[str] | None = None,
    checksums: Mapping[str, str | None] | None = None,
) -> dict[str, np.ndarray]:
    """Load CIFAR-10 from ``<data_dir>/cifar-10-batches-py/``.

    Args:
        data_dir: data directory (``None``: ``$SUPERLEVEL_DATA``, else ``./data``).
        checksums: md5 per batch file name; ``None`` uses the official ones
            (:data:`CIFAR10_FILES`); a ``None`` value skips that file's check.

    Returns:
        ``{"train_images": uint8 (N, 3, 32, 32), "train_labels": int64 (N,),
        "test_images", "test_labels"}`` (read-only, shared between calls).

    Raises:
        MissingDataError: a batch file is absent.
        DataIntegrityError: a file fails its checksum or is malformed.
    """
    sums = dict(CIFAR10_FILES if checksums is None else checksums)
    folder = (resolve_data_dir(data_dir) / CIFAR10_DIR).resolve()
    key = tuple(sorted((n, sums.get(n)) for n in [*_TRAIN, "test_batch"]))
    arrays = _load_cached(str(folder), key)
    for a in arrays.values():
        a.flags.writeable = False
    return arrays
