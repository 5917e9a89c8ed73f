"""torch.compile of SuperLevelSGD.step under an lr schedule: float lr vs tensor lr.

Usage::

    python benchmarks/compile_lr.py                  # CPU, 1 thread, 12 steps: print
    python benchmarks/compile_lr.py --write          # ... and regenerate the docs table
    python benchmarks/compile_lr.py --device cuda --steps 20

A schedule changes ``group["lr"]`` every step (a linear warmup here). Four runs, each
after ``torch._dynamo.reset()``: a float and a 0-dim tensor ``lr``, with
``torch._dynamo.config.specialize_float`` off (torch 2.13's default: a float that changes
becomes a graph input) and on (older torch's default: every new value is a recompile,
until the recompile limit, ``torch._dynamo.config.recompile_limit``, sends the frame to
eager). Printed per run: the wall time of the loop (compilation included) and its ratio
to the tensor-lr run of the same setting (same process), the graphs compiled (dynamo's
``unique_graphs``), the steps during which something compiled (the graph count rose),
and the largest difference of the params from an eager run's.

Then ``fullgraph=True`` is tried with and without a scheduler attached: an lr scheduler
wraps ``optimizer.step`` in a function of ``torch/optim/lr_scheduler.py``, which dynamo is
told not to trace, so a compiled function that calls ``opt.step()`` has a graph break
there (an error under ``fullgraph=True``).

An unreported warm-up run comes first (the first compilation in a process pays cold
caches). ``--write`` puts the table between the ``compile_lr`` markers of
docs/integrations.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from superlevel.bench.run.identity import cpu_name  # noqa: E402
from superlevel.blocks import replace_block  # noqa: E402
from superlevel.optim import SuperLevelSGD  # noqa: E402

DOC = ROOT / "docs" / "integrations.md"
DOC_BEGIN = "<!-- compile_lr: written by benchmarks/compile_lr.py --write -->"
DOC_END = "<!-- /compile_lr -->"


def _setup(device: str, tensor_lr: bool, scheduler: bool = True):
    torch.manual_seed(0)
    params = [torch.randn(256, 256, device=device, requires_grad=True) for _ in range(4)]
    grads = [torch.randn_like(p) for p in params]
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    lr = torch.tensor(0.1, device=device) if tensor_lr else 0.1
    opt = SuperLevelSGD(params, lr=lr, decay=1e-3, foreach=True)
    sched = (
        torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100))
        if scheduler
        else None
    )
    return params, opt, sched


def _eager(device: str, steps: int) -> list[torch.Tensor]:
    params, opt, sched = _setup(device, False)
    for _ in range(steps):
        opt.step()
        sched.step()
    return [p.detach() for p in params]


def run(device: str, tensor_lr: bool, steps: int, want: list[torch.Tensor]) -> dict:
    """Loop ``steps`` compiled steps under the warmup schedule; time, graphs, equality."""
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()  # global: would add up across runs
    params, opt, sched = _setup(device, tensor_lr)

    @torch.compile
    def step() -> None:
        opt.step()

    compiled_in = 0
    start = time.perf_counter()
    for _ in range(steps):
        before = counters["stats"]["unique_graphs"]
        step()
        sched.step()
        compiled_in += counters["stats"]["unique_graphs"] > before
    if device == "cuda":
        torch.cuda.synchronize()
    total = time.perf_counter() - start
    diff = max((p.detach() - q).abs().max().item() for p, q in zip(params, want, strict=True))
    return {
        "total_s": total,
        "graphs": int(counters["stats"]["unique_graphs"]),
        "compiled_in": compiled_in,
        "diff": diff,
    }


def fullgraph(device: str, scheduler: bool) -> str:
    """``"compiles"``, or the error of ``torch.compile(fullgraph=True)`` of ``opt.step()``."""
    torch._dynamo.reset()
    _, opt, _ = _setup(device, True, scheduler)

    @torch.compile(fullgraph=True)
    def step() -> None:
        opt.step()

    try:
        step()
    except Exception as exc:  # dynamo's Unsupported, whatever its module
        first = str(exc).strip().splitlines()[0]
        return f"fails: `{type(exc).__name__}: {first}`"
    return "compiles"


def table(device: str, steps: int, threads: int, rows: dict, graphs: dict, load: tuple) -> str:
    hardware = torch.cuda.get_device_name() if device == "cuda" else cpu_name()
    lines = [
        f"Measured by `python benchmarks/compile_lr.py --write`: four 256x256 float32 tensors, "
        f"{steps} steps of a warmup schedule (`LambdaLR`), `torch.manual_seed(0)`, {device} "
        f"({hardware}, {os.cpu_count()} CPUs, {threads} torch thread(s)), torch "
        f"{torch.__version__}; load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} "
        f"(1/5/15 min) before the runs. Wall times include compilation and vary with load; "
        f"the graph counts do not.",
        "",
        "| `specialize_float` | `lr` | loop wall time | vs tensor lr | graphs compiled "
        "| steps that compiled | largest difference from eager |",
        "|---|---|---|---|---|---|---|",
    ]
    for (spec, kind), r in rows.items():
        base = rows[(spec, "0-dim tensor")]["total_s"]
        name = f"`{spec}`" + (" (torch 2.13's default)" if spec is False else " (older torch)")
        lines.append(
            f"| {name} | {kind} | {r['total_s']:.2f} s | {r['total_s'] / base:.2f}x | "
            f"{r['graphs']} | {r['compiled_in']} of {steps} | {r['diff']:.1e} |"
        )
    lines += [
        "",
        "`torch.compile(fullgraph=True)` of a function calling `opt.step()`:",
        "",
        f"- no lr scheduler attached: {graphs[False]};",
        f"- an lr scheduler attached: {graphs[True]}.",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--write", action="store_true", help=f"write the table into {DOC.name}")
    args = ap.parse_args()
    if args.steps < 2:
        ap.error(f"--steps must be >= 2, got {args.steps}")
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    want = _eager(args.device, args.steps)
    run(args.device, True, 2, _eager(args.device, 2))  # warm-up, not reported
    rows = {}
    for spec in (False, True):
        torch._dynamo.config.specialize_float = spec
        for kind in ("float", "0-dim tensor"):
            rows[(spec, kind)] = run(args.device, kind != "float", args.steps, want)
    torch._dynamo.config.specialize_float = False
    graphs = {sched: fullgraph(args.device, sched) for sched in (False, True)}
    text = table(args.device, args.steps, args.threads, rows, graphs, load)
    print(text)
    if args.write:
        replace_block(DOC, DOC_BEGIN, DOC_END, text)
        print(f"-> {DOC.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
