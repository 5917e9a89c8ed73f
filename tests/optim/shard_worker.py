"""Worker for test_shard_group.py: ZeRO and FSDP1 over gloo on CPU, one half batch per rank.

Run by ``torchrun --nproc_per_node 2 shard_worker.py OUT``; rank 0 saves, for each
wrapper with ``shard_group``, the full parameters after the steps, the reported norms
and the step count; without it, the error that refused the optimizer (ZeRO, FSDP1 flat
parameters), the run (FSDP1 ``NO_SHARD``: every rank holds everything) or the warnings
(FSDP1 ``use_orig_params=True``).
"""

from __future__ import annotations

import os
import sys
import warnings

import torch
import torch.distributed as dist

from superlevel.optim import SuperLevelSGD

STEPS = 5
NAN_AT = 2  # one non-finite step: every rank must skip it alike
KWARGS = dict(lr=0.3, decay=0.1, momentum=0.9, weight_decay=0.01)


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    # Odd sizes: the flat FSDP1 shards split unevenly (padding must not enter the norm).
    return torch.nn.Sequential(
        torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)
    ).double()


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [
        (
            torch.randn(8, 5, generator=gen, dtype=torch.float64),
            torch.randn(8, 3, generator=gen, dtype=torch.float64),
        )
        for _ in range(STEPS)
    ]


def train(model, opt, data, rank=0, world=1, poison=None):
    """Steps on this rank's half of each batch; ``poison(i)`` puts a nan in a gradient."""
    norms = []
    for i, (x, y) in enumerate(data):
        lo, hi = rank * len(x) // world, (rank + 1) * len(x) // world
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x[lo:hi]), y[lo:hi]).backward()
        if i == NAN_AT and poison is not None:
            poison()
        opt.step()
        inner = getattr(opt, "optim", opt)  # ZeRO's local optimizer holds the stats
        norms.append(inner.stats()["grad_norm"].item())
    return norms, int(inner.stats()["step"].item())


def single_process() -> dict:
    model = make_model()
    opt = SuperLevelSGD(model.parameters(), **KWARGS)

    def poison():
        model[0].weight.grad[0, 0] = float("nan")

    norms, step = train(model, opt, batches(), poison=poison)
    return {"params": [p.detach().clone() for p in model.parameters()], "norms": norms,
            "step": step}  # fmt: skip


def _zero(rank: int, world: int, shard_group) -> dict:
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel

    model = DistributedDataParallel(make_model())
    opt = ZeroRedundancyOptimizer(
        model.parameters(), optimizer_class=SuperLevelSGD, shard_group=shard_group, **KWARGS
    )

    def poison():
        model.module[0].weight.grad[0, 0] = float("nan")

    norms, step = train(model, opt, batches(), rank, world, poison)
    return {"params": [p.detach().clone() for p in model.module.parameters()], "norms": norms,
            "step": step}  # fmt: skip


def _fsdp1(rank: int, world: int, shard_group, **fsdp_kwargs) -> dict:
    from torch.distributed.fsdp import FullyShardedDataParallel

    model = FullyShardedDataParallel(make_model(), device_id=torch.device("cpu"), **fsdp_kwargs)
    opt = SuperLevelSGD(model.parameters(), shard_group=shard_group, **KWARGS)

    replicated = "sharding_strategy" in fsdp_kwargs  # NO_SHARD: every rank has the grad

    def poison():
        if rank == 0 or replicated:  # a nan in one rank's shard only, or in every copy
            next(model.parameters()).grad[0] = float("nan")

    norms, step = train(model, opt, batches(), rank, world, poison)
    with FullyShardedDataParallel.summon_full_params(model):
        params = [p.detach().clone() for p in model.module.parameters()]
    return {"params": params, "norms": norms, "step": step}


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    from torch.distributed.fsdp import ShardingStrategy

    result = {}
    for name, run in (("zero", _zero), ("fsdp1", _fsdp1)):
        result[f"{name}-shard_group"] = run(rank, world, dist.group.WORLD)
        try:
            run(rank, world, None)
        except ValueError as exc:  # refused at construction, on every rank
            result[f"{name}-local"] = {"error": str(exc)}
        else:
            result[f"{name}-local"] = {"error": None}
    result["fsdp1-no_shard"] = _fsdp1(
        rank, world, None, sharding_strategy=ShardingStrategy.NO_SHARD
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result["fsdp1-orig_params"] = _fsdp1(rank, world, None, use_orig_params=True)
    result["fsdp1-orig_params"]["warnings"] = [str(w.message) for w in caught]
    if rank == 0:
        torch.save(result, out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
    sys.stdout.flush()
    os._exit(0)  # gloo can abort during interpreter teardown; the work is saved
