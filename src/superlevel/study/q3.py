"""Q3 — reinforcement learning in POMDPs (the paper's open question 3).

A :class:`~superlevel.study.compare.Comparison` on the harness's RL tasks
(:mod:`superlevel.rl`): recurrent PPO on CartPole without velocities, every minibatch
update an ``optimizer.step(closure)``. Every optimizer gets the same lr grid over its own
range on seed 1, selected by the mean greedy return on the validation episodes, then
seeds ``1..n``. Reported besides the final test return: the return curve over training
(validation episodes at each epoch end), collapses of the training return
(:func:`superlevel.rl.ppo.count_collapses`) and policy-gradient-norm spikes.

The comparison is trusted only because the reference holds first: our agent with Adam
and the RL Zoo's settings reaches a return of 450 on ``cartpole_novel`` at the full
budget (``benchmarks/rl_reference.py``, docs/data_and_tasks.md).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from superlevel.bench.report.render import Block, Image, Paragraph, Table
from superlevel.study.common import (
    Context,
    Verdict,
    compute_text,
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
)

ID = "Q3"
TITLE = "Reinforcement learning in POMDPs"
REFERENCE = "superlevel"
SPIKE = 10.0  # a rollout's largest policy-gradient norm above SPIKE x the run's median


Config = TasksConfig  # the section's size: tasks, optimizers, grid, seeds, budget


def configs(cfg: Config) -> list[Comparison]:
    """One comparison per task (so an interrupted study has complete ones)."""
    return [cfg.comparison((task,)) for task, *_ in cfg.tasks]


def run(ctx: Context, cfg: Config) -> None:
    """Task by task: every optimizer tuned on the tuning seed, then the final seeds."""
    for comp in configs(cfg):
        run_comparison(ctx, comp, ID)


def rl_log(run: dict[str, Any]) -> dict[str, Any]:
    """The run's RL diagnostics (``info["task_info"]["rl"]``; empty if absent)."""
    return ((run.get("info") or {}).get("task_info") or {}).get("rl") or {}


def gradient_spikes(log: list[dict[str, Any]], factor: float = SPIKE) -> int:
    r"""Rollouts whose largest minibatch policy-gradient norm exceeds ``factor`` times the
    run's median per-rollout mean norm: ``#{k : max_k > factor * median_j mean_j}``."""
    means = [r["pg_norm"] for r in log if math.isfinite(r.get("pg_norm", math.nan))]
    if not means:
        return 0
    bar = factor * float(np.median(means))
    return sum(1 for r in log if r.get("pg_norm_max", 0.0) > bar)


def _stability(runs: list[dict[str, Any]]) -> list[str]:
    logs = [rl_log(r) for r in runs]
    collapses = sum(int(g.get("collapses", 0)) for g in logs)
    spikes = sum(gradient_spikes(g.get("log", [])) for g in logs)
    return [str(collapses), str(spikes)]


def _curve(ctx: Context, run: dict[str, Any]) -> dict[int, float]:
    rows = ctx.store.epoch_metrics(run["run_id"])
    val = [r for r in rows if r["split"] == "val" and r["metric"] is not None]
    return {r["epoch"]: r["metric"] for r in val}


def load(ctx: Context, cfg: Config) -> Compared | str:
    """Q3's comparison over the complete tasks, from stored runs only, or what is missing."""
    loaded = load_complete_tasks(ctx, cfg)
    if isinstance(loaded, str):
        return loaded
    done, out, missing = loaded
    summ = summarize(ctx, done.comparison(), out, REFERENCE, _stability, scale=1.0)
    return Compared(done, out, summ, missing)


def blocks(ctx: Context, cfg: Config, m: Compared) -> list[Block]:
    """Q3's body: protocol, budget, the return curves and the table."""
    table = Table(
        [
            "task",
            "optimizer",
            "selected (tuning seed)",
            f"test return mean (min..max), {cfg.seeds} seeds",
            "collapses (all seeds)",
            f"gradient-norm spikes (> {SPIKE:g}x median, all seeds)",
            f"{REFERENCE} minus optimizer, paired 95% CI (return)",
            "verdict (Holm over the section, TOST margin)",
        ],
        m.summ.rows,
    )
    figure = _plot(ctx, m.cfg, m.out.runs)
    return [
        *paragraphs(protocol(cfg)),
        *missing_blocks(m.missing),
        Paragraph(
            f"Budget: harness budget `{cfg.budget}` ({_steps_text(m.out.all_runs)}); "
            f"{cfg.trials} trials per optimizer (the bench tuning protocol), finals on "
            f"{cfg.seeds} seeds; " + compute_text(m.out.all_runs)
        ),
        Image(figure, "Q3 return curves"),
        table,
    ]


def verdict(cfg: Config, m: Compared) -> Verdict:
    """The headline, and the tallies with the collapses per optimizer."""
    comp = m.cfg.comparison()
    n = len(comp.settings)
    details = (
        f"Test return of {REFERENCE}, paired over {cfg.seeds} seeds: "
        + tally_text(REFERENCE, m.summ.tally, n, "tasks")
        + ". Collapses of the training return, summed over seeds: "
        + ", ".join(
            f"{o} {_stability(m.out.runs[(s.label, o)])[0]}"
            for s in comp.settings
            for o in cfg.optimizers
            if (s.label, o) in m.out.runs
        )
        + "."
    )
    return Verdict(headline(REFERENCE, m.summ.tally, n, "tasks"), {}, details)


def _steps_text(runs: list[dict[str, Any]]) -> str:
    steps = {((r.get("info") or {}).get("task_info") or {}).get("env_steps") for r in runs}
    steps.discard(None)
    return ", ".join(f"{s:,} env steps" for s in sorted(steps)) or "env steps not recorded"


def _plot(ctx: Context, cfg: Config, runs: dict[tuple[str, str], list[dict[str, Any]]]) -> Path:
    fig, axes = new_figure(1, len(cfg.tasks), 5.0, 3.4)
    for ax, (task, *_) in zip(axes[0], cfg.tasks, strict=True):
        for o in cfg.optimizers:
            seeds = runs.get((task, o))
            if not seeds:
                continue
            curves = [_curve(ctx, r) for r in seeds]
            # Epochs every seed reached: a diverged seed ends its optimizer's line.
            epochs = sorted(set.intersection(*(set(c) for c in curves)))
            ys = np.array([[c[e] for e in epochs] for c in curves])
            bad = sum(r["status"] != "finished" for r in seeds)
            label = f"{o} ({bad} of {len(seeds)} diverged)" if bad else o
            (line,) = ax.plot(epochs, ys.mean(0), label=label, lw=1.2)
            ax.fill_between(epochs, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.12)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation return")
        ax.set_title(task, fontsize=9)
        ax.legend(fontsize=6)
    fig.suptitle(
        f"Q3: mean (band: min..max) of {cfg.seeds} seeds at each optimizer's selected lr",
        fontsize=9,
    )
    return save_figure(fig, ctx.figures / "q3_returns.png")


def protocol(cfg: Config) -> str:
    """Question and protocol."""
    tasks = ", ".join(f"`{t[0]}`" for t in cfg.tasks)
    size = f" x optimizers {', '.join(cfg.optimizers)}. " + protocol_text(
        cfg.trials, cfg.seeds, "the mean greedy return on the validation episodes"
    )
    return (
        "**Question.** Does the rule stabilise policy optimisation in partially observable "
        "environments?\n\n"
        f"**Protocol.** Recurrent PPO (LSTM actor and critic) on {tasks}{size}. The "
        "optimizer sees the raw gradient (clipping is the `sgd_clip` competitor). Metric: "
        "mean greedy return over fixed evaluation episodes; stability: collapses of the "
        "training return (a fall below half its running peak) and rollouts whose largest "
        f"policy-gradient norm exceeds {SPIKE:g}x the run's median. The test episodes "
        "select nothing. The comparison runs only because the reference holds: our agent "
        "with Adam and the RL Zoo's settings reaches 450 on `cartpole_novel` "
        "(docs/data_and_tasks.md)."
    )
