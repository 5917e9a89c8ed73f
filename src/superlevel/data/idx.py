"""MNIST and Fashion-MNIST from IDX files (gzip or raw), with checksums of the content.

IDX format (LeCun et al.): a 4-byte magic ``0x00 0x00 <type> <ndim>``, then ``ndim``
big-endian uint32 sizes, then the data in C order. Checksums are MD5 of the
*uncompressed* bytes, so re-compressed ``.gz`` files and raw files verify the same way.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from superlevel.data.base import (
    DataIntegrityError,
    find_file,
    read_maybe_gzip,
    resolve_data_dir,
    verify_md5,
)

__all__ = ["IDX_FILES", "MNIST_KINDS", "load_mnist", "parse_idx", "read_idx"]

_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_IMG, _LBL = "images-idx3-ubyte", "labels-idx1-ubyte"
_TRAIN_IMG, _TEST_IMG = (60000, 28, 28), (10000, 28, 28)
# The four files of each data set: key -> (file stem, expected shape, md5 of raw content).
IDX_FILES: dict[str, dict[str, tuple[str, tuple[int, ...], str]]] = {
    "mnist": {
        "train_images": (f"train-{_IMG}", _TRAIN_IMG, "6bbc9ace898e44ae57da46a324031adb"),
        "train_labels": (f"train-{_LBL}", (60000,), "a25bea736e30d166cdddb491f175f624"),
        "test_images": (f"t10k-{_IMG}", _TEST_IMG, "2646ac647ad5339dbf082846283269ea"),
        "test_labels": (f"t10k-{_LBL}", (10000,), "27ae3e4e09519cfbb04c329615203637"),
    },
    "fashion-mnist": {
        "train_images": (f"train-{_IMG}", _TRAIN_IMG, "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
        "train_labels": (f"train-{_LBL}", (60000,), "9018921c3c673c538a1fc5bad174d6f9"),
        "test_images": (f"t10k-{_IMG}", _TEST_IMG, "8181f5470baa50b63fa0f6fddb340f0a"),
        "test_labels": (f"t10k-{_LBL}", (10000,), "15d484375f8d13e6eb1aabb0c3f46965"),
    },
}
MNIST_KINDS = tuple(IDX_FILES)


def parse_idx(data: bytes, path: Path | str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes into an array (native byte order).

    Raises:
        DataIntegrityError: bad magic, unknown type code, or a length that does not match
            the header (the message gives expected and actual byte counts).
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataIntegrityError(f"{path}: not an IDX file (bad magic {data[:4]!r})")
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_TYPES:
        raise DataIntegrityError(f"{path}: unknown IDX type code 0x{type_code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataIntegrityError(f"{path}: truncated IDX header ({len(data)} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = _IDX_TYPES[type_code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise DataIntegrityError(
            f"{path}: IDX header {shape} of {dtype} needs {expected} bytes, file has {len(data)}"
            f" ({'truncated' if len(data) < expected else 'trailing garbage'})"
        )
    arr = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(
    path: str | os.PathLike[str],
    md5: str | None = None,
    shape: tuple[int, ...] | None = None,
) -> np.ndarray:
    """Read one IDX file (``.gz`` is decompressed) and check it.

    Args:
        path: the file.
        md5: expected MD5 of the uncompressed bytes, or ``None`` to skip.
        shape: expected array shape, or ``None`` to skip.

    Raises:
        DataIntegrityError: corrupt gzip, checksum mismatch, malformed IDX or wrong shape.
    """
    p = Path(path)
    data = read_maybe_gzip(p)
    verify_md5(data, md5, p, "uncompressed content")
    arr = parse_idx(data, p)
    if shape is not None and arr.shape != tuple(shape):
        raise DataIntegrityError(f"{p}: expected shape {tuple(shape)}, got {arr.shape}")
    return arr


@functools.lru_cache(maxsize=4)
def _load_cached(folder: str, kind: str, verify: bool) -> dict[str, np.ndarray]:
    out = {}
    for key, (stem, shape, md5) in IDX_FILES[kind].items():
        path = find_file(Path(folder), stem, kind)
        out[key] = read_idx(path, md5 if verify else None, shape)
    return out


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None, kind: str = "mnist", verify: bool = True
) -> dict[str, np.ndarray]:
    """Load MNIST or Fashion-MNIST from ``<data_dir>/<kind>/``.

    Args:
        data_dir: data directory (``None``: ``$SUPERLEVEL_DATA``, else ``./data``).
        kind: ``"mnist"`` or ``"fashion-mnist"``.
        verify: check the MD5 of every file's uncompressed content.

    Returns:
        ``{"train_images": uint8 (60000, 28, 28), "train_labels": uint8 (60000,),
        "test_images": uint8 (10000, 28, 28), "test_labels": uint8 (10000,)}``, read-only
        arrays shared between calls (copy before modifying).

    Raises:
        ValueError: unknown ``kind``.
        MissingDataError: a file is absent (the message says where we looked).
        DataIntegrityError: a file is corrupt, truncated or fails its checksum.
    """
    if kind not in IDX_FILES:
        raise ValueError(f"kind must be one of {list(IDX_FILES)}, got {kind!r}")
    folder = resolve_data_dir(data_dir) / kind
    arrays = _load_cached(str(folder.resolve()), kind, bool(verify))
    for a in arrays.values():
        a.flags.writeable = False
    return arrays
