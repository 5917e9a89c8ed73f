"""Worker for test_backward_norm.py: norm_in_backward under DDP and FSDP2 (gloo, CPU).

Run by ``torchrun --nproc_per_node 2 backward_norm_worker.py OUT``; each rank trains on
its half of each batch. Rank 0 saves, per setup, the full parameters after the steps, the
reported norms, the handle's counters, and what the per-gradient checks alone (identity,
version, storage, view) said before each step, without the multi-process rule.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist

from superlevel.optim import SuperLevelSGD, norm_in_backward

STEPS = 4
KWARGS = dict(lr=0.3, decay=0.1, momentum=0.9, weight_decay=0.01)


def make_model(dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
    return model.to(dtype)


def batches(
    n: int = STEPS, dtype: torch.dtype = torch.float64, seed: int = 1
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(8, 5, generator=gen, dtype=dtype),
            torch.randn(8, 3, generator=gen, dtype=dtype),
        )
        for _ in range(n)
    ]


def train(model, opt, data, rank=0, world=1, set_to_none=True) -> dict:
    """Hooked steps on this rank's half of each batch; the per-gradient verdicts too."""
    handle = norm_in_backward(opt)
    norms, own_checks = [], []
    for x, y in data:
        lo, hi = rank * len(x) // world, (rank + 1) * len(x) // world
        opt.zero_grad(set_to_none=set_to_none)
        torch.nn.functional.mse_loss(model(x[lo:hi]), y[lo:hi]).backward()
        params = [p for p in model.parameters() if p.grad is not None]
        _, why = handle._shares(params, [p.grad for p in params], host=True)
        own_checks.append(why)
        opt.step()
        norms.append(opt.stats()["grad_norm"].item())
    return {"norms": norms, "cached": handle.cached, "reasons": dict(handle.reasons),
            "own_checks": own_checks}  # fmt: skip


def _ddp(rank: int, world: int, bucket_view: bool) -> dict:
    from torch.nn.parallel import DistributedDataParallel

    model = DistributedDataParallel(make_model(), gradient_as_bucket_view=bucket_view)
    opt = SuperLevelSGD(model.parameters(), **KWARGS)
    # With bucket views the gradients stay views of DDP's buckets (set_to_none=False).
    out = train(model, opt, batches(), rank, world, set_to_none=not bucket_view)
    out["params"] = [p.detach().clone() for p in model.module.parameters()]
    return out


def _fsdp2(rank: int, world: int) -> dict:
    from torch.distributed.fsdp import fully_shard

    model = make_model()
    fully_shard(model[0])
    fully_shard(model[2])
    fully_shard(model)
    opt = SuperLevelSGD(model.parameters(), **KWARGS)
    out = train(model, opt, batches(), rank, world)
    out["params"] = [p.full_tensor().detach().clone() for p in model.parameters()]
    return out


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    result = {
        "ddp": _ddp(rank, world, bucket_view=False),
        "ddp-bucket-view": _ddp(rank, world, bucket_view=True),
        "fsdp2": _fsdp2(rank, world),
    }
    if rank == 0:
        torch.save(result, out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
    sys.stdout.flush()
    os._exit(0)  # gloo can abort during interpreter teardown; the work is saved
