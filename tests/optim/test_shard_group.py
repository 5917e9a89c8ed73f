"""ZeRO and FSDP1 with ``shard_group`` (gloo, 2 CPU processes) equal one process on the
full batch; without it each rank's norm is its own shard's and the runs drift apart."""

from __future__ import annotations

import pytest
import torch

from superlevel.optim import SuperLevelSGD
from superlevel.optim.norm import global_grad_norm, host_grad_norm

from . import shard_worker
from .test_fsdp import dist, run_torchrun


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("shard") / "shard.pt"
    run_torchrun(shard_worker.__file__, out)
    return torch.load(out)


@pytest.fixture(scope="module")
def single() -> dict:
    return shard_worker.single_process()


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo")
@pytest.mark.parametrize("wrapper", ["zero", "fsdp1"])
def test_shard_group_equals_one_process_on_the_full_batch(result, single, wrapper):
    got = result[f"{wrapper}-shard_group"]
    assert got["step"] == single["step"] == shard_worker.STEPS - 1  # the nan step skipped
    norms = torch.tensor(got["norms"])
    assert torch.isnan(norms[shard_worker.NAN_AT])
    keep = [i for i in range(shard_worker.STEPS) if i != shard_worker.NAN_AT]
    torch.testing.assert_close(norms[keep], torch.tensor(single["norms"])[keep], rtol=1e-12, atol=0)
    for p, q in zip(got["params"], single["params"], strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo")
@pytest.mark.parametrize("wrapper", ["zero", "fsdp1"])
def test_without_shard_group_each_rank_takes_its_shards_norm(result, single, wrapper):
    # What shard_group fixes: rank 0's norm is a shard's (smaller), the params drift.
    got = result[f"{wrapper}-local"]
    assert got["norms"][0] < single["norms"][0] * (1 - 1e-6)
    drift = max(
        (p - q).abs().max().item() for p, q in zip(got["params"], single["params"], strict=True)
    )
    assert drift > 1e-6


def test_shard_group_none_is_the_local_norm():
    gs = [torch.randn(5, dtype=torch.float64), torch.randn(3, dtype=torch.float64)]
    want = torch.cat(gs).norm().item()
    assert global_grad_norm(gs, shard_group=None).item() == pytest.approx(want, rel=1e-15)
    assert host_grad_norm(gs, shard_group=None) == pytest.approx(want, rel=1e-15)


def test_shard_group_is_kept_out_of_the_state_dict():
    p = torch.nn.Parameter(torch.zeros(2))
    marker = object()  # stands in for a ProcessGroup: never pickled into the state dict
    opt = SuperLevelSGD([p], shard_group=marker)
    assert opt.shard_group is marker
    assert all("shard_group" not in g for g in opt.state_dict()["param_groups"])
