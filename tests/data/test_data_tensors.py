"""Splits, label noise, class imbalance and seeded batching of in-memory tensors."""

from __future__ import annotations

import pytest
import torch

from superlevel.data.tensors import (
    Splits,
    apply_imbalance,
    apply_label_noise,
    batch_iterator,
    carve_validation,
    eval_iterator,
    imbalance_counts,
    take_subset,
)


def test_carve_validation_is_a_fixed_disjoint_partition():
    x = torch.arange(100).float().unsqueeze(1)
    y = torch.arange(100)
    tx, ty, vx, vy = carve_validation(x, y, 20, seed=0)
    assert len(vy) == 20 and len(ty) == 80
    assert sorted(torch.cat([ty, vy]).tolist()) == list(range(100))
    torch.testing.assert_close(tx[:, 0].long(), ty)  # rows stay paired
    again = carve_validation(x, y, 20, seed=0)
    assert torch.equal(again[3], vy)
    assert not torch.equal(carve_validation(x, y, 20, seed=1)[3], vy)
    with pytest.raises(ValueError, match=r"n_val must be in \(0, 100\), got 100"):
        carve_validation(x, y, 100, seed=0)


def test_label_noise_flips_the_requested_fraction_to_other_classes():
    y = torch.arange(20_000) % 10
    noisy = apply_label_noise(y, 0.3, 10, seed=0)
    flipped = noisy != y
    assert abs(flipped.float().mean().item() - 0.3) < 0.015
    # Flipped labels are uniform over the 9 wrong classes.
    shift = ((noisy - y) % 10)[flipped]
    counts = torch.bincount(shift, minlength=10)
    assert counts[0] == 0
    assert (counts[1:].float() / flipped.sum() - 1 / 9).abs().max() < 0.02
    assert torch.equal(apply_label_noise(y, 0.3, 10, seed=0), noisy)
    assert apply_label_noise(y, 0.0, 10, seed=0) is y
    with pytest.raises(ValueError, match=r"label_noise must be in \[0, 1\), got 1.0"):
        apply_label_noise(y, 1.0, 10, seed=0)


def test_imbalance_profile_and_subsampling():
    assert imbalance_counts(100, 3, 100.0) == [100, 10, 1]
    assert imbalance_counts(50, 4, 1.0) == [50, 50, 50, 50]
    y = torch.arange(1000) % 5  # 200 per class
    x = torch.arange(1000)
    xi, yi = apply_imbalance(x, y, 10.0, 5, seed=0)
    assert torch.bincount(yi, minlength=5).tolist() == imbalance_counts(200, 5, 10.0)
    assert torch.equal(y[xi], yi) and bool((xi[1:] > xi[:-1]).all())  # paired, order kept
    with pytest.raises(ValueError, match="imbalance ratio must be >= 1"):
        imbalance_counts(10, 2, 0.5)


def test_batch_order_depends_only_on_seed_and_epoch():
    x = torch.arange(103).float()
    y = torch.arange(103)

    def order(seed, epoch):
        return torch.cat([b for _, b in batch_iterator(x, y, 10, seed=seed, epoch=epoch)])

    first = order(3, 0)
    assert len(first) == 100  # drop_last: 10 full batches
    assert len(set(first.tolist())) == 100  # no repeats within an epoch
    assert torch.equal(order(3, 0), first)
    assert not torch.equal(order(3, 1), first)
    assert not torch.equal(order(4, 0), first)
    batches = list(batch_iterator(x, y, 10, seed=3, epoch=0, drop_last=False))
    assert [len(b) for _, b in batches] == [10] * 10 + [3]
    assert sorted(torch.cat([b for _, b in batches]).tolist()) == list(range(103))
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        next(batch_iterator(x, y, 0, seed=0, epoch=0))


def test_eval_iterator_subset_and_splits():
    x, y = torch.arange(25).float(), torch.arange(25)
    assert [b.tolist() for _, b in eval_iterator(x, y, 10)][-1] == list(range(20, 25))
    sx, sy = take_subset(x, y, 7)
    assert sy.tolist() == list(range(7))
    assert take_subset(x, y, None)[1] is y
    with pytest.raises(ValueError, match="subset must be a positive"):
        take_subset(x, y, 0)
    s = Splits(x[:10], y[:10], x[10:15], y[10:15], x[15:], y[15:])
    assert s.sizes() == {"train": 10, "val": 5, "test": 10}
    assert torch.equal(s.get("val")[1], y[10:15])
    with pytest.raises(ValueError, match="split must be"):
        s.get("dev")
