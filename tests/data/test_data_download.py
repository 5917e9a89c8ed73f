"""Downloads against a real local HTTP server: checksums, atomic writes, rejected corruption."""

from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import http.server
import importlib
import io
import shutil
import tarfile
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from superlevel.data import DataIntegrityError
from superlevel.data import cli as data_cli
from superlevel.data.download import (
    DATASETS,
    RemoteDataset,
    RemoteFile,
    dataset_status,
    download,
    fetch,
)

# The module itself (the package's ``download`` attribute is the function).
download_module = importlib.import_module("superlevel.data.download")


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's naming
        type(self).requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def server(tmp_path) -> Iterator[tuple[str, Path, list[str]]]:
    """An http.server on 127.0.0.1 (free port) serving a temp dir; yields (url, dir, log)."""
    root = tmp_path / "served"
    root.mkdir()
    log: list[str] = []
    handler = type("H", (_Handler,), {"requests": log})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(root))
    )
    # A short poll interval: shutdown() waits for it at teardown.
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", root, log
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def test_good_file_is_fetched_and_corrupted_one_rejected(server, tmp_path):
    url, root, log = server
    good = b"good payload " * 1000
    (root / "good.bin").write_bytes(good)
    (root / "bad.bin").write_bytes(good[:-1] + b"X")  # one byte differs
    dest_dir = tmp_path / "data"
    out = fetch(url + "good.bin", dest_dir / "good.bin", md5(good), len(good))
    assert out.read_bytes() == good
    with pytest.raises(
        DataIntegrityError, match=r"bad\.bin failed its checksum.*nothing was written"
    ):
        fetch(url + "bad.bin", dest_dir / "bad.bin", md5(good), len(good))
    assert not (dest_dir / "bad.bin").exists()
    # No temporary leftovers either.
    assert sorted(p.name for p in dest_dir.iterdir()) == ["good.bin"]
    assert log == ["/good.bin", "/bad.bin"]


def test_corrupted_download_does_not_replace_an_existing_file(server, tmp_path):
    url, root, _ = server
    (root / "f").write_bytes(b"corrupt")
    dest = tmp_path / "f"
    dest.write_bytes(b"previous content")
    with pytest.raises(DataIntegrityError):
        fetch(url + "f", dest, md5(b"expected"), len(b"corrupt"))
    assert dest.read_bytes() == b"previous content"


def test_download_dataset_skips_verified_files_and_rejects_bad_ones(server, tmp_path):
    url, root, log = server
    a, b = b"alpha" * 100, b"beta" * 100
    (root / "a.gz").write_bytes(a)
    (root / "b.gz").write_bytes(b)
    ds = RemoteDataset(
        "toy",
        "toy",
        "http://invalid.example/",
        (RemoteFile("a.gz", md5(a), len(a)), RemoteFile("b.gz", md5(b), len(b))),
        "toy",
    )
    data = tmp_path / "data"
    paths = download(ds, data, base_url=url.rstrip("/"))  # the trailing slash is added
    assert [p.read_bytes() for p in paths] == [a, b]
    assert dataset_status(ds, data) == "present"
    download(ds, data, base_url=url)
    assert log == ["/a.gz", "/b.gz"]  # second call: checksums ok, nothing fetched
    (data / "toy" / "b.gz").write_bytes(b"damaged")
    (root / "b.gz").write_bytes(b"still wrong".ljust(len(b)))
    with pytest.raises(DataIntegrityError, match="b.gz failed its checksum"):
        download(ds, data, base_url=url)
    # The damaged local file is untouched (never overwritten by a bad download).
    assert (data / "toy" / "b.gz").read_bytes() == b"damaged"


def test_real_mnist_entry_rejects_a_corrupted_mirror(server, tmp_path):
    url, root, _ = server
    for f in DATASETS["mnist"].files:
        (root / f.name).write_bytes(gzip.compress(b"not mnist"))
    with pytest.raises(
        DataIntegrityError,
        match=r"train-images-idx3-ubyte\.gz is truncated: \d+ bytes, expected 9912422",
    ):
        download("mnist", tmp_path / "data", base_url=url)
    assert not (tmp_path / "data" / "mnist" / "train-images-idx3-ubyte.gz").exists()
    assert dataset_status("mnist", tmp_path / "data") == "missing"
    with pytest.raises(ValueError, match="unknown data set 'mnits'.*Did you mean 'mnist'"):
        download("mnits", tmp_path)


def _tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_archive_is_verified_and_unpacked_safely(server, tmp_path):
    url, root, _ = server
    inner = {"pkg/x": b"x-data", "pkg/y": b"y-data", "../evil": b"no", "pkg/sub/z": b"deep"}
    archive = _tar_gz(inner)
    (root / "pkg.tar.gz").write_bytes(archive)
    md5s = {"x": md5(b"x-data"), "y": md5(b"y-data")}
    ds = RemoteDataset(
        "pkg", ".", url, (RemoteFile("pkg.tar.gz", md5(archive), len(archive)),), "t", ("pkg", md5s)
    )
    data = tmp_path / "data"
    (out,) = download(ds, data)
    assert out == data / "pkg"
    assert sorted(p.name for p in out.iterdir()) == ["x", "y"]  # no traversal, no nesting
    assert not (tmp_path / "evil").exists() and not (data / "pkg.tar.gz").exists()
    assert sorted(p.name for p in data.iterdir()) == ["pkg"]
    bad = RemoteDataset(
        "pkg2",
        ".",
        url,
        (RemoteFile("pkg.tar.gz", md5(archive), len(archive)),),
        "t",
        ("pkg2", md5s),
    )
    with pytest.raises(DataIntegrityError, match="lacks pkg2/x"):
        download(bad, tmp_path / "data2")
    assert not (tmp_path / "data2" / "pkg2").exists()


def test_cli_download_and_list(server, tmp_path, capsys, monkeypatch):
    url, root, _ = server
    payload = b"cli payload"
    (root / "p.gz").write_bytes(payload)
    monkeypatch.setitem(
        DATASETS,
        "tiny",
        RemoteDataset(
            "tiny", "tiny", url, (RemoteFile("p.gz", md5(payload), len(payload)),), "tiny set"
        ),
    )
    parser = argparse.ArgumentParser(prog="superlevel")
    sub = parser.add_subparsers(dest="command")
    data_cli.add_subparser(sub)
    args = parser.parse_args(
        ["data", "download", "tiny", "--data-dir", str(tmp_path / "d"), "--base-url", url]
    )
    assert args.func(args) == 0
    assert (tmp_path / "d" / "tiny" / "p.gz").read_bytes() == payload
    assert capsys.readouterr().out.strip() == str(tmp_path / "d" / "tiny" / "p.gz")
    args = parser.parse_args(["data", "list", "--data-dir", str(tmp_path / "d")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "present" in out.split("tiny", 1)[1].splitlines()[0]
    assert "mnist " in out and "missing" in out.split("mnist ", 1)[1].splitlines()[0]
    (root / "p.gz").write_bytes(b"tampered".ljust(len(payload)))
    args = parser.parse_args(
        ["data", "download", "tiny", "--data-dir", str(tmp_path / "e"), "--base-url", url]
    )
    assert args.func(args) == 1
    assert "failed its checksum" in capsys.readouterr().err
    assert not (tmp_path / "e" / "tiny" / "p.gz").exists()


# ---------------------------------------------------------------- size cap


class _Endless:
    """A response whose body is ``total`` zero bytes, made on demand; counts what is read."""

    def __init__(self, total: int, headers: dict[str, str] | None = None):
        self.left, self.read_bytes, self.headers = total, 0, headers or {}

    def read(self, n: int) -> bytes:
        k = min(n, self.left)
        self.left -= k
        self.read_bytes += k
        return bytes(k)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _serve(monkeypatch, response: _Endless) -> None:
    monkeypatch.setattr("urllib.request.urlopen", lambda url, timeout: response)


def test_an_oversized_stream_is_cut_at_the_expected_size(monkeypatch, tmp_path):
    # 64 MiB offered, 1000 bytes expected: reading stops at byte 1001, nothing is kept.
    body = _Endless(64 << 20)
    _serve(monkeypatch, body)
    with pytest.raises(
        DataIntegrityError,
        match=r"http://mirror\.test/f\.bin stopped: the stream exceeds the expected 1000 "
        r"bytes; nothing was written to .*f\.bin",
    ):
        fetch("http://mirror.test/f.bin", tmp_path / "f.bin", md5(bytes(1000)), 1000, chunk=256)
    assert body.read_bytes == 1001
    assert list(tmp_path.iterdir()) == []


def test_an_announced_oversized_body_is_refused_unread(monkeypatch, tmp_path):
    body = _Endless(200 << 20, {"Content-Length": str(200 << 20)})
    _serve(monkeypatch, body)
    with pytest.raises(
        DataIntegrityError,
        match=r"f\.bin refused: the server announces 209715200 bytes, expected 1000",
    ):
        fetch("http://mirror.test/f.bin", tmp_path / "f.bin", md5(bytes(1000)), 1000)
    assert body.read_bytes == 0
    assert list(tmp_path.iterdir()) == []


def test_a_short_download_is_reported_with_both_sizes(server, tmp_path):
    url, root, _ = server
    (root / "f").write_bytes(b"x" * 999)
    with pytest.raises(DataIntegrityError, match=r"f is truncated: 999 bytes, expected 1000"):
        fetch(url + "f", tmp_path / "d" / "f", md5(b"x" * 1000), 1000)
    assert list((tmp_path / "d").iterdir()) == []


def test_remote_entries_carry_their_published_sizes():
    sizes = {f.name: f.size for ds in DATASETS.values() for f in ds.files}
    assert sizes["cifar-10-python.tar.gz"] == 170498071
    assert sizes["train-images-idx3-ubyte.gz"] in (9912422, 26421880)
    with pytest.raises(ValueError, match="size must be a byte count"):
        RemoteFile("x", md5(b""), -1)


# ---------------------------------------------------------------- failed unpacks


def _archive_set(url: str, archive: bytes, md5s: dict[str, str]) -> RemoteDataset:
    return RemoteDataset(
        "pkg", ".", url, (RemoteFile("pkg.tar.gz", md5(archive), len(archive)),), "t", ("pkg", md5s)
    )


def _entries(folder: Path) -> list[str]:
    """Everything under ``folder`` (hidden staging folders included), relative."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        # The archive lacks a file, has a wrong one, is no archive, or is cut short.
        (lambda: _tar_gz({"pkg/x": b"x-data"}), "lacks pkg/y"),
        (lambda: _tar_gz({"pkg/x": b"x-data", "pkg/y": b"Y"}), "pkg/y has md5"),
        (lambda: gzip.compress(b"not a tar file" * 100), "unpacking .*pkg.tar.gz failed"),
        (lambda: _tar_gz({"pkg/x": b"x" * 50000, "pkg/y": b"y-data"})[:300], "pkg.tar.gz failed"),
    ],
)
def test_a_corrupt_archive_is_deleted_and_fetched_afresh(server, tmp_path, make, match):
    url, root, log = server
    archive = make()
    (root / "pkg.tar.gz").write_bytes(archive)
    ds = _archive_set(url, archive, {"x": md5(b"x-data"), "y": md5(b"y-data")})
    data = tmp_path / "data"
    with pytest.raises(DataIntegrityError, match=match) as err:
        download(ds, data)
    assert "corrupt archive was deleted, so the next download fetches it afresh" in str(err.value)
    assert _entries(data) == []  # no archive, no partial folder, no staging left
    with pytest.raises(DataIntegrityError):
        download(ds, data)
    assert log == ["/pkg.tar.gz", "/pkg.tar.gz"]  # the retry downloaded it again


def test_a_disk_failure_while_unpacking_keeps_the_verified_archive(server, tmp_path, monkeypatch):
    url, root, log = server
    archive = _tar_gz({"pkg/x": b"x-data", "pkg/y": b"y-data"})
    (root / "pkg.tar.gz").write_bytes(archive)
    ds = _archive_set(url, archive, {"x": md5(b"x-data"), "y": md5(b"y-data")})
    data = tmp_path / "data"
    (data / "pkg").mkdir(parents=True)
    (data / "pkg" / "x").write_bytes(b"from an earlier, incomplete unpack")
    copies = []

    def full_disk(src, dst, *args):
        copies.append(dst.name)
        if len(copies) == 2:  # the first file is written, the second one hits a full disk
            dst.write(b"y-")
            raise OSError(28, "No space left on device")
        shutil.copyfileobj(src, dst, *args)

    # Only the unpacking's copies fail (the test server copies with shutil too).
    monkeypatch.setattr(download_module, "shutil", types.SimpleNamespace(copyfileobj=full_disk))
    with pytest.raises(OSError, match=r"No space left on device\. Nothing was unpacked") as err:
        download(ds, data)
    assert err.value.errno == 28
    assert "was kept, so the next download unpacks it without fetching it again" in str(err.value)
    # The earlier folder is as it was, the archive is intact, nothing else is left.
    assert _entries(data) == ["pkg", "pkg.tar.gz", "pkg/x"]
    assert (data / "pkg" / "x").read_bytes() == b"from an earlier, incomplete unpack"
    assert (data / "pkg.tar.gz").read_bytes() == archive
    monkeypatch.undo()
    (out,) = download(ds, data)
    assert log == ["/pkg.tar.gz"]  # the retry unpacked the kept archive, fetched nothing
    assert _entries(data) == ["pkg", "pkg/x", "pkg/y"]
    assert (out / "x").read_bytes() == b"x-data"


def test_cifar_layout_downloads_unpacks_and_loads(server, tmp_path, monkeypatch):
    import pickle

    import numpy as np

    from superlevel.data.cifar import CIFAR10_DIR, CIFAR10_FILES, load_cifar10

    url, root, _ = server
    rng = np.random.default_rng(0)
    batches = {
        name: pickle.dumps(
            {b"labels": [1, 2, 3, 4], b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8)},
            protocol=2,
        )
        for name in CIFAR10_FILES
    }
    sums = {name: md5(raw) for name, raw in batches.items()}
    archive = _tar_gz({f"{CIFAR10_DIR}/{n}": raw for n, raw in batches.items()})
    (root / "cifar-10-python.tar.gz").write_bytes(archive)
    real = DATASETS["cifar10"]
    fake = RemoteDataset(
        real.name,
        real.folder,
        url,
        (RemoteFile(real.files[0].name, md5(archive), len(archive)),),
        real.description,
        (CIFAR10_DIR, sums),
    )
    data = tmp_path / "data"
    assert download(fake, data) == [data / CIFAR10_DIR]
    assert _entries(data) == sorted([CIFAR10_DIR, *(f"{CIFAR10_DIR}/{n}" for n in sums)])
    assert load_cifar10(data, checksums=sums)["train_images"].shape == (20, 3, 32, 32)
    # The real entry against this mirror: its size and checksum reject the archive.
    with pytest.raises(DataIntegrityError, match="truncated"):
        download("cifar10", tmp_path / "other", base_url=url)
    assert _entries(tmp_path / "other") == []
