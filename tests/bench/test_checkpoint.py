"""Checkpoint files: atomic writes that keep the old file on failure, reads that name the file."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch

from superlevel.bench.run import checkpointing as checkpoint
from superlevel.bench.run.checkpointing import CheckpointError, load, save_atomic


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "run.pt"
    save_atomic({"epoch": 1, "w": torch.ones(3)}, path)
    real_save = torch.save

    def full_disk(obj, fh):
        real_save(obj, fh)  # most of the bytes reach the temporary file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*run\.pt: No space left"):
        save_atomic({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert load(path)["epoch"] == 1 and torch.equal(load(path)["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]  # no temporary left


def test_unreadable_checkpoints_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match=r"bad\.pt is unreadable or corrupted") as err:
        load(bad)
    assert err.value.path == bad
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.ones(2), tensor)
    with pytest.raises(CheckpointError, match="holds a Tensor, not a checkpoint"):
        load(tensor)
    with pytest.raises(CheckpointError, match="unreadable"):
        load(tmp_path / "absent.pt")
