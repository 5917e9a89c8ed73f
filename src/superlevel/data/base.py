"""Shared pieces of the loaders: the data directory, checksums, errors and file reading.

The data directory is an explicit ``data_dir`` argument, else the environment variable
``SUPERLEVEL_DATA``, else ``./data``. Every data set lives in its own sub-folder
(``mnist/``, ``fashion-mnist/``, ``cifar-10-batches-py/``, ``text/``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import zlib
from pathlib import Path

__all__ = [
    "DATA_ENV",
    "MAX_DECOMPRESSED",
    "DataIntegrityError",
    "MissingDataError",
    "md5_bytes",
    "md5_file",
    "read_maybe_gzip",
    "resolve_data_dir",
    "find_file",
    "verify_md5",
]

DATA_ENV = "SUPERLEVEL_DATA"


class MissingDataError(FileNotFoundError):
    """A data file is absent; the message says where we looked and how to get it."""


class DataIntegrityError(ValueError):
    """A data file exists but is truncated, malformed or fails its checksum."""


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the data directory: ``data_dir``, else ``$SUPERLEVEL_DATA``, else ``./data``."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else Path("data")


CACHE_ENV = "SUPERLEVEL_CACHE"


def cache_dir() -> Path:
    """Where generated data sets are cached: ``$SUPERLEVEL_CACHE``, else
    ``$XDG_CACHE_HOME/superlevel``, else ``~/.cache/superlevel``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "superlevel"


def md5_bytes(data: bytes) -> str:
    """Hex MD5 digest of ``data`` (a checksum against corruption, not a security hash)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def md5_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex MD5 digest of a file's bytes, read in chunks."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_md5(data: bytes, expected: str | None, path: Path, what: str = "content") -> None:
    """Raise :class:`DataIntegrityError` unless ``md5(data) == expected`` (``None`` skips)."""
    if expected is None:
        return
    got = md5_bytes(data)
    if got != expected.lower():
        raise DataIntegrityError(
            f"{path}: checksum mismatch of the {what}: md5 {got}, expected {expected} "
            "(corrupted or wrong file; delete it and download again)"
        )


MAX_DECOMPRESSED = 1 << 30  # 1 GiB: 20x MNIST's largest file; a bigger one is refused


def read_maybe_gzip(path: Path, max_bytes: int = MAX_DECOMPRESSED) -> bytes:
    """Read a file, gunzipping it when its name ends in ``.gz``.

    Decompression stops after ``max_bytes`` bytes: a small file that expands without
    bound (a gzip bomb) is refused before it fills memory.

    Raises:
        DataIntegrityError: the gzip stream is truncated or corrupt, or expands beyond
            ``max_bytes``.
    """
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return raw
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as fh:
            data = fh.read(max_bytes + 1)  # streamed: never more than this in memory
    except (EOFError, OSError, zlib.error) as exc:
        raise DataIntegrityError(f"{path}: not a complete gzip file ({exc})") from exc
    if len(data) > max_bytes:
        raise DataIntegrityError(
            f"{path}: expands to more than {max_bytes} bytes ({len(raw)} compressed); refused "
            "as a likely gzip bomb - a real data file of that size must be stored uncompressed"
        )
    return data


def find_file(folder: Path, stem: str, dataset: str) -> Path:
    """Find ``stem`` or ``stem.gz`` in ``folder``.

    Raises:
        MissingDataError: neither exists; the message names both paths and the command
            that downloads ``dataset``.
    """
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    raise MissingDataError(
        f"{dataset}: looked for {folder / stem}(.gz) and found neither. Get it with "
        f"`superlevel data download {dataset} --data-dir {folder.parent}` or set "
        f"{DATA_ENV} to a directory holding {folder.name}/"
    )
