"""Q1 — architectures: MLP, CNN, RNN and Transformer against the usual optimizers.

A :class:`~superlevel.study.compare.Comparison` with one setting per harness task: every
optimizer gets the same number of grid points over its own lr range on seed 1, selected
by validation metric, then seeds ``1..n``. Besides the final test metric: steps to the
task's validation target (the harness's ``steps_to_target``, AlgoPerf-style) and a
performance profile over the tasks (:func:`superlevel.bench.stats.performance_profile`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from superlevel.bench.stats import performance_profile
from superlevel.study.common import (
    ClaimEvidence,
    Context,
    SectionResult,
    compute_seconds,
    fmt,
    hardware_text,
    md_table,
    new_figure,
    not_yet_run,
    save_figure,
)
from superlevel.study.compare import (
    TasksConfig,
    load_complete_tasks,
    run_comparison,
    summarize,
    tally_text,
)

ID = "Q1"
TITLE = "Architectures"
REFERENCE = "superlevel"
RIVALS = ("adamw", "sgdr")  # claim C5


Config = TasksConfig  # the section's size: tasks, optimizers, grid, seeds, budget


def run(ctx: Context, cfg: Config) -> None:
    """Task by task (so an interrupted study has complete ones): every optimizer tuned on
    seed 1, then the selected lr on every seed."""
    for task, _ in cfg.tasks:
        run_comparison(ctx, cfg.comparison((task,)), ID)


def _steps_to_target(runs: list[dict[str, Any]]) -> float:
    """Median over seeds of the steps to the validation target (``inf``: some seed never)."""
    steps = [r["steps_to_target"] for r in runs]
    if any(s is None for s in steps):
        return math.inf
    return float(np.median(steps))


def report(ctx: Context, cfg: Config) -> SectionResult:
    """The Q1 part of the report, from stored runs only."""
    protocol = _protocol(cfg)
    loaded = load_complete_tasks(ctx, cfg)
    if isinstance(loaded, str):
        return not_yet_run(ID, TITLE, protocol, loaded)
    n_all = len(cfg.tasks)
    cfg, out, missing = loaded
    if missing:  # the complete tasks are reported; say plainly which are not
        protocol += f"\n\n**Not yet run:** {missing} They are left out below."
    done = [t for t, _ in cfg.tasks]
    comp = cfg.comparison()
    summ = summarize(ctx, comp, out, REFERENCE, lambda runs: [fmt(_steps_to_target(runs))])
    table = md_table(
        [
            "task",
            "optimizer",
            "selected lr",
            f"test metric % mean (min..max), {cfg.seeds} seeds",
            "median steps to the validation target",
            f"{REFERENCE} minus optimizer, paired 95% CI (points)",
        ],
        summ.rows,
    )
    costs = {
        s.label: {
            o: _steps_to_target(out.runs[(s.label, o)]) if (s.label, o) in out.runs else math.inf
            for o in cfg.optimizers
        }
        for s in comp.settings
    }
    taus = np.geomspace(1.0, 16.0, 41)
    profile = performance_profile(costs, taus)
    figure = _plot(ctx, cfg, profile, taus)
    n = len(cfg.tasks)
    verdict = (
        ("" if not missing else f"On {', '.join(done)} only (the rest has not run). ")
        + f"Test metric of {REFERENCE}, paired over seeds: "
        + tally_text(REFERENCE, summ.tally, n, "tasks")
        + ". Fraction of tasks on which each optimizer reaches the target within 2x the "
        "fastest: "
        + ", ".join(f"{o} {profile[o][np.searchsorted(taus, 2.0)]:.2f}" for o in cfg.optimizers)
        + "."
    )
    claims = {}
    rivals = [o for o in RIVALS if o in summ.tally]
    if rivals:
        lower = {o: summ.tally[o][1] for o in rivals}
        higher = {o: summ.tally[o][0] for o in rivals}
        c5 = "supported" if all(v == 0 for v in lower.values()) else "mixed"
        c5 = "not supported" if any(v > n / 2 for v in lower.values()) else c5
        claims["C5"] = ClaimEvidence(
            c5,
            f"Q1 ({n} of {n_all} tasks run): "
            + "; ".join(
                f"vs {o}: higher in {higher[o]}, lower in {lower[o]} of {n} tasks" for o in rivals
            ),
        )
    body = "\n".join(
        [
            protocol,
            "",
            f"Budget: harness budget `{cfg.budget}` of each task; {cfg.trials} grid points "
            f"per optimizer on seed 1, then {cfg.seeds} seeds; {len(out.all_runs)} runs, "
            f"{compute_seconds(out.all_runs) / 60:.1f} min of compute. Hardware: "
            f"{hardware_text(out.all_runs)}.",
            "",
            f"![Q1 performance profile]({figure})",
            "",
            table,
        ]
    )
    status = "partial" if missing else "done"
    return SectionResult(ID, TITLE, status, body, verdict, claims)


def _plot(ctx: Context, cfg: Config, profile: dict[str, np.ndarray], taus: np.ndarray) -> str:
    fig, axes = new_figure(1, 1, 5.0, 3.4)
    ax = axes[0][0]
    for k, o in enumerate(cfg.optimizers):
        # Small vertical offsets so that lines on top of each other stay visible.
        ax.step(taus, profile[o] + 0.006 * (k - len(cfg.optimizers) / 2), where="post", label=o)
    ax.set_xscale("log")
    ax.set_xlabel("tau (steps to target / fastest)")
    ax.set_ylabel("fraction of tasks")
    ax.legend(fontsize=6)
    ax.set_title(f"Q1 performance profile over {len(cfg.tasks)} tasks", fontsize=9)
    save_figure(fig, ctx.figures / "q1_profile.png")
    return "figures/q1_profile.png"


def _protocol(cfg: Config) -> str:
    tasks = ", ".join(
        f"`{t}`" + (f" ({', '.join(f'{k}={v}' for k, v in o)})" if o else "") for t, o in cfg.tasks
    )
    return (
        "**Question.** Does the rule match or beat the usual optimizers beyond MLPs?\n\n"
        f"**Protocol.** Harness tasks {tasks} x optimizers {', '.join(cfg.optimizers)} "
        f"(harness defaults besides the lr). Each pair: {cfg.trials} log-spaced lrs over "
        "the optimizer's own range (the same budget for every optimizer) on seed 1, selected "
        f"by the validation metric, then seeds 1..{cfg.seeds}. Steps to target: the first "
        "epoch end at which the validation metric reaches the task's target; the performance "
        "profile is rho(tau) = fraction of tasks within tau x the fastest optimizer. The "
        "test split selects nothing."
    )
