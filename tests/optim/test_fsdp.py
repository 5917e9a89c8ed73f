"""FSDP2 (fully_shard, gloo, 2 CPU processes) equals one process on the full batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from superlevel.optim import SuperLevelSGD

from . import fsdp_worker

dist = pytest.importorskip("torch.distributed", reason="this torch build has no torch.distributed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_torchrun(worker: str, out: Path) -> None:
    """``torchrun --nproc_per_node 2 worker out`` (gloo, one thread each); fails with its log."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        str(Path(worker)), str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert out.exists(), f"worker failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}"


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo")
def test_fsdp2_two_ranks_equal_single_process(tmp_path: Path):
    out = tmp_path / "fsdp.pt"
    run_torchrun(fsdp_worker.__file__, out)
    result = torch.load(out)

    model = fsdp_worker.make_model()
    opt = SuperLevelSGD(model.parameters(), **fsdp_worker.KWARGS)
    norms = fsdp_worker.train(model, opt, fsdp_worker.batches())
    for name, got in result.items():
        # The norm is the full gradient's norm, not a shard's (a per-shard norm is smaller).
        assert got["norms"][2] != got["norms"][2]  # nan step reported as nan
        torch.testing.assert_close(
            torch.tensor(got["norms"])[[0, 1, 3]], torch.tensor(norms)[[0, 1, 3]], rtol=1e-5, atol=0
        )
        assert got["step"] == 3, name
        for p, q in zip(got["params"], model.parameters(), strict=True):
            torch.testing.assert_close(p, q.detach(), rtol=1e-5, atol=1e-6, msg=name)
        for b, p in zip(got["bufs"], model.parameters(), strict=True):
            torch.testing.assert_close(b, opt.state[p]["momentum_buffer"], rtol=1e-5, atol=1e-6)
