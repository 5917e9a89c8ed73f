"""Q1 — architectures: MLP, CNN, RNN and Transformer against the usual optimizers.

A :class:`~superlevel.study.compare.Comparison` with one setting per harness task: every
optimizer gets the same number of grid points over its own lr range on seed 1, selected
by validation metric, then seeds ``1..n``. Besides the final test metric: steps to the
task's validation target (the harness's ``steps_to_target``, AlgoPerf-style) and a
performance profile over the tasks (:func:`superlevel.bench.stats.performance_profile`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from superlevel.bench.report.render import Block, Image, Paragraph, Table
from superlevel.bench.stats import performance_profile
from superlevel.study.common import (
    ClaimEvidence,
    Context,
    Verdict,
    compute_text,
    fmt,
    new_figure,
    paragraphs,
    save_figure,
)
from superlevel.study.compare import (
    Compared,
    Comparison,
    TasksConfig,
    headline,
    load_complete_tasks,
    missing_blocks,
    protocol_text,
    run_comparison,
    summarize,
    tally_text,
    tasks_text,
)

ID = "Q1"
TITLE = "Architectures"
REFERENCE = "superlevel"
RIVALS = ("adamw", "sgdr")  # claim C5


Config = TasksConfig  # the section's size: tasks, optimizers, grid, seeds, budget


def configs(cfg: Config) -> list[Comparison]:
    """One comparison per task (so an interrupted study has complete ones)."""
    return [cfg.comparison((task,)) for task, *_ in cfg.tasks]


def run(ctx: Context, cfg: Config) -> None:
    """Task by task: every optimizer tuned on the tuning seed, then the final seeds."""
    for comp in configs(cfg):
        run_comparison(ctx, comp, ID)


def _steps_to_target(runs: list[dict[str, Any]]) -> float:
    """Median over seeds of the steps to the validation target (``inf``: some seed never)."""
    steps = [r["steps_to_target"] for r in runs]
    if any(s is None for s in steps):
        return math.inf
    return float(np.median(steps))


def load(ctx: Context, cfg: Config) -> Compared | str:
    """Q1's comparison over the complete tasks, from stored runs only, or what is missing."""
    loaded = load_complete_tasks(ctx, cfg)
    if isinstance(loaded, str):
        return loaded
    done, out, missing = loaded
    summ = summarize(ctx, done.comparison(), out, REFERENCE,
                     lambda runs: [fmt(_steps_to_target(runs))])  # fmt: skip
    return Compared(done, out, summ, missing)


_TAUS = np.geomspace(1.0, 16.0, 41)


def _profile(m: Compared) -> dict[str, np.ndarray]:
    """The performance profile over the complete tasks (steps to the target)."""
    costs = {
        s.label: {
            o: _steps_to_target(m.out.runs[(s.label, o)])
            if (s.label, o) in m.out.runs
            else math.inf
            for o in m.cfg.optimizers
        }
        for s in m.cfg.comparison().settings
    }
    return performance_profile(costs, _TAUS)


def blocks(ctx: Context, cfg: Config, m: Compared) -> list[Block]:
    """Q1's body: protocol, budget, the performance profile and the table."""
    table = Table(
        [
            "task",
            "optimizer",
            "selected (tuning seed)",
            f"test metric % mean (min..max), {cfg.seeds} seeds",
            "median steps to the validation target",
            f"{REFERENCE} minus optimizer, paired 95% CI (points)",
            "verdict (Holm over the section, TOST margin)",
        ],
        m.summ.rows,
    )
    figure = _plot(ctx, m.cfg, _profile(m), _TAUS)
    return [
        *paragraphs(protocol(cfg)),
        *missing_blocks(m.missing),
        Paragraph(
            f"Budget: as listed per task; {cfg.trials} trials per optimizer on the tuning "
            f"seed, then {cfg.seeds} seeds; " + compute_text(m.out.all_runs)
        ),
        Image(figure, "Q1 performance profile"),
        table,
    ]


def verdict(cfg: Config, m: Compared) -> Verdict:
    """The headline, the tallies with the profile at tau = 2, and the C5 evidence."""
    summ = m.summ
    n_all = len(cfg.tasks)
    done = [t[0] for t in m.cfg.tasks]
    profile = _profile(m)
    n = len(m.cfg.tasks)
    details = (
        ("" if not m.missing else f"On {', '.join(done)} only (the rest has not run). ")
        + f"Test metric of {REFERENCE}, paired over seeds: "
        + tally_text(REFERENCE, summ.tally, n, "tasks")
        + ". Fraction of tasks on which each optimizer reaches the target within 2x the "
        "fastest: "
        + ", ".join(f"{o} {profile[o][np.searchsorted(_TAUS, 2.0)]:.2f}" for o in m.cfg.optimizers)
        + "."
    )
    claims = {}
    rivals = [o for o in RIVALS if o in summ.tally]
    if rivals:
        # Rule (before the numbers): "matches or beats" holds on a task when the paired
        # comparison is higher or equivalent within the margin; supported when it holds on
        # every task against both rivals, not supported when it is lower on more than half
        # the tasks against either, mixed otherwise (inconclusive tasks prove nothing).
        t = {o: summ.tally[o] for o in rivals}
        holds = {o: t[o].higher + t[o].equivalent for o in rivals}
        c5 = "supported" if all(holds[o] == n for o in rivals) else "mixed"
        c5 = "not supported" if any(t[o].lower > n / 2 for o in rivals) else c5
        order = ("higher", "equivalent", "lower", "inconclusive")
        claims["C5"] = ClaimEvidence(
            c5,
            f"Q1 ({n} of {n_all} tasks run): "
            + "; ".join(f"vs {o}: {t[o].phrase(order)} of {n} tasks" for o in rivals),
        )
    return Verdict(headline(REFERENCE, summ.tally, n, "tasks"), claims, details)


def _plot(ctx: Context, cfg: Config, profile: dict[str, np.ndarray], taus: np.ndarray) -> Path:
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
    return save_figure(fig, ctx.figures / "q1_profile.png")


def protocol(cfg: Config) -> str:
    """Question and protocol."""
    tasks = tasks_text(cfg.tasks, cfg.budget, cfg.epochs)
    return (
        "**Question.** Does the rule match or beat the usual optimizers beyond MLPs?\n\n"
        f"**Protocol.** Harness tasks {tasks} x optimizers {', '.join(cfg.optimizers)} "
        "(harness defaults besides the searched hyperparameters). "
        + protocol_text(cfg.trials, cfg.seeds)
        + " Steps to target: the first "
        "epoch end at which the validation metric reaches the task's target; the performance "
        "profile is rho(tau) = fraction of tasks within tau x the fastest optimizer. Text "
        "tasks with `eval_subset` are scored on that many windows of each split (a "
        "contiguous passage of the test text) and train on all their windows. CIFAR-10, "
        "which the paper names, is not in the project's data (it needs a download); the "
        "convolutional tasks stand in for it: "
        "`mnist1d_cnn` here, the DeepOBS `fmnist_2c2d` CNN on Fashion-MNIST in the gpu "
        "profile (the CIFAR-10 loader exists and is tested on a file in its format)."
    )
