"""A character-level corpus from any UTF-8 text file (``.gz`` too).

The vocabulary is the sorted set of characters of the whole file (a fixed encoding,
not a modelling choice). The text is split *by position*: the first ``train`` fraction
is training text, the next ``val`` fraction validation, the rest test, so no sequence
straddles two splits. Windows for next-character prediction are non-overlapping:
``x = ids[i*L : (i+1)*L]`` and ``y = ids[i*L + 1 : (i+1)*L + 1]``.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from superlevel.data.base import (
    DATA_ENV,
    DataIntegrityError,
    MissingDataError,
    read_maybe_gzip,
    resolve_data_dir,
    verify_md5,
)

__all__ = ["KJV_PATH", "CharCorpus", "corpus_path", "encode_text", "load_char_corpus"]

KJV_PATH = "text/kjv.txt.gz"  # relative to the data directory


def encode_text(text: str) -> tuple[str, np.ndarray]:
    """Vocabulary (sorted unique characters) and the int64 id of every character.

    Vectorised via UTF-32 code points: ``np.unique(..., return_inverse=True)``.
    """
    if not text:
        raise ValueError("the text is empty")
    codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    uniq, ids = np.unique(codes, return_inverse=True)
    vocab = "".join(chr(int(c)) for c in uniq)
    return vocab, ids.astype(np.int64)


@dataclass(frozen=True)
class CharCorpus:
    """An encoded text with its vocabulary and positional train/val/test boundaries.

    Attributes:
        source: where the text came from (file name).
        vocab: the characters, in id order.
        ids: int64 tensor of character ids, the whole text.
        bounds: ``(train_end, val_end)`` character positions.
    """

    source: str
    vocab: str
    ids: torch.Tensor
    bounds: tuple[int, int]

    @property
    def vocab_size(self) -> int:
        """Number of distinct characters."""
        return len(self.vocab)

    def split(self, name: str) -> torch.Tensor:
        """Character ids of split ``name`` in ``{"train", "val", "test"}``."""
        a, b = self.bounds
        ranges = {"train": (0, a), "val": (a, b), "test": (b, len(self.ids))}
        if name not in ranges:
            raise ValueError(f"split must be 'train', 'val' or 'test', got {name!r}")
        lo, hi = ranges[name]
        return self.ids[lo:hi]

    def sizes(self) -> dict[str, int]:
        """Characters per split."""
        return {s: len(self.split(s)) for s in ("train", "val", "test")}

    def windows(self, name: str, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Non-overlapping ``(x, y)`` windows ``(n, seq_len)``; ``y`` is ``x`` shifted by one."""
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        ids = self.split(name)
        n = (len(ids) - 1) // seq_len
        if n < 1:
            raise ValueError(
                f"split {name!r} has {len(ids)} characters, too few for seq_len {seq_len}"
            )
        x = ids[: n * seq_len].view(n, seq_len)
        y = ids[1 : n * seq_len + 1].view(n, seq_len)
        return x, y

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        """The text of a sequence of ids."""
        return "".join(self.vocab[int(i)] for i in ids)


def corpus_path(path: str | os.PathLike[str] | None, data_dir: str | None) -> Path:
    """The file :func:`load_char_corpus` reads for ``path`` (see there); it may not exist."""
    if path is None:
        return resolve_data_dir(data_dir) / KJV_PATH
    p = Path(path).expanduser()
    # A relative path is looked up in the data directory first, then the working directory.
    if not p.is_absolute():
        in_data = resolve_data_dir(data_dir) / p
        if in_data.is_file() or not p.is_file():
            return in_data
    return p


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, fractions: tuple[float, float], md5: str | None) -> CharCorpus:
    p = Path(path)
    raw = read_maybe_gzip(p)
    verify_md5(raw, md5, p, "uncompressed content")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataIntegrityError(f"{p}: not UTF-8 text ({exc})") from exc
    vocab, ids = encode_text(text)
    n = len(ids)
    train_end = int(n * fractions[0])
    val_end = int(n * (fractions[0] + fractions[1]))
    return CharCorpus(p.name, vocab, torch.from_numpy(ids), (train_end, val_end))


def load_char_corpus(
    path: str | os.PathLike[str] | None = None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    train: float = 0.9,
    val: float = 0.05,
    md5: str | None = None,
) -> CharCorpus:
    """Load and encode a UTF-8 text file as a :class:`CharCorpus`.

    Args:
        path: the text file (``.gz`` is decompressed); ``None`` means ``text/kjv.txt.gz``
            in the data directory; a relative path is looked up in the data directory first.
        data_dir: data directory (``None``: ``$SUPERLEVEL_DATA``, else ``./data``).
        train: fraction of characters for training (from the start of the text).
        val: fraction for validation (after the training part); the rest is test.
        md5: optional checksum of the uncompressed bytes.

    Raises:
        ValueError: fractions outside ``(0, 1)`` or not leaving a test part.
        MissingDataError: the file does not exist.
        DataIntegrityError: corrupt gzip, checksum mismatch or invalid UTF-8.
    """
    if not (0 < train < 1 and 0 < val < 1 and train + val < 1):
        raise ValueError(f"need 0 < train, val and train + val < 1, got train={train}, val={val}")
    p = corpus_path(path, None if data_dir is None else str(data_dir))
    if not p.is_file():
        raise MissingDataError(
            f"text corpus: {p} not found. Put any UTF-8 text file there (or pass its path); "
            f"the default corpus is {KJV_PATH} under the data directory (${DATA_ENV})"
        )
    return _load_cached(str(p.resolve()), (float(train), float(val)), md5)
