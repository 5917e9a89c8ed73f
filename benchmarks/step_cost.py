"""Step cost of SuperLevelSGD against torch's optimizers, interleaved in one process.

Usage::

    python benchmarks/step_cost.py                      # CPU (2 threads), CUDA if present
    python benchmarks/step_cost.py --device cpu --threads 2 --configs 8e6x64 --runs 5
    python benchmarks/step_cost.py --device cpu --runs 5 --write   # regenerate the docs
    python benchmarks/step_cost.py --device cuda --configs 1e7x100,1e8x200,1e9x400
    python benchmarks/step_cost.py --device cpu --sections train --configs 8e6x64 --mlp ""

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

**Training steps** (``--sections train``): backward + step, where the gradients come
from a real backward, so :func:`~superlevel.optim.norm_in_backward` can take the norm
while backward writes them. Each candidate trains its own copy of the model: an ``NxK``
config is K tensors ``p_i`` of N/K floats with the loss ``sum_i <p_i, w_i>`` (a backward
that does nothing but write each gradient ``w_i``: the hooks' worst case), ``--mlp``
a ReLU MLP (``784-1024-1024-10x128``: layer widths, then the batch size) on random data
with cross-entropy. Each round times, per candidate in a shuffled order after a cache
flush, ``zero_grad`` + forward + backward, then the step; the table gives both, their
sum and the ratios to ``SGD(foreach)``'s and ``clip+SGD``'s, per run, median over runs.
The hooked candidate must take every norm from the hooks (checked). The mode's floor,
``SGD(foreach)+read hooks``, is SGD with a bare hook per param that only reads the new
gradient (``_foreach_powsum``): the least a norm taken during backward can cost here.
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
from typing import Any, NamedTuple

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from superlevel.bench.run.identity import cpu_name  # noqa: E402
from superlevel.blocks import replace_block  # noqa: E402
from superlevel.optim import SuperLevelSGD, norm_in_backward  # noqa: E402

CPU_CONFIGS = "1e6x8,1e6x256,8e6x64,3.2e7x64"
CUDA_CONFIGS = "1e7x100,1e8x200,1e9x400"
BASE, CLIP = "SGD(foreach)", "clip+SGD(foreach)"
GOALS = {  # (device, config): (max ratio to SGD(foreach), max ratio to clip+SGD)
    ("cpu", "8e6x64"): (1.5, 0.6),
    ("cuda", "1e9x400"): (1.3, None),
    ("cuda", "1e7x100"): (2.0, None),
}
# Training steps (backward + step): (max step ratio, max backward+step ratio) to SGD(foreach).
TRAIN_GOALS = {("cpu", "8e6x64"): (1.15, 1.05), ("cuda", "1e9x400"): (1.15, 1.05)}
HOOKED = "SuperLevelSGD+norm_in_backward"
HOOK_FLOOR = "SGD(foreach)+read hooks"
MLP_DEFAULT = "784-1024-1024-10x128"
READ_DOT, READ_POWSUM = "read pass (dot)", "read pass (powsum)"
ROOT = Path(__file__).resolve().parents[1]
LOADS: list[float] = []  # the 1-minute load average after each run of the current section


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
            per_run = []
            for _ in range(runs):
                per_run.append(time_steps(steps, device, repeats, stat=stat))
                LOADS.append(os.getloadavg()[0])
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


# ---------------------------------------------------------------- training steps
def parse_mlp(text: str) -> tuple[list[int], int]:
    """``"784-1024-1024-10x128"`` -> ([784, 1024, 1024, 10], 128)."""
    try:
        widths, batch = text.lower().split("x")
        sizes = [int(w) for w in widths.split("-")]
        if len(sizes) < 2 or min(sizes) < 1 or int(batch) < 1:
            raise ValueError
        return sizes, int(batch)
    except ValueError as exc:
        raise ValueError(f"--mlp must look like 784-1024-1024-10x128, got {text!r}") from exc


def _synthetic(n: int, k: int, device: str, seed: int) -> tuple[list, Callable[[], Tensor]]:
    """K params of N/K floats and ``loss = sum_i <p_i, w_i>``: backward writes g_i = w_i."""
    gen = torch.Generator(device=device).manual_seed(seed)
    size = max(n // k, 1)
    params = [torch.nn.Parameter(torch.randn(size, device=device, generator=gen)) for _ in range(k)]
    weights = [torch.randn(size, device=device, generator=gen) * 1e-3 for _ in range(k)]

    def loss() -> Tensor:
        return torch.stack([torch.dot(p, w) for p, w in zip(params, weights, strict=True)]).sum()

    return params, loss


def _mlp(text: str, device: str, seed: int) -> tuple[list, Callable[[], Tensor]]:
    """A ReLU MLP on a fixed random batch with cross-entropy."""
    sizes, batch = parse_mlp(text)
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1]).to(device)
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    x = torch.randn(batch, sizes[0], device=device, generator=gen)
    y = torch.randint(0, sizes[-1], (batch,), device=device, generator=gen)

    def loss() -> Tensor:
        return torch.nn.functional.cross_entropy(model(x), y)

    return list(model.parameters()), loss


def _read_grad(p: Tensor) -> None:
    """The mode's floor: a hook that only reads the new gradient (what a share costs)."""
    torch._foreach_powsum([p.grad], 2)


class Candidate(NamedTuple):
    """One training-step candidate on its own copy of the model."""

    backward: Callable[[], None]  # zero_grad + forward + backward
    step: Callable[[], None]
    optimizer: torch.optim.Optimizer
    handle: Any  # norm_in_backward's handle, or None


def training_candidates(config: str, device: str) -> dict[str, Candidate]:
    """The candidates, each on its own copy of the model (the hooks must not fire for the
    others)."""
    build = (lambda s: _mlp(config[4:], device, s)) if config.startswith("mlp:") else None
    if build is None:
        n, k = parse_config(config)
        build = lambda s: _synthetic(n, k, device, s)  # noqa: E731
    out: dict[str, Candidate] = {}
    kinds = (BASE, CLIP, "SuperLevelSGD", HOOKED, HOOK_FLOOR)
    for name in kinds:
        params, loss = build(0)
        handle = None
        opt: torch.optim.Optimizer
        if name in (BASE, CLIP, HOOK_FLOOR):
            opt = torch.optim.SGD(params, lr=1e-3, foreach=True)
        else:
            opt = SuperLevelSGD(params, lr=1e-3, decay=1e-4)
        if name == HOOK_FLOOR:
            for p in params:
                p.register_post_accumulate_grad_hook(_read_grad)
        if name == HOOKED:
            handle = norm_in_backward(opt)
        step = opt.step
        if name == CLIP:

            def step(params=params, opt=opt) -> None:
                torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
                opt.step()

        def backward(opt=opt, loss=loss) -> None:
            opt.zero_grad()
            loss().backward()

        out[name] = Candidate(backward, step, opt, handle)
    return out


def time_training(
    cands: dict[str, Candidate],
    device: str,
    repeats: int,
    warmup: int = 3,
    stat: str = "median",
) -> dict[str, dict[str, float]]:
    """Seconds of (zero_grad + forward + backward), step and their sum, round robin."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    flush = torch.empty(FLUSH_BYTES // 4) if device == "cpu" and FLUSH_BYTES else None
    times = {name: {"backward": [], "step": [], "total": []} for name in cands}
    rng = random.Random(0)
    for r in range(warmup + repeats):
        order = list(cands.items())
        rng.shuffle(order)
        for name, (backward, step, _, _) in order:
            if flush is not None:
                flush.fill_(float(r))
            sync()
            t0 = time.perf_counter()
            backward()
            sync()
            t1 = time.perf_counter()
            with torch.no_grad():
                step()
            sync()
            t2 = time.perf_counter()
            if r >= warmup:
                for key, t in (("backward", t1 - t0), ("step", t2 - t1), ("total", t2 - t0)):
                    times[name][key].append(t)
    for name, (_, _, _, handle) in cands.items():
        if handle is not None and handle.fallbacks:
            raise RuntimeError(f"{name}: {handle.fallbacks} steps fell back ({handle.reasons})")
    return {name: {k: STATS[stat](ts) for k, ts in parts.items()} for name, parts in times.items()}


def run_training(
    device: str, configs: list[str], repeats: int, stat: str = "median", runs: int = 1
) -> list[dict]:
    """One row per (config, candidate): times of the median run, ratios over the runs."""
    rows = []
    for config in configs:
        try:
            cands = training_candidates(config, device)
            per_run = []
            for _ in range(runs):
                per_run.append(time_training(cands, device, repeats, stat=stat))
                LOADS.append(os.getloadavg()[0])
        except (RuntimeError, MemoryError) as exc:
            if "fell back" in str(exc):
                raise
            print(f"# {device} {config}: skipped ({type(exc).__name__}: {str(exc)[:120]})")
            continue
        finally:
            cands = None
            if device == "cuda":
                torch.cuda.empty_cache()
        for name in per_run[0]:
            row = dict(device=device, config=config, name=name, runs=runs)
            for part in ("backward", "step", "total"):
                row[f"{part}_ms"] = statistics.median(t[name][part] for t in per_run) * 1e3
            for key, base, part in (
                ("step_vs_sgd", BASE, "step"),
                ("step_vs_clip", CLIP, "step"),
                ("vs_sgd", BASE, "total"),
                ("vs_clip", CLIP, "total"),
            ):
                rs = sorted(t[name][part] / t[base][part] for t in per_run)
                row.update({key: statistics.median(rs), f"{key}_lo": rs[0], f"{key}_hi": rs[-1]})
            rows.append(row)
    return rows


def training_markdown(rows: list[dict]) -> str:
    lines = [
        "| model | optimizer | zero_grad+fwd+bwd ms | step ms | total ms "
        "| step vs SGD(foreach) | step vs clip+SGD | total vs SGD(foreach) | total vs clip+SGD |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        model = _model_name(r["config"])
        lines.append(
            f"| {model} | {r['name']} | {r['backward_ms']:.3f} | {r['step_ms']:.3f} | "
            f"{r['total_ms']:.3f} | {_ratio(r, 'step_vs_sgd')} | {_ratio(r, 'step_vs_clip')} | "
            f"{_ratio(r, 'vs_sgd')} | {_ratio(r, 'vs_clip')} |"
        )
    return "\n".join(lines)


def _model_name(config: str) -> str:
    if not config.startswith("mlp:"):
        return config.replace("x", " x ", 1)
    sizes, batch = parse_mlp(config[4:])
    return f"MLP {'-'.join(map(str, sizes))}, batch {batch}"


def hook_balance(rows: list[dict]) -> list[str]:
    """Per config: what the hooks cost in backward against what they save in the step."""
    by = {(r["config"], r["name"]): r for r in rows}
    out = []
    for config in dict.fromkeys(r["config"] for r in rows):
        plain, hooked = by.get((config, "SuperLevelSGD")), by.get((config, HOOKED))
        if plain is None or hooked is None:
            continue
        cost = hooked["backward_ms"] - plain["backward_ms"]
        saved = plain["step_ms"] - hooked["step_ms"]
        verdict = (
            f"the hooks cost {cost - saved:.3f} ms more in backward than they save in the step"
            if cost > saved
            else f"a net gain of {saved - cost:.3f} ms per training step"
        )
        floor, sgd = by.get((config, HOOK_FLOOR)), by.get((config, BASE))
        floor_text = (
            f"; floor (SGD with a bare read hook) {floor['vs_sgd']:.2f}x, so "
            f"{hooked['vs_sgd'] / floor['vs_sgd']:.2f}x the floor"
            if floor
            else ""
        )
        if floor and sgd:
            # What one read of every gradient costs in each place: the premise of the mode.
            in_backward = floor["backward_ms"] - sgd["backward_ms"]
            in_step, left = (plain["step_ms"] - sgd["step_ms"], hooked["step_ms"] - sgd["step_ms"])
            floor_text += (
                f"; reading every gradient once costs {in_backward:.3f} ms in backward (bare "
                f"hooks) against {in_step:.3f} ms in the step (SuperLevelSGD's step over "
                f"SGD's; {left:.3f} ms of it left with the hooks)"
            )
        out.append(
            f"{_model_name(config)}: with the hooks zero_grad+fwd+bwd {cost:+.3f} ms, step "
            f"{-saved:+.3f} ms: {verdict}; backward + step {hooked['vs_sgd']:.2f}x SGD's "
            f"with hooks, {plain['vs_sgd']:.2f}x without{floor_text}"
        )
    return out


def training_goal_lines(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        goal = TRAIN_GOALS.get((r["device"], r["config"]))
        if r["name"] != HOOKED or goal is None:
            continue
        step_goal, total_goal = goal
        ok = r["step_vs_sgd"] <= step_goal and r["vs_sgd"] <= total_goal
        out.append(
            f"goal {r['device']} {r['config']} with norm_in_backward: step "
            f"{r['step_vs_sgd']:.2f}x SGD(foreach)'s (goal <= {step_goal}), backward + step "
            f"{r['vs_sgd']:.2f}x SGD's (goal <= {total_goal}): {'met' if ok else 'NOT met'}"
        )
    return out


def write_block(path: Path, name: str, text: str) -> None:
    """Replace the text between ``<!-- step_cost:NAME -->`` and ``<!-- /step_cost:NAME -->``.

    The file is written only if both markers are there (a failed write leaves it intact).
    """
    begin, end = f"<!-- step_cost:{name} -->", f"<!-- /step_cost:{name} -->"
    try:
        replace_block(path, begin, end, text)
    except ValueError as exc:
        raise SystemExit(f"{exc}; nothing written") from exc


def header(
    threads: int, runs: int, repeats: int, stat: str, before: float, during: list[float]
) -> str:
    cpu = cpu_name()
    cores = os.cpu_count() or 1
    after = f"{min(during):.1f}-{max(during):.1f}" if during else "-"
    return (
        f"torch {torch.__version__}, {cpu}, {cores} cores, {threads} threads; "
        f"{runs} runs x {repeats} interleaved steps per candidate ({stat} per run, median "
        f"ratio over runs, range in brackets); load average {before:.1f} before, {after} "
        f"after each run{busy_note(during, threads, cores)}"
    )


def busy_note(during: list[float], threads: int, cores: int) -> str:
    """Whether other jobs shared the cores, from the 1-minute load after each run.

    Each sample includes this benchmark's own ``threads``; other jobs' load is about
    ``sample - threads``. More of it than the cores the benchmark leaves free (plus 0.5
    of slack) took time slices from the steps. (The load before is not used: it is the
    minute before the run, whoever ran then.)
    """
    others = max((load - threads for load in during), default=0.0)
    if others > max(cores - threads, 0) + 0.5:
        return (
            f" (other jobs were running, load up to ~{others:.1f} besides this one: read with care)"
        )
    return " (a quiet machine)"


def measure(section: str, devices: list[str], args: argparse.Namespace) -> list[dict]:
    """The rows of one section ("step" or "train") on every device."""
    rows = []
    for device in devices:
        configs = (args.configs or (CPU_CONFIGS if device == "cpu" else CUDA_CONFIGS)).split(",")
        if section == "step":
            rows += run(device, configs, args.repeats, args.stat, args.runs)
        else:
            configs += [f"mlp:{args.mlp}"] if args.mlp else []
            rows += run_training(device, configs, args.repeats, args.stat, args.runs)
    return rows


def report(section: str, rows: list[dict]) -> tuple[str, list[str]]:
    """A section's table (the roofline for "step") and its summary lines."""
    if section == "step":
        return roofline(rows), goal_lines(rows)
    return training_markdown(rows), hook_balance(rows) + training_goal_lines(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--configs", default=None, help="comma list of NxK (default per device)")
    parser.add_argument(
        "--sections", default="step,train", help="step (step alone, roofline), train, or both"
    )
    parser.add_argument(
        "--mlp", default=MLP_DEFAULT, help='training-step MLP, widths x batch ("": none)'
    )
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--runs", type=int, default=1, help="independent interleaved runs")
    parser.add_argument("--stat", choices=sorted(STATS), default="median")
    parser.add_argument(
        "--flush-mb", type=int, default=128, help="CPU cache flush before each step (0: off)"
    )
    parser.add_argument(
        "--write", action="store_true", help="write the CPU tables into the docs and README"
    )
    args = parser.parse_args(argv)
    sections = [s for s in ("step", "train") if s in args.sections.split(",")]
    if not sections or set(args.sections.split(",")) - set(sections):
        parser.error(f"--sections takes step, train or step,train; got {args.sections!r}")
    if args.mlp:
        parse_mlp(args.mlp)  # a bad spec fails before anything is measured
    torch.set_num_threads(args.threads)
    global FLUSH_BYTES
    FLUSH_BYTES = args.flush_mb << 20
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            print("CUDA is not available", file=sys.stderr)
            return 1
        devices.remove("cuda")
    gpu = torch.cuda.get_device_name() if "cuda" in devices else "-"
    cmd = "python benchmarks/step_cost.py " + " ".join(argv if argv is not None else sys.argv[1:])
    blocks: dict[str, str] = {}
    for section in sections:
        load0 = os.getloadavg()[0]
        LOADS.clear()
        rows = measure(section, devices, args)
        head = header(args.threads, args.runs, args.repeats, args.stat, load0, LOADS)
        print(f"\n# {section}: {head}; CUDA: {gpu}")
        if section == "step":
            print(markdown(rows, args.stat))
        for device in devices:
            table, lines = report(section, [r for r in rows if r["device"] == device])
            print(f"\n{device}:\n{table}\n" + "\n".join(lines))
        cpu = [r for r in rows if r["device"] == "cpu"]
        if args.write and cpu:
            table, lines = report(section, cpu)
            name = "cpu" if section == "step" else "cpu-train"
            # The median tables go to both files; another statistic gets its own docs block.
            name = name if args.stat == "median" else f"{name}-{args.stat}"
            blocks[name] = f"`{cmd}`: {head}.\n\n{table}\n\n" + "\n".join(f"- {x}" for x in lines)
    if args.write and not blocks:
        print("--write needs CPU rows", file=sys.stderr)
        return 1
    for name, text in blocks.items():
        write_block(ROOT / "docs" / "optimizer.md", name, text)
        if args.stat == "median":
            write_block(ROOT / "README.md", name, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
