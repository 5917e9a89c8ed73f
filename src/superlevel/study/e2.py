"""E2 — landscape topology: do trajectories stay in one level-set component, and why?

On 2-D landscapes with known disconnected sub-level components (Himmelblau below its
lowest saddle, three separated Gaussian wells, Rastrigin's lattice of local minima), run
four arms from the same seeded starts over a grid of step sizes ``a0``:

- ``GD``: ``x <- x - a0 g``;
- ``GD + decay``: ``x <- x - a0 exp(-beta t) g``;
- ``clip + GD + decay``: ``x <- x - a0 exp(-beta t) g min(1, 1 / ||g||)``: the same
  maximal step length ``a0 exp(-beta t)`` as the paper's rule (the control for the
  confound that the effect is the bounded step, not topology);
- ``SuperLevelSGD``: ``x <- x - a0 exp(-beta t) g / (1 + ||g||)``.

Per step: did it *jump* (its ends lie in different components of ``{f <= max(f(a),
f(b))}``, or of ``{f >= min(f(a), f(b))}`` for the super-level kind), and did the iterate
*switch* component of the sub-level set at a fixed reference level.

The starts are optimised together as the rows of one ``(starts, 2)`` tensor with each
arm's update written out per row (one ``SuperLevelSGD`` per start would cost ~50,000
optimizer calls per cell); the per-row updates are tested equal to ``SuperLevelSGD`` and to
``clip_grad_norm_`` + ``torch.optim.SGD``. These are not training runs of a harness task, so
their per-start results live in ``raw/E2.json`` (one entry per cell, written as each is
done, so the section resumes); the report reads only that file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from superlevel.bench.report.render import Block, Image, Paragraph, Table
from superlevel.bench.stats import compare_family
from superlevel.landscape import Grid, Himmelblau, Landscape, MultiWell, Rastrigin, grid_values
from superlevel.landscape.components import component_of, level_set_components
from superlevel.landscape.merge_forest import MergeForest, step_connected
from superlevel.study.common import (
    ClaimEvidence,
    Context,
    Tally,
    Verdict,
    fmt,
    new_figure,
    paired_tally,
    paragraphs,
    save_figure,
)

ID = "E2"
TITLE = "Landscape topology: component switches and barrier jumps against the step size"
ARMS = ("GD", "GD + decay", "clip + GD + decay", "SuperLevelSGD")
ESCAPE = 1e3  # |x| beyond this is divergence
SWITCH_ONSET = 0.1  # fraction of starts that switch component: the "phase boundary"


@dataclass(frozen=True)
class Function:
    """A landscape of E2, the reference level of its components and its "good" end."""

    make: Callable[[], Landscape]
    ref_level: Callable[[Landscape], float]
    good: Callable[[Landscape], float]  # final f below this = a global minimum's basin
    note: str


FUNCTIONS: dict[str, Function] = {
    "himmelblau": Function(
        Himmelblau,
        lambda f: 0.9 * f.saddle_values[0],
        lambda f: 1e-2,
        "4 global minima (f = 0); components of {f <= 0.9 x lowest saddle (13.31)}",
    ),
    "multiwell": Function(
        MultiWell.default,
        lambda f: -0.05 * float(f.depths.min()),
        lambda f: float(f.min_value) + 0.05,
        "3 Gaussian wells of depths 1..2; components of {f <= -0.05 x shallowest depth}",
    ),
    "rastrigin": Function(
        Rastrigin,
        lambda f: 10.0,
        lambda f: 0.5,
        "global minimum 0 among a lattice of local minima (>= 0.99); components of {f <= 10}",
    ),
}


@dataclass(frozen=True)
class Config:
    """E2's size.

    Attributes:
        functions: names from :data:`FUNCTIONS`.
        lr_grid: step sizes ``a0``.
        starts: starts per cell, uniform in the middle 70% of the box (seeded, shared).
        steps: steps per trajectory.
        decay_total: ``beta * steps``.
        resolution: grid points per axis for the components.
    """

    functions: tuple[str, ...]
    lr_grid: tuple[float, ...]
    starts: int
    steps: int
    decay_total: float = 2.0
    resolution: int = 301

    def key(self, fn: str, arm: str, lr: float) -> str:
        return (
            f"{fn}|{arm}|lr={lr:g}|starts={self.starts}|steps={self.steps}|"
            f"decay_total={self.decay_total:g}|res={self.resolution}"
        )


def starts_for(fn: Landscape, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` float64 starts uniform in the middle 70% of ``fn``'s box (the same for every arm)."""
    lo = torch.tensor([b[0] for b in fn.bounds], dtype=torch.float64)
    hi = torch.tensor([b[1] for b in fn.bounds], dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * (0.15 + 0.7 * torch.rand(n, fn.dim, generator=gen, dtype=torch.float64))


def trajectories(
    fn: Landscape, x0: torch.Tensor, arm: str, lr: float, steps: int, decay_total: float
) -> tuple[np.ndarray, np.ndarray]:
    """Iterates ``(starts, steps + 1, dim)`` of ``arm`` from each row of ``x0``.

    A row that leaves the ball of radius :data:`ESCAPE` or turns non-finite is frozen at
    its last good iterate from then on; returns ``(points, diverged_at)`` with
    ``diverged_at`` the step of divergence (``-1``: never).
    """
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; valid: {', '.join(ARMS)}")
    beta = decay_total / steps
    x = x0.detach().clone().to(torch.float64)
    pts = [x.clone()]
    alive = torch.ones(x.shape[0], dtype=torch.bool)
    diverged_at = torch.full((x.shape[0],), -1, dtype=torch.int64)
    for t in range(steps):
        xr = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(fn(xr).sum(), xr)  # rows are independent: per-row grads
        a = lr if arm == "GD" else lr * math.exp(-beta * t)
        norm = g.norm(dim=1, keepdim=True)
        if arm == "clip + GD + decay":
            g = g * torch.clamp(1.0 / (norm + 1e-6), max=1.0)  # clip_grad_norm_'s factor
        elif arm == "SuperLevelSGD":
            g = g / (1.0 + norm)
        new = x - a * g
        bad = alive & (~torch.isfinite(new).all(1) | (new.abs().max(1).values > ESCAPE))
        diverged_at[bad] = t + 1
        alive &= ~bad
        x = torch.where(alive[:, None], new, x)
        pts.append(x.clone())
    return torch.stack(pts, 1).numpy(), diverged_at.numpy()


def _barriers(fn: Landscape, pts: np.ndarray, kind: str, points: int = 33) -> np.ndarray:
    """Straight-segment barrier of every step, as :func:`superlevel.landscape.segment_barrier`."""
    p = torch.as_tensor(pts)
    ts = torch.linspace(0.0, 1.0, points, dtype=torch.float64)
    seg = torch.lerp(p[:, :-1, None, :], p[:, 1:, None, :], ts[:, None])  # (S, T, points, 2)
    with torch.no_grad():
        vals = fn(seg)
    ends = torch.stack([vals[..., 0], vals[..., -1]], -1)
    if kind == "sub":
        return (vals.max(-1).values - ends.max(-1).values).numpy()
    return (ends.min(-1).values - vals.min(-1).values).numpy()


def _switches(labels: np.ndarray, grid: Grid, pts: np.ndarray) -> np.ndarray:
    """Per start: changes of component at the reference level (outside cells skipped)."""
    comp = component_of(labels, grid, pts)
    out = np.zeros(pts.shape[0], dtype=np.int64)
    for i, row in enumerate(comp):
        inside = row[row > 0]
        out[i] = int((inside[1:] != inside[:-1]).sum())
    return out


def measure_cell(
    name: str,
    fn: Landscape,
    grid: Grid,
    forests: dict[str, MergeForest],
    cfg: Config,
    arm: str,
    lr: float,
) -> dict[str, Any]:
    """Per-start counts of one (function, arm, lr) cell."""
    spec = FUNCTIONS[name]
    x0 = starts_for(fn, cfg.starts)
    pts, diverged_at = trajectories(fn, x0, arm, lr, cfg.steps, cfg.decay_total)
    with torch.no_grad():
        losses = fn(torch.as_tensor(pts)).numpy()
    # Steps after divergence repeat the frozen iterate; they are excluded from the counts.
    valid = np.ones((cfg.starts, cfg.steps), dtype=bool)
    for i, d in enumerate(diverged_at):
        if d >= 0:
            valid[i, d - 1 :] = False
    out: dict[str, Any] = {}
    for kind in ("sub", "super"):
        conn = step_connected(forests[kind], pts, losses, _barriers(fn, pts, kind))
        known = (conn >= 0) & valid
        out[f"jumps_{kind}"] = ((conn == 0) & valid).sum(1).tolist()
        out[f"known_{kind}"] = known.sum(1).tolist()
    labels, _ = level_set_components(grid, spec.ref_level(fn), "sub")
    out["switches"] = _switches(labels, grid, pts).tolist()
    out["diverged"] = (diverged_at >= 0).astype(int).tolist()
    final = losses[:, -1]
    out["good"] = ((diverged_at < 0) & (final <= spec.good(fn))).astype(int).tolist()
    out["final_loss"] = [float(f"{v:.6g}") for v in final.tolist()]
    return out


def _raw_path(ctx: Context) -> Path:
    return ctx.raw / "E2.json"


def _load(ctx: Context) -> dict[str, Any]:
    path = _raw_path(ctx)
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def _save(ctx: Context, data: dict[str, Any]) -> None:
    path = _raw_path(ctx)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, sort_keys=True, indent=0) + "\n")
    os.replace(tmp, path)  # a failed write leaves the old results intact


def run(ctx: Context, cfg: Config) -> None:
    """Measure every missing cell, saving after each (function, arm)."""
    data = _load(ctx)
    for name in cfg.functions:
        missing = [
            (arm, lr) for arm in ARMS for lr in cfg.lr_grid if cfg.key(name, arm, lr) not in data
        ]
        ctx.log(f"study:E2: {name}: {len(missing)} of {len(ARMS) * len(cfg.lr_grid)} cells to do")
        if not missing:
            continue
        fn = FUNCTIONS[name].make()
        grid = grid_values(fn, fn.bounds, cfg.resolution)
        forests = {kind: MergeForest(grid, kind) for kind in ("sub", "super")}
        for arm in ARMS:
            todo = [lr for a, lr in missing if a == arm]
            for lr in todo:
                data[cfg.key(name, arm, lr)] = measure_cell(name, fn, grid, forests, cfg, arm, lr)
            if todo:
                _save(ctx, data)
                ctx.log(f"  {name}/{arm}: {len(todo)} cells")


def _rate(cell: dict[str, Any], kind: str) -> float:
    known = sum(cell[f"known_{kind}"])
    return sum(cell[f"jumps_{kind}"]) / known if known else math.nan


def proportion_text(hits: list[int]) -> str:
    """``k/n = p [low, high]`` with the 95% Wilson score interval of the proportion."""
    from scipy.stats import binomtest

    k, n = int(sum(hits)), len(hits)
    ci = binomtest(k, n).proportion_ci(0.95, method="wilson")
    return f"{k}/{n} = {k / n:.2f} [{ci.low:.2f}, {ci.high:.2f}]"


def _onset(values: list[float], lrs: tuple[float, ...], threshold: float) -> float | None:
    for v, lr in zip(values, lrs, strict=True):
        if v >= threshold:
            return lr
    return None


LOWER_FIRST = ("lower", "higher", "equivalent", "inconclusive")  # fewer counts first
FEWER = {"lower": "fewer", "higher": "more"}


@dataclass
class Measured:
    """E2's numbers from ``raw/E2.json``: the stored cells and the tables' rows, the paired
    tallies of SuperLevelSGD against each arm (per count), the a0 at which each arm loses
    its component, SuperLevelSGD's jump rates and the held-out global-minimum hits."""

    cell: dict[str, dict[str, Any]]
    onset_rows: list[list[str]]
    comp_rows: list[list[str]]
    good_rows: list[list[str]]
    super_rows: list[list[str]]
    tally: dict[str, dict[str, Tally]]
    leave: dict[tuple[str, str], float]
    sl_rates: list[float]
    good: dict[tuple[str, str], list[int]]
    missing: str = ""


def configs(cfg: Config) -> list[str]:
    """Every cell's key: functions x arms x the a0 grid."""
    return [cfg.key(f, a, lr) for f in cfg.functions for a in ARMS for lr in cfg.lr_grid]


def _series(cfg: Config, cell: dict[str, dict[str, Any]], fn: str, arm: str,
            what: Callable[[dict[str, Any]], float]) -> list[float]:  # fmt: skip
    return [what(cell[cfg.key(fn, arm, lr)]) for lr in cfg.lr_grid]


def _switch_frac(c: dict[str, Any]) -> float:
    return float(np.mean(np.asarray(c["switches"]) > 0))


def _div_frac(c: dict[str, Any]) -> float:
    return float(np.mean(c["diverged"]))


def load(ctx: Context, cfg: Config) -> Measured | str:
    """E2's numbers from ``raw/E2.json`` only, or how many cells are missing."""
    data = _load(ctx)
    keys = configs(cfg)
    have = sum(k in data for k in keys)
    if have < len(keys):
        return f"{have} of {len(keys)} cells are stored."
    cell = {k: data[k] for k in keys}
    lrs = cfg.lr_grid

    def series(fn: str, arm: str, what: Callable[[dict[str, Any]], float]) -> list[float]:
        return _series(cfg, cell, fn, arm, what)

    onset_rows = []
    leave: dict[tuple[str, str], float] = {}  # a0 where the start's component is lost
    for fn in cfg.functions:
        for arm in ARMS:
            sw = _onset(series(fn, arm, _switch_frac), lrs, SWITCH_ONSET)
            jp = _onset(series(fn, arm, lambda c: _rate(c, "sub")), lrs, 0.01)
            dv = _onset(series(fn, arm, _div_frac), lrs, 0.5)
            leave[(fn, arm)] = min((v for v in (sw, dv) if v is not None), default=math.inf)
            onset_rows.append([fn, arm, fmt(sw), fmt(jp), fmt(dv), fmt(leave[(fn, arm)])])
    # Paired over starts, at every a0: SuperLevelSGD minus each arm, in switches and sub jumps.
    comp_rows = []
    tally: dict[str, dict[str, Tally]] = {}
    for other in ARMS[:-1]:
        tally[other] = {}
        for metric in ("switches", "jumps_sub"):
            # One Holm family per (arm, count): every (function, a0) cell, TOST +-0.1 a start.
            pairs = {(fn, lr): (cell[cfg.key(fn, "SuperLevelSGD", lr)][metric],
                                cell[cfg.key(fn, other, lr)][metric])
                     for fn in cfg.functions for lr in lrs}  # fmt: skip
            verdicts = compare_family({f"{k[0]}|{k[1]}": v for k, v in pairs.items()},
                                      margin=0.1)  # fmt: skip
            per_fn = paired_tally(verdicts, lambda k: k.split("|")[0], cfg.functions)
            tally[other][metric] = sum(per_fn.values(), Tally())
            for fn in cfg.functions:
                counts = per_fn[fn].counts(LOWER_FIRST)
                comp_rows.append([other, fn, metric, *(str(c) for c in counts)])
    # Poor minima: each arm's best a0 chosen on the even starts, scored on the odd ones
    # (a start never both selects and scores).
    good_rows, good = [], {}
    for fn in cfg.functions:
        for arm in ARMS:
            fr = series(fn, arm, lambda c: float(np.mean(np.asarray(c["good"])[0::2])))
            best = int(np.argmax(fr))
            good[(fn, arm)] = list(np.asarray(cell[cfg.key(fn, arm, lrs[best])]["good"])[1::2])
            good_rows.append([fn, arm, fmt(lrs[best]), proportion_text(good[(fn, arm)])])
    super_rows = [
        [fn, arm, fmt(max(series(fn, arm, lambda c: _rate(c, "super"))), 2)]
        for fn in cfg.functions
        for arm in ARMS
    ]
    sl_rates = [
        r for fn in cfg.functions for r in series(fn, "SuperLevelSGD", lambda c: _rate(c, "sub"))
    ]
    return Measured(cell, onset_rows, comp_rows, good_rows, super_rows, tally, leave, sl_rates,
                    good)  # fmt: skip


def blocks(ctx: Context, cfg: Config, m: Measured) -> list[Block]:
    """E2's body: protocol, budget, the phase diagram, onsets, paired counts, poor minima
    and the super-level kind."""
    lrs = cfg.lr_grid

    def series(fn: str, arm: str, what: Callable[[dict[str, Any]], float]) -> list[float]:
        return _series(cfg, m.cell, fn, arm, what)

    figure = _plot(ctx, cfg, series, _switch_frac, _div_frac)
    n = len(lrs) * len(cfg.functions)
    return [
        *paragraphs(protocol(cfg)),
        Paragraph(
            f"Budget: {cfg.steps} steps per trajectory, {cfg.starts} starts per cell, "
            f"{len(lrs)} values of a0 ({lrs[0]:g} .. {lrs[-1]:g}) x {len(ARMS)} arms x "
            f"{len(cfg.functions)} functions; components on a {cfg.resolution}^2 grid; "
            "float64 on the CPU (deterministic)."
        ),
        Image(figure, "phase diagram"),
        Paragraph(
            "**Onsets** (the smallest a0 of the grid where the rate crosses the threshold; "
            "`-` never on this grid):"
        ),
        Table(
            [
                "function",
                "arm",
                f"switch onset a0 (>= {SWITCH_ONSET:g} of starts switch)",
                "jump onset a0 (sub jump rate >= 1%)",
                "divergence onset a0 (>= half diverge)",
                "leaves its component (first of switch and divergence onsets)",
            ],
            m.onset_rows,
        ),
        Paragraph(
            "**Paired over the starts** (the same starts for every arm): at how many of the "
            f"{len(lrs)} values of a0 does SuperLevelSGD have fewer / more component switches "
            "or sub-level jumps per start than the other arm (95% t interval of the per-start "
            "difference)?"
        ),
        Table(
            [
                "SuperLevelSGD vs",
                "function",
                "per-start count",
                "a0 with fewer (Holm)",
                "more (Holm)",
                "equivalent (within 0.1 a start)",
                "inconclusive",
            ],
            m.comp_rows,
        ),
        Paragraph(
            "**Poor minima** (each arm at its own best a0 of the grid, chosen on the even "
            "starts and scored on the odd ones):"
        ),
        Table(
            [
                "function",
                "arm",
                "best a0",
                "fraction of starts ending in a global minimum, 95% Wilson interval",
            ],
            m.good_rows,
        ),
        Paragraph("**Super-level kind** (jumps of {f >= min(f(a), f(b))}):"),
        Table(["function", "arm", "largest super-level jump rate over a0"], m.super_rows),
        Paragraph(
            f"Across the {n} (function, a0) cells SuperLevelSGD's sub-level jump rate is "
            f"{fmt(min(m.sl_rates), 2)} .. {fmt(max(m.sl_rates), 2)}."
        ),
    ]


def verdict(cfg: Config, m: Measured) -> Verdict:
    """The reading of the onsets and paired counts, and the C1 and C3 evidence."""
    text, details, claims = _verdict(cfg, m.tally, m.leave, m.sl_rates, m.good)
    return Verdict(text, claims, details)


def _verdict(
    cfg: Config,
    tally: dict[str, dict[str, Tally]],
    leave: dict[tuple[str, str], float],
    sl_rates: list[float],
    good: dict[tuple[str, str], list[int]],
) -> tuple[str, str, dict[str, ClaimEvidence]]:
    n = len(cfg.lr_grid) * len(cfg.functions)

    def onsets(arm: str) -> str:
        return "/".join(fmt(leave[(f, arm)]) for f in cfg.functions)

    ours = [leave[(f, "SuperLevelSGD")] for f in cfg.functions]
    decay = [leave[(f, "GD + decay")] for f in cfg.functions]
    clip = tally["clip + GD + decay"]["switches"]
    later = all(a > b for a, b in zip(ours, decay, strict=True))
    like_clip = clip.equivalent + clip.inconclusive >= 0.9 * n and clip.lower == clip.higher == 0
    text = (
        f"The start's component is lost (>= {SWITCH_ONSET:g} of starts switch, or half "
        f"diverge) from a0 = {onsets('SuperLevelSGD')} for SuperLevelSGD, "
        f"{onsets('GD + decay')} for GD + decay, {onsets('clip + GD + decay')} for clip + GD "
        f"+ decay, {onsets('GD')} for GD ({'/'.join(cfg.functions)}; inf: not on this grid). "
        f"Paired per a0 against clip + GD + decay (Holm over the cells): fewer switches in "
        f"{clip.lower}, more in {clip.higher}, equivalent in {clip.equivalent}, inconclusive "
        f"in {clip.inconclusive} of {n} cells."
    )
    if later and like_clip:
        short = "the bounded step, not the level-set topology, explains the effect"
        reading = (
            "SuperLevelSGD keeps its component up to larger a0 than GD with the same decay, "
            f"and behaves like clip + GD at the same maximal step length: {short}."
        )
    elif later and clip.lower > clip.higher:
        short = "fewer switches than clip + GD at the same maximal step length"
        reading = (
            "SuperLevelSGD keeps its component longer than GD with the same decay and "
            "switches less than clip + GD: something beyond the bounded step is at work."
        )
    elif later:
        short = "later loss of the component than GD + decay, but unlike clip + GD"
        reading = (
            "SuperLevelSGD keeps its component up to larger a0 than GD with the same decay, "
            "and differs from clip + GD at the same maximal step length."
        )
    else:
        short = "no later loss of the component than GD with the same decay"
        reading = "SuperLevelSGD does not keep its component longer than GD with the same decay."
    verdict = reading
    claims: dict[str, ClaimEvidence] = {}
    # C1, rule before the numbers: a bounded step alone keeps trajectories in their
    # component up to some a0, so the claim is about the rule beyond the clip at the same
    # maximal step length: supported when it jumps less than clip + GD + decay in some
    # cell and more in none; not supported when more in any; mixed when equivalent or
    # inconclusive everywhere (connected as much as any bounded step, no more).
    jumps = tally["clip + GD + decay"]["jumps_sub"]
    c1 = "not supported" if jumps.higher else "supported" if jumps.lower else "mixed"
    claims["C1"] = ClaimEvidence(
        c1,
        f"E2: SuperLevelSGD against clip + GD + decay at the same maximal step, sub-level "
        f"jumps per start (Holm over {n} cells): {jumps.phrase(LOWER_FIRST, FEWER)}; {short}",
    )
    # C3, rule: each arm's best a0 on held-out starts; supported when SuperLevelSGD ends in
    # a global minimum more often than every other arm on every function (Holm over the
    # functions x arms, TOST 0.05 of the starts), not supported when more often than none.
    pairs = {f"{fn}|{a}": ([float(v) for v in good[(fn, "SuperLevelSGD")]],
                           [float(v) for v in good[(fn, a)]])
             for fn in cfg.functions for a in ARMS[:-1]}  # fmt: skip
    c3v = compare_family(pairs, margin=0.05)
    c3t = paired_tally(c3v)[None]
    higher, lower = c3t.higher, c3t.lower
    c3 = "supported" if higher == len(c3v) else "not supported" if higher == 0 else "mixed"
    claims["C3"] = ClaimEvidence(
        c3,
        f"E2, {len(cfg.functions)} functions, each arm at its best a0 chosen on other starts: "
        f"fraction of starts ending in a global minimum, SuperLevelSGD higher in {higher}, "
        f"lower in {lower} of {len(c3v)} (function, arm) pairs (Holm, paired over starts)",
    )
    return verdict, text, claims


def _plot(ctx: Context, cfg: Config, series, switch_frac, div_frac) -> Path:
    rows = [
        ("sub-level jump rate", lambda c: _rate(c, "sub")),
        ("fraction of starts that switch", switch_frac),
        ("fraction diverged", div_frac),
    ]
    fig, axes = new_figure(len(rows), len(cfg.functions), 3.6, 2.6)
    for j, fn in enumerate(cfg.functions):
        for i, (label, what) in enumerate(rows):
            ax = axes[i][j]
            for arm in ARMS:
                ax.plot(cfg.lr_grid, series(fn, arm, what), marker="o", ms=2.5, label=arm)
            ax.set_xscale("log")
            ax.set_ylabel(label, fontsize=8)
            if i == 0:
                ax.set_title(fn, fontsize=9)
            if i == len(rows) - 1:
                ax.set_xlabel("a0")
    axes[0][0].legend(fontsize=6)
    fig.suptitle(
        f"E2 phase diagram: {cfg.starts} shared starts, {cfg.steps} steps, "
        f"decay_total {cfg.decay_total:g}",
        fontsize=10,
    )
    return save_figure(fig, ctx.figures / "e2_phase.png")


def protocol(cfg: Config) -> str:
    """Question and protocol."""
    fns = "; ".join(f"{n}: {FUNCTIONS[n].note}" for n in cfg.functions)
    return (
        "**Question.** Does SuperLevelSGD keep its trajectory inside one component of the "
        "level set where plain GD jumps between components, and is that the level-set "
        "structure or just the bounded step?\n\n"
        f"**Protocol.** Functions: {fns}. Arms: GD (a0), GD + decay (a0 exp(-beta t)), "
        "clip + GD + decay (the gradient clipped to norm 1, so the same maximal step length "
        "a0 exp(-beta t) as SuperLevelSGD), SuperLevelSGD (a0 exp(-beta t) g / (1 + ||g||)); "
        f"beta = {cfg.decay_total:g} / steps. A step *jumps* when its ends lie in different "
        "components of {f <= max(f(a), f(b))} (sub) or {f >= min(f(a), f(b))} (super); a "
        "start *switches* when its iterate changes component of the sub-level set at the "
        "reference level. Diverged trajectories (|x| > 1e3) count as diverged; their steps "
        "after divergence are not counted; steps with an end outside the grid are unknown "
        "and not counted."
    )
