"""Step cost of SuperLevelSGD against torch's optimizers, interleaved in one process.

Usage::

    python benchmarks/step_cost.py                      # CPU (2 threads), CUDA if present
    python benchmarks/step_cost.py --device cpu --threads 2 --configs 8e6x64
    python benchmarks/step_cost.py --device cuda --configs 1e7x100,1e8x200,1e9x400

Each config ``NxK`` is N float32 parameters split into K equal tensors, with random
gradients. Every candidate steps the same tensors in turn (round robin in a shuffled order,
on CPU after a cache flush, so drifting load and cache state hit all alike); the table
gives the time per step (median by default) and ratios to
``SGD(foreach)`` and to ``clip_grad_norm_ + SGD(foreach)``. Memory traffic per step:
SGD 3N floats, ours 4N (one extra read of the gradients for the global norm),
clip + SGD 6N.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from superlevel.optim import SuperLevelSGD  # noqa: E402

CPU_CONFIGS = "1e6x8,1e6x256,8e6x64,3.2e7x64"
CUDA_CONFIGS = "1e7x100,1e8x200,1e9x400"
BASE, CLIP = "SGD(foreach)", "clip+SGD(foreach)"
GOALS = {  # (device, config): (max ratio to SGD(foreach), max ratio to clip+SGD)
    ("cpu", "8e6x64"): (1.5, 0.7),
    ("cuda", "1e9x400"): (1.2, None),
}


def parse_config(text: str) -> tuple[int, int]:
    """``"8e6x64"`` -> (8_000_000, 64)."""
    try:
        n, k = text.lower().split("x")
        return int(float(n)), int(k)
    except ValueError as exc:
        raise ValueError(f"config must look like 8e6x64, got {text!r}") from exc


def make_tensors(n: int, k: int, device: str) -> list[torch.nn.Parameter]:
    gen = torch.Generator(device=device).manual_seed(0)
    size = max(n // k, 1)
    params = []
    for _ in range(k):
        p = torch.nn.Parameter(torch.randn(size, device=device, generator=gen))
        p.grad = torch.randn(size, device=device, generator=gen) * 1e-3
        params.append(p)
    return params


def candidates(params: list[torch.nn.Parameter], device: str) -> dict[str, Callable[[], None]]:
    """Step functions to time, all over the same params."""
    out: dict[str, Callable[[], None]] = {}
    sgd = torch.optim.SGD(params, lr=1e-3, foreach=True)
    out[BASE] = sgd.step
    out["SGD(fused)"] = torch.optim.SGD(params, lr=1e-3, fused=True).step

    def clip_sgd() -> None:
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        sgd.step()

    out[CLIP] = clip_sgd
    out["Adam(fused)"] = torch.optim.Adam(params, lr=1e-6, fused=True).step
    out["SuperLevelSGD"] = SuperLevelSGD(params, lr=1e-3, decay=1e-4).step
    # The default is foreach on CPU and fused on CUDA; time the other one too.
    other = {"fused": True} if device == "cpu" else {"foreach": True}
    name = f"SuperLevelSGD({next(iter(other))})"
    out[name] = SuperLevelSGD(params, lr=1e-3, decay=1e-4, **other).step
    return out


FLUSH_BYTES = 128 << 20
STATS = {
    "median": statistics.median,
    "min": min,
    "p25": lambda ts: statistics.quantiles(ts, n=4)[0],
}


def time_steps(
    steps: dict[str, Callable[[], None]],
    device: str,
    repeats: int,
    warmup: int = 3,
    stat: str = "median",
) -> dict[str, float]:
    """Seconds per step (median, min or 25th percentile), round robin over the candidates.

    On a busy machine the median mixes in time slices lost to other processes; the
    minimum is then the better estimate of the cost itself.
    """
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    # CPU: write a buffer larger than the last-level cache before each step, so no step
    # finds the tensors left in cache by the step timed before it (as after a backward).
    flush = torch.empty(FLUSH_BYTES // 4) if device == "cpu" and FLUSH_BYTES else None
    times: dict[str, list[float]] = {name: [] for name in steps}
    rng = random.Random(0)
    with torch.no_grad():
        for r in range(warmup + repeats):
            order = list(steps.items())
            rng.shuffle(order)  # no candidate always follows the same one
            for name, step in order:
                if flush is not None:
                    flush.fill_(float(r))
                sync()
                t0 = time.perf_counter()
                step()
                sync()
                if r >= warmup:
                    times[name].append(time.perf_counter() - t0)
    return {name: STATS[stat](ts) for name, ts in times.items()}


def run(device: str, configs: list[str], repeats: int, stat: str = "median") -> list[dict]:
    rows = []
    for text in configs:
        n, k = parse_config(text)
        try:
            params = make_tensors(n, k, device)
            medians = time_steps(candidates(params, device), device, repeats, stat=stat)
        except (RuntimeError, MemoryError) as exc:  # e.g. out of memory for 1e9 params
            print(f"# {device} {text}: skipped ({type(exc).__name__}: {str(exc)[:120]})")
            continue
        finally:
            params = None
            if device == "cuda":
                torch.cuda.empty_cache()
        for name, sec in medians.items():
            rows.append(
                dict(device=device, config=text, name=name, ms=sec * 1e3,
                     vs_sgd=sec / medians[BASE], vs_clip=sec / medians[CLIP])
            )  # fmt: skip
    return rows


def markdown(rows: list[dict], stat: str = "median") -> str:
    lines = [
        f"| device | params x tensors | optimizer | {stat} ms | vs SGD(foreach) | vs clip+SGD |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['device']} | {r['config']} | {r['name']} | {r['ms']:.3f} | "
            f"{r['vs_sgd']:.2f}x | {r['vs_clip']:.2f}x |"
        )
    return "\n".join(lines)


def goal_lines(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        goal = GOALS.get((r["device"], r["config"]))
        if r["name"] != "SuperLevelSGD" or goal is None:
            continue
        sgd_goal, clip_goal = goal
        ok = r["vs_sgd"] <= sgd_goal and (clip_goal is None or r["vs_clip"] <= clip_goal)
        clip_text = f", vs clip+SGD {r['vs_clip']:.2f}x (goal <= {clip_goal})" if clip_goal else ""
        out.append(
            f"goal {r['device']} {r['config']}: vs SGD(foreach) {r['vs_sgd']:.2f}x "
            f"(goal <= {sgd_goal}){clip_text}: {'met' if ok else 'NOT met'}"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--configs", default=None, help="comma list of NxK (default per device)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--stat", choices=sorted(STATS), default="median")
    parser.add_argument(
        "--flush-mb", type=int, default=128, help="CPU cache flush before each step (0: off)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    global FLUSH_BYTES
    FLUSH_BYTES = args.flush_mb << 20
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            print("CUDA is not available", file=sys.stderr)
            return 1
        devices.remove("cuda")
    rows = []
    for device in devices:
        default = CPU_CONFIGS if device == "cpu" else CUDA_CONFIGS
        configs = (args.configs or default).split(",")
        rows += run(device, configs, args.repeats, args.stat)
    name = torch.cuda.get_device_name() if "cuda" in devices else "-"
    print(f"# torch {torch.__version__}, CPU threads {args.threads}, CUDA device: {name}, "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(markdown(rows, args.stat))
    for line in goal_lines(rows):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
