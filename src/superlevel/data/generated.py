"""Data sets that need no download: scikit-learn's 8x8 digits and MNIST-1D (regenerated).

MNIST-1D (Greydanus, 2020) is *generated* from its ten 1-D templates by the ``mnist1d``
package with the package's default arguments (5000 samples, 4000/1000 train/test split,
seed 42): the same procedure that produced the published ``mnist1d_data.pkl``. We never
download it. Generation takes seconds of CPU (about 3 s here); the arrays are cached in
memory and, when ``cache_dir`` is given, as a ``.npz`` file, so that every worker process
of a pool loads them in milliseconds instead of generating them again. A cache file that
cannot be read is regenerated; one that cannot be written is skipped.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import random
import zipfile
from pathlib import Path
from types import ModuleType

import numpy as np

__all__ = ["load_digits", "load_mnist1d"]


def _require(module: str, need: str) -> ModuleType:
    """Import an optional dependency; if it is absent, say so and name the extra with it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
        raise ModuleNotFoundError(f"{need}: pip install 'superlevel[data]'") from exc


@functools.lru_cache(maxsize=2)
def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits: ``x`` float32 ``(1797, 64)`` in ``[0, 1]``, ``y`` int64.

    Pixel values 0..16 are divided by 16.
    """
    datasets = _require("sklearn.datasets", "the digits data set needs scikit-learn")
    bunch = datasets.load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    return x, bunch.target.astype(np.int64)


def _generate_mnist1d(num_samples: int, seed: int) -> dict[str, np.ndarray]:
    mnist1d = _require("mnist1d.data", "MNIST-1D needs the mnist1d package")
    args = mnist1d.get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    # make_dataset reseeds the global numpy / random generators; restore them afterwards.
    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    try:
        ds = mnist1d.make_dataset(args)
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)
    return {
        "x": ds["x"].astype(np.float32),
        "y": ds["y"].astype(np.int64),
        "x_test": ds["x_test"].astype(np.float32),
        "y_test": ds["y_test"].astype(np.int64),
    }


@functools.lru_cache(maxsize=4)
def _mnist1d_cached(num_samples: int, seed: int, cache_dir: str | None) -> dict[str, np.ndarray]:
    path = None
    keys = ("x", "y", "x_test", "y_test")
    if cache_dir is not None:
        path = Path(cache_dir) / f"mnist1d_n{num_samples}_s{seed}.npz"
        if path.is_file():
            try:
                with np.load(path) as f:
                    return {k: f[k] for k in keys}
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                pass  # damaged: generate again (and replace it below)
    arrays = _generate_mnist1d(num_samples, seed)
    if path is not None:
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(tmp, **arrays)
            os.replace(tmp, path)  # atomic: a reader never sees half a file
        except OSError:  # a read-only or full cache costs time, never a result
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
    return arrays


def load_mnist1d(
    num_samples: int = 5000, seed: int = 42, cache_dir: str | os.PathLike[str] | None = None
) -> dict[str, np.ndarray]:
    """Generate MNIST-1D: ``{"x", "y", "x_test", "y_test"}``, ``x`` float32 ``(n, 40)``.

    Args:
        num_samples: total examples; 80% train, 20% test (package default 5000).
        seed: generation seed (package default 42 gives the published data set).
        cache_dir: optional folder for a ``.npz`` cache of the generated arrays.

    Returns:
        Fresh copies of the cached arrays (callers may modify them).
    """
    if num_samples < 10:
        raise ValueError(f"num_samples must be >= 10 (one per class), got {num_samples}")
    arrays = _mnist1d_cached(
        int(num_samples), int(seed), None if cache_dir is None else str(cache_dir)
    )
    return {k: v.copy() for k, v in arrays.items()}
