"""torch.compile of SuperLevelSGD.step under an lr schedule: float lr vs tensor lr.

Usage::

    python benchmarks/compile_lr.py                  # CPU, 1 thread, 12 steps
    python benchmarks/compile_lr.py --device cuda --steps 20

A schedule changes ``group["lr"]`` every step (a linear warmup here). Where dynamo
specializes Python floats (``torch._dynamo.config.specialize_float = True``, the default
of older torch releases) every new value is a recompile, until the recompile limit
(``torch._dynamo.config.recompile_limit``, 8 by default) is hit and the frame falls back
to eager; without it the float becomes a graph input. A 0-dim tensor ``lr``, updated in
place by the scheduler, is a graph input either way.
Both variants run in this process, float first, each after ``torch._dynamo.reset()`` and
after an unreported warm-up run (the first compilation in a process pays cold caches);
printed: wall time of the whole loop (compilation included), graphs compiled (dynamo's
``unique_graphs``: recompiles and graph-break fragments), frames compiled, the number of
steps that took over 100 ms (a compilation happened in them) and the wall time of the
last step (steady state).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from superlevel.optim import SuperLevelSGD  # noqa: E402


def run(device: str, tensor_lr: bool, steps: int) -> dict[str, float]:
    """Loop ``steps`` compiled steps with a warmup schedule; wall time and graph count."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()  # global: would add up across runs
    torch.manual_seed(0)
    params = [torch.randn(256, 256, device=device, requires_grad=True) for _ in range(4)]
    for p in params:
        p.grad = torch.randn_like(p)
    lr = torch.tensor(0.1, device=device) if tensor_lr else 0.1
    opt = SuperLevelSGD(params, lr=lr, decay=1e-3, foreach=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100))

    @torch.compile
    def step() -> None:
        opt.step()

    counters = torch._dynamo.utils.counters
    start = time.perf_counter()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        sched.step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    return {
        "total_s": total,
        "graphs": float(counters["stats"]["unique_graphs"]),
        "frames": float(counters["frames"]["ok"]),
        "last_step_s": times[-1],
        "steps_over_100ms": float(sum(t > 0.1 for t in times)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--specialize-float",
        action="store_true",
        help="torch._dynamo.config.specialize_float = True (every float is a constant)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch._dynamo.config.specialize_float = args.specialize_float
    print(
        f"torch {torch.__version__}, device {args.device}, {args.steps} steps, warmup schedule, "
        f"specialize_float={args.specialize_float}"
    )
    run(args.device, True, 2)  # warm-up, not reported: the first compile pays cold caches
    rows = {
        name: run(args.device, name == "tensor lr", args.steps)
        for name in ("float lr", "tensor lr")
    }
    print(
        f"{'lr':<10} {'total s':>9} {'graphs':>7} {'frames':>7} {'steps > 100 ms':>15}"
        f" {'last step ms':>13}"
    )
    for name, r in rows.items():
        print(
            f"{name:<10} {r['total_s']:9.2f} {r['graphs']:7.0f} {r['frames']:7.0f}"
            f" {r['steps_over_100ms']:15.0f} {1e3 * r['last_step_s']:13.3f}"
        )
    ratio = rows["float lr"]["total_s"] / rows["tensor lr"]["total_s"]
    print(f"float / tensor total time: {ratio:.2f}x")


if __name__ == "__main__":
    main()
