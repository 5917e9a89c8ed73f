"""Overhead of StabilityMonitor (and LyapunovGuard) on an MNIST MLP, as a ratio.

The same training loop runs with and without the tool, interleaved block by block in one
process (so drift of a shared machine hits both alike); the overhead is
``time(with) / time(without) - 1`` over all blocks, and the median of per-block ratios.

    SUPERLEVEL_DATA=path/to/data python benchmarks/monitor_overhead.py
    python benchmarks/monitor_overhead.py --every 100 --blocks 4

Without MNIST under ``$SUPERLEVEL_DATA/mnist`` random data of the same shape is used
(the cost of the monitor does not depend on the pixel values); the output says which.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from torch import nn

from superlevel.stability import LyapunovGuard, StabilityMonitor

F = nn.functional


def load_data(n: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """First ``n`` MNIST training images as float vectors in [0, 1], or random stand-ins."""
    try:
        from superlevel.data import load_mnist

        d = load_mnist()
        x = torch.from_numpy(d["train_images"][:n].copy()).float().reshape(n, -1) / 255.0
        y = torch.from_numpy(d["train_labels"][:n].copy()).long()
        return x, y, "MNIST"
    except (ImportError, FileNotFoundError):
        gen = torch.Generator().manual_seed(0)
        return (
            torch.rand(n, 784, generator=gen),
            torch.randint(0, 10, (n,), generator=gen),
            ("random (MNIST not found)"),
        )


def make_mlp(hidden: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def run_block(
    mode: str, model, opt, x, y, steps: int, batch: int, start: int, tool
) -> tuple[float, float]:
    """Wall and process-CPU seconds of ``steps`` steps; ``mode``: "plain", "monitor", "guard"."""
    n = len(x)
    t0, c0 = time.perf_counter(), time.process_time()
    for t in range(start, start + steps):
        i = (t * batch) % (n - batch)
        xb, yb = x[i : i + batch], y[i : i + batch]
        if mode.startswith("guard"):
            if mode == "guard_eval":  # forward-only re-evaluation on this step's batch
                tool.evaluate = lambda xb=xb, yb=yb: F.cross_entropy(model(xb), yb)

            def closure(xb=xb, yb=yb):
                opt.zero_grad()
                loss = F.cross_entropy(model(xb), yb)
                loss.backward()
                return loss

            tool.step(closure)
            continue
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        if mode == "monitor":
            tool.record(loss)
    if mode == "monitor":
        tool.flush()  # the deferred host reads belong to the monitor's cost
    return time.perf_counter() - t0, time.process_time() - c0


def measure(mode: str, args, x, y, probe) -> dict[str, Any]:
    models = {m: make_mlp(args.hidden, 0) for m in ("plain", mode)}
    opts = {m: torch.optim.SGD(models[m].parameters(), lr=0.05) for m in models}
    if mode == "monitor":
        kw = {} if args.every is None else {"every": args.every}
        tool = StabilityMonitor(
            models[mode], opts[mode], probe_batch=probe, loss_fn=F.cross_entropy, **kw
        )
    else:
        tool = LyapunovGuard(opts[mode])
    # warm-up (allocator, first-call overheads) for both
    for m in models:
        run_block(m, models[m], opts[m], x, y, 20, args.batch, 0, tool)
    wall: dict[str, list[float]] = {m: [] for m in models}
    cpu: dict[str, list[float]] = {m: [] for m in models}
    for b in range(args.blocks):
        order = list(models) if b % 2 == 0 else list(models)[::-1]  # ABBA: cancels drift
        for m in order:
            w, c = run_block(
                m, models[m], opts[m], x, y, args.steps, args.batch, b * args.steps, tool
            )
            wall[m].append(w)
            cpu[m].append(c)
    out = {
        "wall": sum(wall[mode]) / sum(wall["plain"]) - 1.0,
        "cpu": sum(cpu[mode]) / sum(cpu["plain"]) - 1.0,
        "wall_median_block": statistics.median(
            a / b - 1.0 for a, b in zip(wall[mode], wall["plain"], strict=True)
        ),
        "plain_step_ms": 1e3 * sum(wall["plain"]) / (args.blocks * args.steps),
    }
    if mode != "monitor":
        out["counters"] = dict(tool.counters)
    if mode == "monitor":
        # component model, robust to a busy machine: per-step cost from the median block
        # (most blocks hold no probe) plus the median probe time spread over `every` steps
        plain = statistics.median(cpu["plain"]) / args.steps
        per_step = statistics.median(cpu[mode]) / args.steps - plain
        probe_s = [0.0]
        for _ in range(5 if tool.every else 0):
            c0 = time.process_time()
            tool.probe()
            probe_s.append(time.process_time() - c0)
        probe_t = statistics.median(probe_s)
        out.update(
            step_part=per_step / plain,
            probe_ms=1e3 * probe_t,
            probe_part=probe_t / (tool.every * plain) if tool.every else 0.0,
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--every", type=int, default=None, help="probe period (default: the monitor's)")
    p.add_argument("--steps", type=int, default=100, help="steps per block")
    p.add_argument("--blocks", type=int, default=40, help="interleaved blocks per variant")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--probe-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    p.add_argument("--guard", action="store_true", help="also measure LyapunovGuard")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x, y, source = load_data(20_000)
    probe = (x[-args.probe_size :], y[-args.probe_size :])
    print(
        f"data: {source}; MLP 784-{args.hidden}-10, batch {args.batch}, SGD; "
        f"{args.blocks} blocks x {args.steps} steps per variant, interleaved; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    every = StabilityMonitor.DEFAULT_EVERY if args.every is None else args.every
    res = measure("monitor", args, x, y, probe)
    print(
        f"monitor (every={every}, probe batch "
        f"{args.probe_size}): overhead {100 * res['cpu']:.1f}% of training CPU time, "
        f"{100 * res['wall']:.1f}% of wall time (median per block "
        f"{100 * res['wall_median_block']:.1f}%); plain step {res['plain_step_ms']:.2f} ms"
    )
    print(
        f"  components (medians of CPU time): per-step recording "
        f"{100 * res['step_part']:.1f}% + probe {res['probe_ms']:.0f} ms every "
        f"{every} steps {100 * res['probe_part']:.1f}% "
        f"= {100 * (res['step_part'] + res['probe_part']):.1f}%"
    )
    if args.guard:
        for mode, what in (("guard", "closure"), ("guard_eval", "forward-only evaluate=")):
            res = measure(mode, args, x, y, probe)
            print(
                f"guard ({what} re-evaluation): overhead {100 * res['cpu']:.1f}% CPU time, "
                f"{100 * res['wall']:.1f}% wall time; counters {res['counters']}"
            )


if __name__ == "__main__":
    main()
