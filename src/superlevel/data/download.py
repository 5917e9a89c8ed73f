"""Download data sets from their canonical URLs, with checksums and atomic writes.

Every file is streamed into a temporary file next to its destination, its MD5 is
checked, and only then is it renamed into place (``os.replace`` is atomic on one file
system). A corrupted or truncated download is deleted and reported; the destination is
never left holding a partial or wrong file. Files already present with the right
checksum are not fetched again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from superlevel.data.base import DataIntegrityError, md5_file, resolve_data_dir
from superlevel.data.cifar import CIFAR10_DIR, CIFAR10_FILES

__all__ = ["DATASETS", "RemoteDataset", "RemoteFile", "dataset_status", "download", "fetch"]


@dataclass(frozen=True)
class RemoteFile:
    """One file of a data set: its name on the server and in the folder, and its MD5."""

    name: str
    md5: str


@dataclass(frozen=True)
class RemoteDataset:
    """A downloadable data set.

    Attributes:
        name: the name on the command line.
        folder: sub-folder of the data directory the loader reads.
        base_url: canonical location; a file's URL is ``base_url + file.name``.
        files: the files with their checksums.
        unpack: for an archive: the folder it unpacks to (in the data directory) and the
            MD5 of each unpacked file; the archive itself is deleted after unpacking.
        description: one line for ``data list``.
    """

    name: str
    folder: str
    base_url: str
    files: tuple[RemoteFile, ...]
    description: str
    unpack: tuple[str, dict[str, str]] | None = None


# MNIST-format data sets share these four files (gzipped), in this order.
_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _idx_dataset(
    name: str, base_url: str, md5s: tuple[str, ...], description: str
) -> RemoteDataset:
    """An MNIST-format data set in folder ``name``: the ``.gz`` of each of :data:`_IDX_FILES`."""
    files = tuple(RemoteFile(f"{f}.gz", md5) for f, md5 in zip(_IDX_FILES, md5s, strict=True))
    return RemoteDataset(name, name, base_url, files, description)


DATASETS: dict[str, RemoteDataset] = {
    "mnist": _idx_dataset(
        "mnist",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        (
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "d53e105ee54ea40749a09fcbcd1e9432",
            "9fb629c4189551a2d022fa330f9573f3",
            "ec29112dd5afa0611ce80d1b7f02629c",
        ),
        "MNIST handwritten digits, IDX gz (11 MB)",
    ),
    "fashion-mnist": _idx_dataset(
        "fashion-mnist",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        (
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79",
            "bb300cfdad3c16e7a12a480ee83cd310",
        ),
        "Fashion-MNIST, IDX gz (30 MB)",
    ),
    "cifar10": RemoteDataset(
        "cifar10",
        ".",
        "https://www.cs.toronto.edu/~kriz/",
        (RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
        "CIFAR-10, python pickle batches (163 MB archive)",
        unpack=(CIFAR10_DIR, CIFAR10_FILES),
    ),
}


def fetch(
    url: str,
    dest: str | os.PathLike[str],
    md5: str,
    *,
    timeout: float = 60.0,
    chunk: int = 1 << 20,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying its MD5 on the fly.

    Args:
        url: the source (``http``, ``https`` or ``file``).
        dest: the final path; its folder is created.
        md5: expected MD5 of the downloaded bytes.
        timeout: socket timeout in seconds.
        chunk: read size in bytes.
        progress: optional ``progress(bytes_so_far, total_or_None)`` callback.

    Raises:
        DataIntegrityError: the bytes fail the checksum (nothing is left at ``dest``).
        OSError: the server or network failed (``urllib.error.URLError`` included).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            total = resp.headers.get("Content-Length")
            total_n = int(total) if total is not None and total.isdigit() else None
            done = 0
            while block := resp.read(chunk):
                out.write(block)
                h.update(block)
                done += len(block)
                if progress is not None:
                    progress(done, total_n)
            out.flush()
            os.fsync(out.fileno())
        got = h.hexdigest()
        if got != md5.lower():
            raise DataIntegrityError(
                f"download of {url} failed its checksum: md5 {got}, expected {md5} "
                f"({done} bytes); nothing was written to {dest}"
            )
        os.replace(tmp, dest)
    finally:
        # On any failure (checksum, network, interrupt) the partial file goes away.
        tmp.unlink(missing_ok=True)
    return dest


def _safe_unpack(archive: Path, data_dir: Path, folder: str, md5s: dict[str, str]) -> Path:
    """Unpack ``folder/`` from a tar archive into ``data_dir``, verified, then renamed in.

    Only regular files directly below ``folder/`` are extracted (no links, no absolute or
    ``..`` paths), into a temporary folder; every expected file is checked against
    ``md5s`` before the folder is moved into place.
    """
    target = data_dir / folder
    with tempfile.TemporaryDirectory(prefix=".unpack.", dir=data_dir) as tmp_dir:
        staging = Path(tmp_dir) / folder
        staging.mkdir()
        with tarfile.open(archive, "r:*") as tar:
            for member in tar.getmembers():
                parts = Path(member.name).parts
                if not member.isfile() or len(parts) != 2 or parts[0] != folder:
                    continue
                src = tar.extractfile(member)
                assert src is not None  # regular files always have a stream
                with src, open(staging / parts[1], "wb") as out:
                    shutil.copyfileobj(src, out)
        for name, md5 in md5s.items():
            path = staging / name
            if not path.is_file():
                raise DataIntegrityError(f"{archive}: the archive lacks {folder}/{name}")
            got = md5_file(path)
            if got != md5:
                raise DataIntegrityError(
                    f"{archive}: {folder}/{name} has md5 {got}, expected {md5}"
                )
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    return target


def dataset_status(
    name: str | RemoteDataset, data_dir: str | os.PathLike[str] | None = None
) -> str:
    """``"present"`` if all files of ``name`` are in the data directory, else ``"missing"``.

    Presence only (no checksum): the loaders verify content when they read it.
    """
    ds = name if isinstance(name, RemoteDataset) else _get(name)
    root = resolve_data_dir(data_dir)
    if ds.unpack is not None:
        folder, md5s = ds.unpack
        ok = all((root / folder / n).is_file() for n in md5s)
    else:
        stems = [f.name.removesuffix(".gz") for f in ds.files]
        ok = all(any((root / ds.folder / s).is_file() for s in (st, st + ".gz")) for st in stems)
    return "present" if ok else "missing"


def _get(name: str) -> RemoteDataset:
    if name not in DATASETS:
        import difflib

        close = difflib.get_close_matches(name, list(DATASETS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown data set {name!r}; valid: {', '.join(DATASETS)}.{hint}")
    return DATASETS[name]


def download(
    name: str | RemoteDataset,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    base_url: str | None = None,
    timeout: float = 60.0,
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Download data set ``name`` into the data directory; returns the files written.

    Args:
        name: a key of :data:`DATASETS` or a :class:`RemoteDataset`.
        data_dir: data directory (``None``: ``$SUPERLEVEL_DATA``, else ``./data``).
        base_url: override the canonical location (a mirror); file names are appended.
        timeout: socket timeout in seconds.
        log: optional callback for one-line progress messages.

    Raises:
        ValueError: unknown data set name.
        DataIntegrityError: a download (or an unpacked file) fails its checksum; the bad
            file is removed.
        OSError: network failure.
    """
    ds = name if isinstance(name, RemoteDataset) else _get(name)
    root = resolve_data_dir(data_dir)
    base = base_url if base_url is not None else ds.base_url
    if not base.endswith("/"):
        base += "/"
    say = log or (lambda _msg: None)
    written = []
    for f in ds.files:
        dest = root / ds.folder / f.name
        if ds.unpack is not None and dataset_status(ds, root) == "present":
            say(f"{ds.name}: already unpacked in {root / ds.unpack[0]}")
            break
        if dest.is_file() and md5_file(dest) == f.md5:
            say(f"{dest}: present, checksum ok")
        else:
            say(f"{base}{f.name} -> {dest}")
            fetch(base + f.name, dest, f.md5, timeout=timeout)
        written.append(dest)
        if ds.unpack is not None:
            folder, md5s = ds.unpack
            written = [_safe_unpack(dest, root, folder, md5s)]
            dest.unlink()
    return written
