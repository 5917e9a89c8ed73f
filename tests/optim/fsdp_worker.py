"""Worker for test_fsdp.py: FSDP2 (fully_shard) over gloo on CPU, one half batch per rank.

Run by ``torchrun --nproc_per_node 2 fsdp_worker.py OUT``; rank 0 saves, per update path,
the full parameters after the steps and the optimizer's reported norms.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist

from superlevel.optim import SuperLevelSGD

STEPS = 4
KWARGS = dict(lr=0.3, decay=0.1, momentum=0.9, weight_decay=0.01)
PATHS = {"fused": {"fused": True}, "foreach": {"foreach": True}, "single": {"foreach": False}}


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    # Odd sizes so the Shard(0) split is uneven (padding must not enter the norm).
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [
        (torch.randn(8, 5, generator=gen), torch.randn(8, 3, generator=gen)) for _ in range(STEPS)
    ]


def train(model, opt, data, rank=0, world=1):
    norms = []
    for i, (x, y) in enumerate(data):
        lo, hi = rank * len(x) // world, (rank + 1) * len(x) // world
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x[lo:hi]), y[lo:hi]).backward()
        if i == 2:  # one non-finite step: skipped on every rank alike
            model[0].weight.grad.fill_(float("nan"))
        opt.step()
        norms.append(opt.stats()["grad_norm"].item())
    return norms


def main(out: str) -> None:
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    result = {}
    for name, flags in PATHS.items():
        model = make_model()
        fully_shard(model[0])
        fully_shard(model[2])
        fully_shard(model)
        opt = SuperLevelSGD(model.parameters(), **KWARGS, **flags)
        norms = train(model, opt, batches(), rank, world)
        full = [p.full_tensor().detach().clone() for p in model.parameters()]
        bufs = [opt.state[p]["momentum_buffer"].full_tensor() for p in model.parameters()]
        result[name] = {
            "params": full,
            "norms": norms,
            "bufs": bufs,
            "step": opt.stats()["step"].item(),
        }
    if rank == 0:
        torch.save(result, out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
    sys.stdout.flush()
    # gloo + FSDP2 can abort during interpreter teardown; the work is done and saved.
    os._exit(0)
