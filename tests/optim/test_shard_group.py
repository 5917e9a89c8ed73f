"""ZeRO and FSDP1 with ``shard_group`` (gloo, 2 CPU processes) equal one process on the
full batch; without it (each rank's norm would be its own shard's) they are refused."""

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
@pytest.mark.parametrize(
    ("wrapper", "named"), [("zero", "ZeroRedundancyOptimizer over 2 ranks"), ("fsdp1", "FSDP1")]
)
def test_without_shard_group_a_sharded_setup_is_refused(result, wrapper, named):
    # Before: accepted, and each rank stepped with its shard's norm (the runs drifted).
    error = result[f"{wrapper}-local"]["error"]
    assert error is not None, f"{wrapper} without shard_group was accepted"
    assert named in error and "shard_group" in error


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo")
def test_fsdp1_no_shard_needs_no_shard_group_and_equals_one_process(result, single):
    got = result["fsdp1-no_shard"]  # every rank holds every element: the local norm is right
    keep = [i for i in range(shard_worker.STEPS) if i != shard_worker.NAN_AT]
    torch.testing.assert_close(
        torch.tensor(got["norms"])[keep], torch.tensor(single["norms"])[keep], rtol=1e-12, atol=0
    )
    for p, q in zip(got["params"], single["params"], strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo")
def test_fsdp1_use_orig_params_without_shard_group_warns(result):
    # The original params' flat views do not say whether they are sharded: a warning.
    messages = result["fsdp1-orig_params"]["warnings"]
    assert any("use_orig_params=True" in m and "shard_group" in m for m in messages), messages


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


def _flat_param(numel: int, whole: int) -> torch.nn.Parameter:
    """A tensor marked as FSDP1 marks its flat parameters (what the check reads)."""
    p = torch.nn.Parameter(torch.zeros(numel))
    p._fsdp_flattened = True
    p._unpadded_unsharded_size = torch.Size([whole])
    return p


def test_a_flat_parameter_shard_is_refused_without_shard_group_and_nothing_is_added():
    with pytest.raises(ValueError, match=r"holds 3 of the 5 elements.*shard_group"):
        SuperLevelSGD([_flat_param(3, 5)])
    SuperLevelSGD([_flat_param(5, 5)])  # NO_SHARD / one rank: all of it, accepted
    SuperLevelSGD([_flat_param(3, 5)], shard_group=object())
    opt = SuperLevelSGD([torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(ValueError, match="FSDP1"):
        opt.add_param_group({"params": [_flat_param(3, 5)]})
    assert len(opt.param_groups) == 1
