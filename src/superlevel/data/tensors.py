"""In-memory tensor data sets: splits, label noise, class imbalance and seeded batching.

Small data sets live as tensors on the training device; batches are index slices, so
there are no DataLoader workers. All randomness comes from explicit seeds through a CPU
``torch.Generator``, so the data order is the same on every device.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

__all__ = [
    "Splits",
    "apply_imbalance",
    "apply_label_noise",
    "batch_iterator",
    "carve_validation",
    "epoch_permutation",
    "eval_iterator",
    "take_subset",
]

# Offsets that separate the random streams drawn from one user seed.
_SPLIT_STREAM = 1_000_003
_NOISE_STREAM = 2_000_003
_IMBALANCE_STREAM = 3_000_017
_SHUFFLE_STREAM = 4_000_037


def _generator(seed: int, stream: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed((int(seed) * 7_919 + stream) % (2**63 - 1))
    return g


@dataclass
class Splits:
    """Train / validation / test tensors; ``x`` and ``y`` share the first dimension."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    def get(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(x, y)`` of ``split`` in ``{"train", "val", "test"}``."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        return getattr(self, f"{split}_x"), getattr(self, f"{split}_y")

    def to(self, device: torch.device | str) -> Splits:
        """Move every tensor to ``device``."""
        return Splits(*(t.to(device) for t in self._tensors()))

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.train_x, self.train_y, self.val_x, self.val_y, self.test_x, self.test_y)

    def sizes(self) -> dict[str, int]:
        """Number of examples per split."""
        return {"train": len(self.train_y), "val": len(self.val_y), "test": len(self.test_y)}


def carve_validation(
    x: torch.Tensor, y: torch.Tensor, n_val: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split training data into ``(train_x, train_y, val_x, val_y)`` by a seeded permutation.

    The validation split is the first ``n_val`` examples of the permutation, so the test
    split is never touched when choosing hyperparameters.
    """
    n = len(y)
    if not 0 < n_val < n:
        raise ValueError(f"n_val must be in (0, {n}), got {n_val}")
    perm = torch.randperm(n, generator=_generator(seed, _SPLIT_STREAM)).to(y.device)
    val, train = perm[:n_val], perm[n_val:]
    return x[train], y[train], x[val], y[val]


def take_subset(
    x: torch.Tensor, y: torch.Tensor, n: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` examples (all when ``n`` is ``None`` or at least ``len(y)``)."""
    if n is None:
        return x, y
    if int(n) < 1:
        raise ValueError(f"subset must be a positive number of examples, got {n}")
    return x[:n], y[:n]


def apply_label_noise(y: torch.Tensor, rate: float, num_classes: int, seed: int) -> torch.Tensor:
    """Symmetric label noise: each label, with probability ``rate``, becomes another class.

    The new class is uniform over the ``num_classes - 1`` wrong ones, so the expected
    fraction of wrong labels is exactly ``rate``. Returns a new tensor.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"label_noise must be in [0, 1), got {rate}")
    if rate == 0.0:
        return y
    g = _generator(seed, _NOISE_STREAM)
    flip = torch.rand(len(y), generator=g) < rate
    # Adding 1..C-1 modulo C never maps a label onto itself.
    shift = torch.randint(1, num_classes, (len(y),), generator=g)
    y_cpu = y.cpu()
    noisy = torch.where(flip, (y_cpu + shift) % num_classes, y_cpu)
    return noisy.to(y.device)


def imbalance_counts(n_max: int, num_classes: int, ratio: float) -> list[int]:
    """Long-tailed class sizes ``n_c = floor(n_max * ratio ** (-c / (C - 1)))``.

    Class 0 keeps ``n_max`` examples, the last class ``n_max / ratio`` (the exponential
    profile of Cao et al., 2019, "LDAM"); ``ratio = 1`` is balanced.
    """
    if ratio < 1.0:
        raise ValueError(f"imbalance ratio must be >= 1 (largest / smallest class), got {ratio}")
    if num_classes == 1:
        return [n_max]
    return [max(1, int(n_max * ratio ** (-c / (num_classes - 1)))) for c in range(num_classes)]


def apply_imbalance(
    x: torch.Tensor, y: torch.Tensor, ratio: float, num_classes: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Subsample classes to the long-tailed profile of :func:`imbalance_counts`.

    ``n_max`` is the size of the smallest class in the input, so every class can supply
    its quota; the kept examples of each class are a seeded random choice, and the
    original order of the survivors is preserved.
    """
    if ratio == 1.0:
        return x, y
    y_cpu = y.cpu()
    per_class = torch.bincount(y_cpu, minlength=num_classes)
    counts = imbalance_counts(int(per_class.min()), num_classes, ratio)
    g = _generator(seed, _IMBALANCE_STREAM)
    keep = []
    for c, k in enumerate(counts):
        idx = torch.nonzero(y_cpu == c).flatten()
        keep.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    kept = torch.cat(keep).sort().values.to(y.device)
    return x[kept], y[kept]


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The seeded permutation of ``range(n)`` used in ``epoch`` (same on every device)."""
    g = _generator(seed * 1_000_033 + epoch, _SHUFFLE_STREAM)
    return torch.randperm(n, generator=g)


def batch_iterator(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    drop_last: bool = True,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled mini-batches of one training epoch; the order depends only on (seed, epoch).

    With ``drop_last`` every batch has exactly ``batch_size`` examples (the last partial
    one is dropped), so every step has the same gradient-noise scale.
    """
    n = len(y)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    perm = epoch_permutation(n, seed, epoch).to(y.device)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        idx = perm[start : start + batch_size]
        yield x[idx], y[idx]


def eval_iterator(
    x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """All examples in a fixed order, in batches of at most ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(y), batch_size):
        yield x[start : start + batch_size], y[start : start + batch_size]
