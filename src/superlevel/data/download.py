"""Download data sets from their canonical URLs, with sizes, checksums and atomic writes.

Every file is streamed into a temporary file next to its destination, capped at its
published size (reading stops as soon as the stream exceeds it, and a server announcing
more is refused before anything is read), its MD5 is checked, and only then is it
renamed into place (``os.replace`` is atomic on one file system). A corrupted,
truncated or oversized download is deleted and reported; the destination is never left
holding a partial or wrong file. Files already present with the right checksum are not
fetched again.

Archives (CIFAR-10) are unpacked into a temporary folder that is renamed into place
only once every unpacked file has its published MD5, so a failed unpack never leaves a
partial folder. What happens to the archive then:

- unpacked: the archive is deleted;
- its content is unreadable or wrong (a tar/gzip error, a missing or mismatching file):
  the archive is corrupt and is deleted, so the next download fetches it afresh;
- the unpack failed for another reason (disk full, no permission): the archive passed
  its checksum and is kept, so the next download unpacks it without fetching it again.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from superlevel.data.base import DataIntegrityError, md5_file, resolve_data_dir
from superlevel.data.cifar import CIFAR10_DIR, CIFAR10_FILES

__all__ = ["DATASETS", "RemoteDataset", "RemoteFile", "dataset_status", "download", "fetch"]


@dataclass(frozen=True)
class RemoteFile:
    """One file of a data set: its name on the server and in the folder, MD5 and size.

    Attributes:
        name: file name, appended to the data set's base URL.
        md5: MD5 of the published bytes.
        size: byte count of the published file; a download is never read beyond it.
    """

    name: str
    md5: str
    size: int

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise ValueError(f"{self.name}: size must be a byte count >= 0, got {self.size!r}")


@dataclass(frozen=True)
class RemoteDataset:
    """A downloadable data set.

    Attributes:
        name: the name on the command line.
        folder: sub-folder of the data directory the loader reads.
        base_url: canonical location; a file's URL is ``base_url + file.name``.
        files: the files with their checksums.
        unpack: for an archive (then ``files`` holds only it): the folder it unpacks to
            (in the data directory) and the MD5 of each unpacked file; what becomes of
            the archive is in the module docstring.
        description: one line for ``data list``.
    """

    name: str
    folder: str
    base_url: str
    files: tuple[RemoteFile, ...]
    description: str
    unpack: tuple[str, dict[str, str]] | None = None

    def __post_init__(self) -> None:
        if self.unpack is not None and len(self.files) != 1:
            raise ValueError(
                f"{self.name}: an unpacked data set has one archive, not {len(self.files)}"
            )


# MNIST-format data sets share these four files (gzipped), in this order.
_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _idx_dataset(
    name: str, base_url: str, sums: tuple[tuple[str, int], ...], description: str
) -> RemoteDataset:
    """An MNIST-format data set in folder ``name``: the ``.gz`` of each of :data:`_IDX_FILES`.

    ``sums`` holds the ``(md5, size)`` of each file, in the order of :data:`_IDX_FILES`.
    """
    files = tuple(
        RemoteFile(f"{f}.gz", md5, size) for f, (md5, size) in zip(_IDX_FILES, sums, strict=True)
    )
    return RemoteDataset(name, name, base_url, files, description)


DATASETS: dict[str, RemoteDataset] = {
    "mnist": _idx_dataset(
        "mnist",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        (
            ("f68b3c2dcbeaaa9fbdd348bbdeb94873", 9912422),
            ("d53e105ee54ea40749a09fcbcd1e9432", 28881),
            ("9fb629c4189551a2d022fa330f9573f3", 1648877),
            ("ec29112dd5afa0611ce80d1b7f02629c", 4542),
        ),
        "MNIST handwritten digits, IDX gz (11 MB)",
    ),
    "fashion-mnist": _idx_dataset(
        "fashion-mnist",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        (
            ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", 26421880),
            ("25c81989df183df01b3e8a0aad5dffbe", 29515),
            ("bef4ecab320f06d8554ea6380940ec79", 4422102),
            ("bb300cfdad3c16e7a12a480ee83cd310", 5148),
        ),
        "Fashion-MNIST, IDX gz (30 MB)",
    ),
    "cifar10": RemoteDataset(
        "cifar10",
        ".",
        "https://www.cs.toronto.edu/~kriz/",
        (RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", 170498071),),
        "CIFAR-10, python pickle batches (163 MB archive)",
        unpack=(CIFAR10_DIR, CIFAR10_FILES),
    ),
}


def fetch(
    url: str,
    dest: str | os.PathLike[str],
    md5: str,
    size: int,
    *,
    timeout: float = 60.0,
    chunk: int = 1 << 20,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download ``url`` to ``dest`` atomically, capped at ``size`` bytes, verifying its MD5.

    Never more than ``size`` bytes reach the disk: a server announcing a larger
    ``Content-Length`` is refused before the body is read, and reading stops at the first
    byte beyond ``size``.

    Args:
        url: the source (``http``, ``https`` or ``file``).
        dest: the final path; its folder is created.
        md5: expected MD5 of the downloaded bytes.
        size: expected byte count of the download.
        timeout: socket timeout in seconds.
        chunk: read size in bytes.
        progress: optional ``progress(bytes_so_far, total_or_None)`` callback.

    Raises:
        DataIntegrityError: the bytes exceed or fall short of ``size`` or fail the
            checksum (nothing is left at ``dest``; an older file there stays).
        OSError: the server or network failed (``urllib.error.URLError`` included).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    untouched = f"nothing was written to {dest}"
    try:
        h = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            total = resp.headers.get("Content-Length")
            total_n = int(total) if total is not None and total.isdigit() else None
            if total_n is not None and total_n > size:
                raise DataIntegrityError(
                    f"download of {url} refused: the server announces {total_n} bytes, "
                    f"expected {size}; {untouched}"
                )
            done = 0
            # Ask for one byte past the expected size at most, so an oversized stream is
            # caught on the read that crosses it, before that block is written.
            while block := resp.read(min(chunk, size + 1 - done)):
                done += len(block)
                if done > size:
                    raise DataIntegrityError(
                        f"download of {url} stopped: the stream exceeds the expected "
                        f"{size} bytes; {untouched}"
                    )
                out.write(block)
                h.update(block)
                if progress is not None:
                    progress(done, total_n)
            out.flush()
            os.fsync(out.fileno())
        if done != size:
            raise DataIntegrityError(
                f"download of {url} is truncated: {done} bytes, expected {size}; {untouched}"
            )
        got = h.hexdigest()
        if got != md5.lower():
            raise DataIntegrityError(
                f"download of {url} failed its checksum: md5 {got}, expected {md5} "
                f"({done} bytes); {untouched}"
            )
        os.replace(tmp, dest)
    finally:
        # On any failure (size, checksum, network, interrupt) the partial file goes away.
        tmp.unlink(missing_ok=True)
    return dest


# What a corrupt archive raises while it is read (BadGzipFile is an OSError, so it is
# named here to tell it from the OSErrors of the disk).
_CORRUPT_ARCHIVE = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, DataIntegrityError)


def _safe_unpack(archive: Path, data_dir: Path, folder: str, md5s: dict[str, str]) -> Path:
    """Unpack ``folder/`` from a tar archive into ``data_dir``, verified, then renamed in.

    Only regular files directly below ``folder/`` are extracted (no links, no absolute or
    ``..`` paths), into a temporary folder; every expected file is checked against
    ``md5s`` before the folder is moved into place. On any failure the temporary folder
    is removed and ``data_dir / folder`` is as before.

    Raises:
        DataIntegrityError: the archive lacks a file or one has the wrong MD5.
        tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile: the archive is unreadable.
        OSError: the unpacked files could not be written or moved.
    """
    target = data_dir / folder
    with tempfile.TemporaryDirectory(prefix=f".{folder}.unpack.", dir=data_dir) as tmp_dir:
        staging = Path(tmp_dir) / folder
        staging.mkdir()
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
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
        # An incomplete earlier folder is moved aside (into the temporary folder, which
        # removes it) rather than deleted first, so a failure here leaves it as it was.
        old = Path(tmp_dir) / "previous"
        if target.exists():
            os.replace(target, old)
        try:
            os.replace(staging, target)
        except OSError:
            if old.exists():
                os.replace(old, target)
            raise
    return target


def _unpack(archive: Path, data_dir: Path, folder: str, md5s: dict[str, str]) -> Path:
    """:func:`_safe_unpack`, then the archive's fate of the module docstring.

    Raises:
        DataIntegrityError: the archive is corrupt (it has been deleted).
        OSError: unpacking failed otherwise (the verified archive is kept).
    """
    target = data_dir / folder
    try:
        _safe_unpack(archive, data_dir, folder, md5s)
    except _CORRUPT_ARCHIVE as exc:
        archive.unlink(missing_ok=True)
        raise DataIntegrityError(
            f"unpacking {archive} failed: {exc}. Nothing was unpacked into {target}; the "
            f"corrupt archive was deleted, so the next download fetches it afresh"
        ) from exc
    except OSError as exc:
        raise OSError(
            exc.errno,
            f"unpacking {archive} into {target} failed: {exc}. Nothing was unpacked; the "
            f"archive passed its checksum and was kept, so the next download unpacks it "
            f"without fetching it again",
        ) from exc
    archive.unlink()
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
        DataIntegrityError: a download exceeds or falls short of its size or fails its
            checksum (the bad file is removed), or an archive is corrupt (it is removed).
        OSError: network failure, or an archive could not be unpacked (it is kept).
    """
    ds = name if isinstance(name, RemoteDataset) else _get(name)
    root = resolve_data_dir(data_dir)
    base = base_url if base_url is not None else ds.base_url
    if not base.endswith("/"):
        base += "/"
    say = log or (lambda _msg: None)
    if ds.unpack is not None and dataset_status(ds, root) == "present":
        say(f"{ds.name}: already unpacked in {root / ds.unpack[0]}")
        return []
    written = []
    for f in ds.files:
        dest = root / ds.folder / f.name
        if dest.is_file() and dest.stat().st_size == f.size and md5_file(dest) == f.md5:
            say(f"{dest}: present, checksum ok")
        else:
            say(f"{base}{f.name} -> {dest}")
            fetch(base + f.name, dest, f.md5, f.size, timeout=timeout)
        written.append(dest)
    if ds.unpack is not None:
        folder, md5s = ds.unpack
        say(f"unpacking {written[0]} -> {root / folder}")
        written = [_unpack(written[0], root, folder, md5s)]
    return written
