"""Downloads against a real local HTTP server: checksums, atomic writes, rejected corruption."""

from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import http.server
import io
import tarfile
import threading
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
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
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
    out = fetch(url + "good.bin", dest_dir / "good.bin", md5(good))
    assert out.read_bytes() == good
    with pytest.raises(
        DataIntegrityError, match=r"bad\.bin failed its checksum.*nothing was written"
    ):
        fetch(url + "bad.bin", dest_dir / "bad.bin", md5(good))
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
        fetch(url + "f", dest, md5(b"expected"))
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
        (RemoteFile("a.gz", md5(a)), RemoteFile("b.gz", md5(b))),
        "toy",
    )
    data = tmp_path / "data"
    paths = download(ds, data, base_url=url.rstrip("/"))  # the trailing slash is added
    assert [p.read_bytes() for p in paths] == [a, b]
    assert dataset_status(ds, data) == "present"
    download(ds, data, base_url=url)
    assert log == ["/a.gz", "/b.gz"]  # second call: checksums ok, nothing fetched
    (data / "toy" / "b.gz").write_bytes(b"damaged")
    (root / "b.gz").write_bytes(b"still wrong")
    with pytest.raises(DataIntegrityError, match="b.gz failed its checksum"):
        download(ds, data, base_url=url)
    # The damaged local file is untouched (never overwritten by a bad download).
    assert (data / "toy" / "b.gz").read_bytes() == b"damaged"


def test_real_mnist_entry_rejects_a_corrupted_mirror(server, tmp_path):
    url, root, _ = server
    for f in DATASETS["mnist"].files:
        (root / f.name).write_bytes(gzip.compress(b"not mnist"))
    with pytest.raises(DataIntegrityError, match="train-images-idx3-ubyte.gz failed its checksum"):
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
        "pkg", ".", url, (RemoteFile("pkg.tar.gz", md5(archive)),), "t", ("pkg", md5s)
    )
    data = tmp_path / "data"
    (out,) = download(ds, data)
    assert out == data / "pkg"
    assert sorted(p.name for p in out.iterdir()) == ["x", "y"]  # no traversal, no nesting
    assert not (tmp_path / "evil").exists() and not (data / "pkg.tar.gz").exists()
    assert sorted(p.name for p in data.iterdir()) == ["pkg"]
    bad = RemoteDataset(
        "pkg2", ".", url, (RemoteFile("pkg.tar.gz", md5(archive)),), "t", ("pkg2", md5s)
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
        RemoteDataset("tiny", "tiny", url, (RemoteFile("p.gz", md5(payload)),), "tiny set"),
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
    (root / "p.gz").write_bytes(b"tampered")
    args = parser.parse_args(
        ["data", "download", "tiny", "--data-dir", str(tmp_path / "e"), "--base-url", url]
    )
    assert args.func(args) == 1
    assert "failed its checksum" in capsys.readouterr().err
    assert not (tmp_path / "e" / "tiny" / "p.gz").exists()
