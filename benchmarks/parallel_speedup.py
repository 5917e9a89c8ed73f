"""Wall-clock speedup of ``--workers N`` over ``--workers 1`` on the quick suite's runs.

Both passes run in this process tree, one after the other, into fresh databases: the
suite's default runs (every task x optimizer x seed) in this process, then the same runs
in a pool of ``N`` worker processes (its start-up included). The two stores must hold the
same numbers run for run (checked). Writes a Markdown table with the machine, its load
average before and after each pass, and the ratio, and the one-line figure into
``docs/benchmark.md`` (between its ``parallel_speedup`` markers).

A control runs first: a pure CPU-bound loop for a few seconds in one process, then in
``N`` processes at once. Its ratio of work done is what this machine gives ``N``
processes over one *right now*; on a quiet ``N``-core machine it is about ``N``. When other
jobs load the machine it can be near 1, and no executor can beat it.

    python benchmarks/parallel_speedup.py                    # quick suite, 2 workers
    python benchmarks/parallel_speedup.py --tasks quadratic,digits_mlp --out -
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from superlevel.bench.executors import InProcessExecutor, LocalPoolExecutor
from superlevel.bench.run import environment, make_config, run_many
from superlevel.bench.store import Store
from superlevel.bench.suites import get_suite
from superlevel.blocks import replace_block

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "parallel_speedup.md"
DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmark.md"
DOC_BEGIN = "<!-- parallel_speedup: written by benchmarks/parallel_speedup.py -->"
DOC_END = "<!-- /parallel_speedup -->"


def _numbers(store: Store) -> dict:
    return {
        r["run_id"]: (
            r["status"],
            r["steps"],
            r["test_metric"],
            r["val_metric"],
            r["train_loss"],
            [
                (e["epoch"], e["split"], e["loss"], e["metric"])
                for e in store.epoch_metrics(r["run_id"])
            ],
            [(s["step"], s["loss"], s["grad_norm"]) for s in store.step_metrics(r["run_id"])],
        )
        for r in store.runs()
    }


def _differences(a: dict, b: dict) -> list[str]:
    """One line per run whose numbers differ between the two stores: what differs first."""
    fields = ("status", "steps", "test_metric", "val_metric", "train_loss", "epochs", "steps_log")
    out = []
    for run_id in sorted(set(a) | set(b)):
        x, y = a.get(run_id), b.get(run_id)
        if x == y:
            continue
        if x is None or y is None:
            out.append(
                f"{run_id}: only in {'the pool pass' if x is None else 'the in-process pass'}"
            )
            continue
        first = next(f for f, u, v in zip(fields, x, y, strict=True) if u != v)
        out.append(f"{run_id}: {first} differs")
    return out


def _spin(seconds: float) -> int:
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(10_000):
            n += 1
    return n


def _capacity(workers: int, seconds: float = 5.0) -> float:
    """Work of ``workers`` spinning processes over one: the machine's parallel capacity now."""
    one = _spin(seconds)
    with mp.get_context("spawn").Pool(workers) as pool:
        many = sum(pool.map(_spin, [seconds] * workers))
    return many / one


def _pass(configs: list, executor, folder: Path, name: str) -> tuple[float, tuple, tuple, dict]:
    load_before = os.getloadavg()
    start = time.perf_counter()
    with Store(folder / f"{name}.db") as store, executor as ex:
        outs = run_many(configs, store, executor=ex, skip_missing_data=True)
        seconds = time.perf_counter() - start
        numbers = _numbers(store)
    done = sum(o.status in ("finished", "diverged") for o in outs)
    print(f"{name}: {done} runs in {seconds:.1f} s", file=sys.stderr)
    return seconds, load_before, os.getloadavg(), numbers


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--suite", default="quick")
    p.add_argument("--tasks", default=None, help="comma-separated subset of the suite's tasks")
    p.add_argument("--seeds", type=int, default=None, help="default: the suite's")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="Markdown file, or - for stdout")
    args = p.parse_args()

    torch.set_num_threads(1)  # what `bench run` does by default, in the workers too
    suite = get_suite(args.suite)
    tasks = args.tasks.split(",") if args.tasks else list(suite.tasks)
    seeds = args.seeds or suite.seeds
    configs = [
        make_config(t, o, s, budget=suite.budget)
        for t in tasks
        for o in suite.optimizers
        for s in range(1, seeds + 1)
    ]
    capacity = _capacity(args.workers)
    print(f"control: {args.workers} spinning processes do {capacity:.2f}x the work of one",
          file=sys.stderr)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        one = _pass(configs, InProcessExecutor(), folder, "workers-1")
        many = _pass(configs, LocalPoolExecutor(args.workers), folder, f"workers-{args.workers}")
    differ = _differences(one[3], many[3])
    if differ:
        print(f"error: the two passes gave different numbers for {len(differ)} runs:",
              file=sys.stderr)  # fmt: skip
        for line in differ[:20]:
            print(f"  {line}", file=sys.stderr)
        return 1
    env = environment(torch.device("cpu"))
    ratio = one[0] / many[0]

    def load(x: tuple) -> str:
        return " / ".join(f"{v:.1f}" for v in x)

    lines = [
        "# Parallel speedup (written by `benchmarks/parallel_speedup.py`)",
        "",
        f"{len(configs)} runs: suite `{suite.name}` default runs, tasks {', '.join(tasks)}, "
        f"{len(suite.optimizers)} optimizers, seeds 1..{seeds}, budget `{suite.budget}`, "
        "1 torch thread per run. Same numbers in both passes, run for run (checked).",
        "",
        f"Machine: {env['device_name']}, {os.cpu_count()} CPUs, {platform.platform(terse=True)}, "
        f"torch {env['torch']}, Python {env['python']}, git {env['git_revision']}.",
        "",
        "| pass | wall s | load average (1/5/15 min) before | after |",
        "|---|---|---|---|",
        f"| workers 1 (in process) | {one[0]:.1f} | {load(one[1])} | {load(one[2])} |",
        f"| workers {args.workers} (worker pool) | {many[0]:.1f} | {load(many[1])} | "
        f"{load(many[2])} |",
        "",
        f"**Speedup: {ratio:.2f}x** with {args.workers} workers. Control (measured just "
        f"before): {args.workers} processes running a pure CPU loop did {capacity:.2f}x the "
        "work of one, the most any executor could get from this machine at that time.",
        "",
        "A load average above the CPU count means other processes shared the cores during "
        "the measurement; the ratio then depends on how the scheduler shared them (on a "
        "quiet machine, rerun the script for the figure to quote).",
        "",
    ]
    text = "\n".join(lines)
    if args.out == "-":
        print(text)
        return 0
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    busy = max(one[1][0], one[2][0], many[1][0], many[2][0]) > (os.cpu_count() or 1)
    summary = (
        f"**{ratio:.2f}x** with {args.workers} workers on {len(configs)} runs of suite "
        f"`{suite.name}` ({one[0]:.1f} s against {many[0]:.1f} s; control: "
        f"{args.workers} CPU-bound processes did {capacity:.2f}x the work of one), "
        f"{env['device_name']}, {os.cpu_count()} CPUs, "
        + ("other jobs were running (load above the CPU count)" if busy else "a quiet machine")
        + f"; details in `{Path(args.out).name}`."
    )
    replace_block(DOC, DOC_BEGIN, DOC_END, summary)
    print(f"speedup {ratio:.2f}x -> {args.out} and {DOC.name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
