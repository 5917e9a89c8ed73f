"""Loaders: IDX, CIFAR pickle, text corpus, MNIST-1D and digits, on generated and real files."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from superlevel.data import DataIntegrityError, MissingDataError
from superlevel.data.cifar import load_cifar10, read_cifar_batch
from superlevel.data.generated import load_digits, load_mnist1d
from superlevel.data.idx import IDX_FILES, load_mnist, parse_idx, read_idx
from superlevel.data.text import encode_text, load_char_corpus


def real_data_dir() -> Path:
    env = os.environ.get("SUPERLEVEL_DATA")
    if not env or not Path(env).is_dir():
        pytest.skip("real data absent: set SUPERLEVEL_DATA to the shared data directory")
    return Path(env)


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def idx_bytes(arr: np.ndarray) -> bytes:
    """Our own writer for the IDX format: magic, big-endian sizes, big-endian data."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}
    header = bytes([0, 0, codes[arr.dtype], arr.ndim])
    dims = np.asarray(arr.shape, dtype=">u4").tobytes()
    return header + dims + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


# ------------------------------------------------------------------------ IDX


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_idx_roundtrip_every_dtype(dtype):
    rng = np.random.default_rng(0)
    arr = (rng.random((3, 4, 5)) * 100).astype(dtype)
    out = parse_idx(idx_bytes(arr))
    assert out.shape == (3, 4, 5) and out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, arr)


def test_read_idx_gz_and_raw_verify_content_checksum(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    data = idx_bytes(arr)
    (tmp_path / "a").write_bytes(data)
    (tmp_path / "a.gz").write_bytes(gzip.compress(data))
    # The checksum is of the uncompressed bytes, so raw and gz verify with the same md5.
    for name in ("a", "a.gz"):
        np.testing.assert_array_equal(read_idx(tmp_path / name, md5(data), (2, 3, 4)), arr)
    with pytest.raises(DataIntegrityError, match=r"a\.gz.*checksum mismatch.*expected 0{32}"):
        read_idx(tmp_path / "a.gz", "0" * 32)
    with pytest.raises(DataIntegrityError, match=r"expected shape \(3, 2, 4\)"):
        read_idx(tmp_path / "a", None, (3, 2, 4))


def test_idx_truncated_and_malformed_files_are_rejected(tmp_path):
    data = idx_bytes(np.zeros((10, 28, 28), np.uint8))
    p = tmp_path / "cut"
    p.write_bytes(data[:-5])
    with pytest.raises(
        DataIntegrityError, match=r"cut.*needs 7856 bytes, file has 7851.*truncated"
    ):
        read_idx(p)
    gz = tmp_path / "cut.gz"
    gz.write_bytes(gzip.compress(data)[:-20])
    with pytest.raises(DataIntegrityError, match=r"cut\.gz: not a complete gzip"):
        read_idx(gz)
    with pytest.raises(DataIntegrityError, match="bad magic"):
        parse_idx(b"\x01\x00\x08\x01" + data[4:])
    with pytest.raises(DataIntegrityError, match="unknown IDX type code 0x07"):
        parse_idx(b"\x00\x00\x07\x01" + data[4:])
    with pytest.raises(DataIntegrityError, match="trailing garbage"):
        parse_idx(data + b"\x00")


def write_fake_mnist(folder: Path, n_train: int = 20, n_test: int = 10) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True)
    for key, (stem, _, _) in IDX_FILES["mnist"].items():
        (folder / f"{stem}.gz").write_bytes(gzip.compress(idx_bytes(arrays[key])))
    return arrays


def test_load_mnist_generated_files_shape_and_checksum_errors(tmp_path):
    arrays = write_fake_mnist(tmp_path / "mnist")
    # Official checksums cannot match our random files: the error names the file.
    with pytest.raises(DataIntegrityError, match=r"t10k-images|train-images|labels"):
        load_mnist(tmp_path, verify=True)
    # Without verification the shape check still fires (official shapes are 60000/10000).
    with pytest.raises(DataIntegrityError, match=r"expected shape \(60000, 28, 28\)"):
        load_mnist(tmp_path / ".", verify=False)
    stem = IDX_FILES["mnist"]["train_images"][0]
    np.testing.assert_array_equal(
        read_idx(tmp_path / "mnist" / f"{stem}.gz"), arrays["train_images"]
    )


def test_missing_mnist_says_where_and_how(tmp_path):
    with pytest.raises(MissingDataError) as err:
        load_mnist(tmp_path, kind="fashion-mnist")
    msg = str(err.value)
    assert str(tmp_path / "fashion-mnist") in msg
    assert "superlevel data download fashion-mnist" in msg
    with pytest.raises(ValueError, match="kind must be one of"):
        load_mnist(tmp_path, kind="kmnist")


@pytest.mark.parametrize("kind", ["mnist", "fashion-mnist"])
def test_real_mnist_files_verify(kind):
    d = load_mnist(real_data_dir(), kind=kind)  # verifies the published md5 of every file
    assert d["train_images"].shape == (60000, 28, 28)
    assert d["test_images"].shape == (10000, 28, 28)
    assert set(np.unique(d["test_labels"]).tolist()) == set(range(10))
    if kind == "mnist":
        # Well-known facts of MNIST: the first training label is 5, classes are unbalanced.
        assert int(d["train_labels"][0]) == 5
        assert np.bincount(d["train_labels"]).tolist()[1] == 6742
    else:
        assert np.bincount(d["train_labels"]).tolist() == [6000] * 10


# ---------------------------------------------------------------------- CIFAR


def write_cifar(folder: Path, n: int = 12, seed: int = 0) -> dict[str, str]:
    """Batches in the official format (dict of bytes keys, protocol 2); returns md5s."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sums = {}
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        batch = {
            b"batch_label": name.encode(),
            b"labels": rng.integers(0, 10, n).tolist(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"{i}.png".encode() for i in range(n)],
        }
        raw = pickle.dumps(batch, protocol=2)
        (folder / name).write_bytes(raw)
        sums[name] = md5(raw)
    return sums


def test_cifar_loader_on_generated_batches(tmp_path):
    sums = write_cifar(tmp_path / "cifar-10-batches-py")
    d = load_cifar10(tmp_path, checksums=sums)
    assert d["train_images"].shape == (60, 3, 32, 32) and d["test_images"].shape == (12, 3, 32, 32)
    x, y = read_cifar_batch(tmp_path / "cifar-10-batches-py" / "data_batch_2", sums["data_batch_2"])
    np.testing.assert_array_equal(d["train_images"][12:24], x)
    np.testing.assert_array_equal(d["train_labels"][12:24], y)
    # Channel-major layout: the first 1024 bytes of a row are the red plane.
    raw = pickle.loads((tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes())
    np.testing.assert_array_equal(d["train_images"][0, 0].ravel(), raw[b"data"][0, :1024])
    # The official checksums reject these files.
    with pytest.raises(DataIntegrityError, match="data_batch_1.*checksum mismatch"):
        load_cifar10(tmp_path)


def test_cifar_corrupt_truncated_and_hostile_files(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    p = folder / "test_batch"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(DataIntegrityError, match="test_batch: not a readable CIFAR pickle"):
        read_cifar_batch(p)
    # Checksums are checked before unpickling.
    with pytest.raises(DataIntegrityError, match="checksum mismatch"):
        read_cifar_batch(p, "f" * 32)
    import datetime

    hostile = folder / "hostile"
    hostile.write_bytes(pickle.dumps({b"data": datetime.date(2020, 1, 1), b"labels": []}))
    with pytest.raises(DataIntegrityError, match="refusing to unpickle datetime.date"):
        read_cifar_batch(hostile)
    bad_shape = folder / "bad"
    bad_shape.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataIntegrityError, match=r"uint8 \(n, 3072\)"):
        read_cifar_batch(bad_shape)
    with pytest.raises(MissingDataError, match="superlevel data download cifar10"):
        load_cifar10(tmp_path / "nowhere")


# ----------------------------------------------------------------------- text


def test_char_corpus_vocab_split_and_windows(tmp_path):
    text = "Ünïcode ☃ text; " * 50 + "the end."
    raw = text.encode("utf-8")
    (tmp_path / "t.txt.gz").write_bytes(gzip.compress(raw))
    c = load_char_corpus(tmp_path / "t.txt.gz", train=0.8, val=0.1, md5=md5(raw))
    assert c.vocab == "".join(sorted(set(text)))
    assert c.decode(c.ids) == text
    sizes = c.sizes()
    assert sum(sizes.values()) == len(text)  # characters, not bytes
    assert sizes["train"] == int(0.8 * len(text)) and sizes["val"] == int(0.9 * len(text)) - int(
        0.8 * len(text)
    )
    # Split by position: the parts concatenate back to the text.
    assert "".join(c.decode(c.split(s)) for s in ("train", "val", "test")) == text
    x, y = c.windows("train", 7)
    assert x.shape == y.shape == ((sizes["train"] - 1) // 7, 7)
    torch.testing.assert_close(x[:, 1:], y[:, :-1])
    assert c.decode(x[1]) == text[7:14] and c.decode(y[1]) == text[8:15]
    with pytest.raises(DataIntegrityError, match="checksum mismatch"):
        load_char_corpus(tmp_path / "t.txt.gz", md5="0" * 32, train=0.7)


def test_char_corpus_errors(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"abc\xff\xfe")
    with pytest.raises(DataIntegrityError, match="bad.txt: not UTF-8"):
        load_char_corpus(bad)
    with pytest.raises(MissingDataError, match=r"nope\.txt not found"):
        load_char_corpus(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="train=0.95, val=0.1"):
        load_char_corpus(bad, train=0.95, val=0.1)
    with pytest.raises(ValueError, match="empty"):
        encode_text("")


def test_real_kjv_corpus():
    c = load_char_corpus(data_dir=real_data_dir())
    assert c.source == "kjv.txt.gz"
    assert 4_000_000 < len(c.ids) < 4_500_000
    assert 60 <= c.vocab_size <= 100 and "a" in c.vocab and "\n" in c.vocab
    assert "In the beginning God created" in c.decode(c.split("train")[:2000])


# ----------------------------------------------------------- generated data


def test_mnist1d_regenerated_deterministic_and_side_effect_free(tmp_path):
    # Generation must not disturb the caller's global random state (mnist1d reseeds it).
    np.random.seed(123)  # noqa: NPY002
    random.seed(123)
    expect_np, expect_py = np.random.random(), random.random()  # noqa: NPY002
    np.random.seed(123)  # noqa: NPY002
    random.seed(123)
    d = load_mnist1d(cache_dir=tmp_path)
    assert np.random.random() == expect_np and random.random() == expect_py  # noqa: NPY002
    assert d["x"].shape == (4000, 40) and d["x_test"].shape == (1000, 40)
    assert d["x"].dtype == np.float32 and d["y"].dtype == np.int64
    assert np.bincount(np.concatenate([d["y"], d["y_test"]])).tolist() == [500] * 10
    # The package standardises the whole data set: mean 0, std 1.
    allx = np.concatenate([d["x"], d["x_test"]])
    assert abs(allx.mean()) < 1e-5 and abs(allx.std() - 1) < 1e-4
    cached = tmp_path / "mnist1d_n5000_s42.npz"
    assert cached.is_file()
    with np.load(cached) as f:
        np.testing.assert_array_equal(f["x"], d["x"])
    d["x"][:] = 0  # returned arrays are copies
    assert np.abs(load_mnist1d()["x"]).sum() > 0
    other = load_mnist1d(num_samples=100, seed=1)
    assert other["x"].shape == (80, 40)
    with pytest.raises(ValueError, match="num_samples must be >= 10"):
        load_mnist1d(num_samples=5)


def test_digits():
    x, y = load_digits()
    assert x.shape == (1797, 64) and y.shape == (1797,)
    assert x.min() == 0.0 and x.max() == 1.0
    assert set(np.unique(y).tolist()) == set(range(10))


def test_a_damaged_or_unwritable_mnist1d_cache_costs_time_never_a_result(tmp_path):
    from superlevel.data import generated

    fresh = generated._generate_mnist1d(100, 3)
    bad = tmp_path / "mnist1d_n100_s3.npz"
    bad.write_bytes(b"PK\x03\x04 not an npz")
    generated._mnist1d_cached.cache_clear()
    got = load_mnist1d(num_samples=100, seed=3, cache_dir=tmp_path)
    assert all(np.array_equal(got[k], fresh[k]) for k in fresh)
    with np.load(bad) as f:  # replaced by a good one
        assert np.array_equal(f["x"], fresh["x"])
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    generated._mnist1d_cached.cache_clear()
    got = load_mnist1d(num_samples=100, seed=3, cache_dir=blocker / "sub")
    assert all(np.array_equal(got[k], fresh[k]) for k in fresh)


def test_the_tasks_cache_mnist1d_where_the_cache_says(tmp_path, monkeypatch):
    from superlevel.bench.tasks import build_task
    from superlevel.data import generated

    monkeypatch.setenv("SUPERLEVEL_CACHE", str(tmp_path))
    generated._mnist1d_cached.cache_clear()
    build_task("mnist1d_mlp", seed=1)
    assert (tmp_path / "mnist1d_n5000_s42.npz").is_file()


def test_a_gzip_bomb_is_refused_before_it_fills_memory(tmp_path, monkeypatch):
    from superlevel.data import base

    bomb = tmp_path / "kjv.txt.gz"
    bomb.write_bytes(gzip.compress(b"a" * 200_000))  # about 300 bytes on disk
    with pytest.raises(DataIntegrityError, match=r"expands to more than 100000 bytes"):
        base.read_maybe_gzip(bomb, max_bytes=100_000)
    assert base.read_maybe_gzip(bomb, max_bytes=200_000) == b"a" * 200_000  # at the cap: kept
    # The loaders use the default cap: lowered here, a corpus above it is refused.
    monkeypatch.setattr(base.read_maybe_gzip, "__defaults__", (50_000,))
    with pytest.raises(DataIntegrityError, match="gzip bomb"):
        load_char_corpus(bomb)
    assert base.MAX_DECOMPRESSED == 1 << 30
