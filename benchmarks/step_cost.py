"""Step cost of SuperLevelSGD against torch's optimizers, interleaved in one process.

Usage::

    python benchmarks/step_cost.py                      # CPU (2 threads), CUDA if present
    python benchmarks/step_cost.py --device cpu --threads 2 --configs 8e6x64 --runs 5
    python benchmarks/step_cost.py --device cpu --runs 5 --write   # regenerate the docs
    python benchmarks/step_cost.py --device cuda --configs 1e7x100,1e8x200,1e9x400

Each config ``NxK`` is N float32 parameters split into K equal tensors, with random
gradients. Every candidate steps the same tensors in turn (round robin in a shuffled order,
on CPU after a cache flush, so drifting load and cache state hit all alike); the table
gives the time per step (median by default) and ratios to
``SGD(foreach)`` and to ``clip_grad_norm_ + SGD(foreach)``. Memory traffic per step:
SGD 3N floats, ours 4N (one extra read of the gradients for the global norm),
clip + SGD 6N.

Roofline columns, measured in the same rounds: a pure **read pass** over the gradients
(the faster of BLAS ``dot`` and ``_foreach_powsum`` over every gradient, no writes) and
SGD's update pass; ``floor = (read + SGD) / SGD`` is what "read the grads once for the
norm, then update like SGD" costs on this machine (1.33x if both ran at the same
bandwidth). ``--runs R`` repeats the whole interleaved measurement R times and reports
the median ratio over the runs with its range; ``--write`` puts the CPU table into
``docs/optimizer.md`` and ``README.md`` (between their ``step_cost`` markers; with
``--stat min`` only into the docs' ``cpu-min`` block).
"""

from __future__ import annotations

import argparse
import os
import random
import re
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
    ("cpu", "8e6x64"): (1.5, 0.6),
    ("cuda", "1e9x400"): (1.3, None),
    ("cuda", "1e7x100"): (2.0, None),
}
READ_DOT, READ_POWSUM = "read pass (dot)", "read pass (powsum)"
ROOT = Path(__file__).resolve().parents[1]


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
    grads = [p.grad for p in params]
    # Roofline: one pass that only reads the gradients (the norm's share of our step).
    out[READ_DOT] = lambda: [torch.dot(g.view(-1), g.view(-1)) for g in grads]
    out[READ_POWSUM] = lambda: torch._foreach_norm(grads, 2)
    if hasattr(torch, "_foreach_powsum"):
        out[READ_POWSUM] = lambda: torch._foreach_powsum(grads, 2)
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


def run(
    device: str, configs: list[str], repeats: int, stat: str = "median", runs: int = 1
) -> list[dict]:
    """One row per (config, candidate): time of the median run and ratios over the runs.

    Each of ``runs`` runs is a full interleaved measurement; ``vs_sgd``/``vs_clip`` are
    the median over runs of that run's ratio, ``*_lo``/``*_hi`` their range.
    """
    rows = []
    for text in configs:
        n, k = parse_config(text)
        try:
            params = make_tensors(n, k, device)
            steps = candidates(params, device)
            per_run = [time_steps(steps, device, repeats, stat=stat) for _ in range(runs)]
        except (RuntimeError, MemoryError) as exc:  # e.g. out of memory for 1e9 params
            print(f"# {device} {text}: skipped ({type(exc).__name__}: {str(exc)[:120]})")
            continue
        finally:
            params = steps = None
            if device == "cuda":
                torch.cuda.empty_cache()
        for name in per_run[0]:
            ratios = {
                key: sorted(t[name] / t[base] for t in per_run)
                for key, base in (("vs_sgd", BASE), ("vs_clip", CLIP))
            }
            row = dict(device=device, config=text, name=name, runs=runs,
                       ms=statistics.median(t[name] for t in per_run) * 1e3)  # fmt: skip
            for key, rs in ratios.items():
                row.update({key: statistics.median(rs), f"{key}_lo": rs[0], f"{key}_hi": rs[-1]})
            rows.append(row)
    return rows


def _ratio(r: dict, key: str) -> str:
    if r["runs"] == 1:
        return f"{r[key]:.2f}x"
    return f"{r[key]:.2f}x ({r[key + '_lo']:.2f}-{r[key + '_hi']:.2f})"


def markdown(rows: list[dict], stat: str = "median") -> str:
    lines = [
        f"| device | params x tensors | optimizer | {stat} ms | vs SGD(foreach) | vs clip+SGD |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['device']} | {r['config']} | {r['name']} | {r['ms']:.3f} | "
            f"{_ratio(r, 'vs_sgd')} | {_ratio(r, 'vs_clip')} |"
        )
    return "\n".join(lines)


def roofline(rows: list[dict]) -> str:
    """Per config: SGD, the read pass, the floor (read + SGD) / SGD, and our step."""
    lines = [
        "| params x tensors | SGD(foreach) ms | read pass ms | floor (read+SGD)/SGD "
        "| SuperLevelSGD ms | vs SGD(foreach) | vs clip+SGD | vs floor |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by = {(r["config"], r["name"]): r for r in rows}
    for config in dict.fromkeys(r["config"] for r in rows):
        sgd, ours = by[(config, BASE)], by[(config, "SuperLevelSGD")]
        reads = [by[(config, n)] for n in (READ_DOT, READ_POWSUM) if (config, n) in by]
        read = min(reads, key=lambda r: r["vs_sgd"])
        floor = 1.0 + read["vs_sgd"]
        lines.append(
            f"| {config.replace('x', ' x ')} | {sgd['ms']:.3f} | {read['ms']:.3f} "
            f"({read['name'][11:-1]}) | {floor:.2f}x | {ours['ms']:.3f} | "
            f"{_ratio(ours, 'vs_sgd')} | {_ratio(ours, 'vs_clip')} | "
            f"{ours['vs_sgd'] / floor:.2f}x |"
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


def write_block(path: Path, name: str, text: str) -> None:
    """Replace the text between ``<!-- step_cost:NAME -->`` and ``<!-- /step_cost:NAME -->``.

    The file is written only if both markers are there (a failed write leaves it intact).
    """
    begin, end = f"<!-- step_cost:{name} -->", f"<!-- /step_cost:{name} -->"
    old = path.read_text()
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(old):
        raise SystemExit(f"{path}: markers {begin} ... {end} not found; nothing written")
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(pattern.sub(lambda _: f"{begin}\n{text}\n{end}", old))
    tmp.replace(path)


def header(threads: int, runs: int, repeats: int, stat: str, load: tuple[float, ...]) -> str:
    cpu = _cpu_name()
    return (
        f"torch {torch.__version__}, {cpu}, {os.cpu_count()} cores, {threads} threads; "
        f"{runs} runs x {repeats} interleaved steps per candidate ({stat} per run, median "
        f"ratio over runs, range in brackets); load average {load[0]:.1f} before / "
        f"{load[1]:.1f} after{_busy_note(load)}"
    )


def _busy_note(load: tuple[float, ...]) -> str:
    # A load above the core count means other jobs took time slices from the steps.
    busy = max(load) > (os.cpu_count() or 1)
    return " (other jobs were running: read with care)" if busy else " (a quiet machine)"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--configs", default=None, help="comma list of NxK (default per device)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--runs", type=int, default=1, help="independent interleaved runs")
    parser.add_argument("--stat", choices=sorted(STATS), default="median")
    parser.add_argument(
        "--flush-mb", type=int, default=128, help="CPU cache flush before each step (0: off)"
    )
    parser.add_argument(
        "--write", action="store_true", help="write the CPU table into the docs and README"
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
    load0 = os.getloadavg()[0]
    rows = []
    for device in devices:
        default = CPU_CONFIGS if device == "cpu" else CUDA_CONFIGS
        configs = (args.configs or default).split(",")
        rows += run(device, configs, args.repeats, args.stat, args.runs)
    load = (load0, os.getloadavg()[0])
    name = torch.cuda.get_device_name() if "cuda" in devices else "-"
    print(f"# {header(args.threads, args.runs, args.repeats, args.stat, load)}; CUDA: {name}")
    print(markdown(rows, args.stat))
    for device in devices:
        print(f"\n{device} roofline:\n" + roofline([r for r in rows if r["device"] == device]))
    for line in goal_lines(rows):
        print(line)
    if args.write:
        cpu = [r for r in rows if r["device"] == "cpu"]
        if not cpu:
            print("--write needs CPU rows", file=sys.stderr)
            return 1
        cmd = "python benchmarks/step_cost.py " + " ".join(argv or sys.argv[1:])
        note = f"`{cmd}`: {header(args.threads, args.runs, args.repeats, args.stat, load)}."
        text = f"{note}\n\n{roofline(cpu)}\n\n" + "\n".join(f"- {line}" for line in goal_lines(cpu))
        # The median table goes to both files; another statistic gets its own docs block.
        block = "cpu" if args.stat == "median" else f"cpu-{args.stat}"
        write_block(ROOT / "docs" / "optimizer.md", block, text)
        if block == "cpu":
            write_block(ROOT / "README.md", block, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
