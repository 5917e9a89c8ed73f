"""Q2 — noisy and imbalanced data: does the rule stay stable when the labels lie?

A :class:`~superlevel.study.compare.Comparison` over (data set, condition) settings:
label noise (a fraction of training labels replaced at random) and class imbalance (a
long-tailed training split, largest / smallest class = ratio). Both change the *training*
split only: validation (which selects the lr) and test stay clean and balanced, so test
accuracy on the near-balanced test sets is close to balanced accuracy (MNIST's and
Fashion-MNIST's test classes hold 892..1135 and 1000 examples). The generalisation gap is
the last epoch's accuracy on the (noisy / imbalanced) training split minus test accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from superlevel.bench.report.render import Block, Image, Paragraph, Table
from superlevel.study.common import (
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
    Setting,
    headline,
    load_complete_tasks,
    missing_blocks,
    protocol_text,
    run_comparison,
    stability_evidence,
    summarize,
    tally_text,
)

ID = "Q2"
TITLE = "Noisy and imbalanced data"
REFERENCE = "superlevel"
CONDITIONS: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = (
    ("clean", ()),
    ("label noise 20%", (("label_noise", 0.2),)),
    ("label noise 40%", (("label_noise", 0.4),)),
    ("imbalance 10", (("imbalance", 10.0),)),
    ("imbalance 100", (("imbalance", 100.0),)),
)


@dataclass(frozen=True)
class Config:
    """Q2's size: data sets (task + fixed options), optimizers, grid points, seeds."""

    tasks: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]
    optimizers: tuple[str, ...]
    trials: int
    seeds: int
    epochs: int | None = None
    conditions: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = CONDITIONS

    def comparison(self, tasks: tuple[str, ...] | None = None) -> Comparison:
        """The comparison over ``tasks`` (default: all of them)."""
        settings = tuple(
            Setting(f"{task} / {label}", task, base + extra)
            for task, base in self.tasks
            if tasks is None or task in tasks
            for label, extra in self.conditions
        )
        return Comparison(settings, self.optimizers, self.trials, self.seeds, "quick", self.epochs)


def configs(cfg: Config) -> list[Comparison]:
    """One comparison per data set (all its conditions), so an interrupted study has
    complete ones."""
    return [cfg.comparison((task,)) for task, _ in cfg.tasks]


def run(ctx: Context, cfg: Config) -> None:
    """Data set by data set: every (setting, optimizer) tuned on the tuning seed, then the
    final seeds."""
    for comp in configs(cfg):
        run_comparison(ctx, comp, ID)


def _train_accuracy(ctx: Context, run: dict[str, Any]) -> float:
    rows = [r for r in ctx.store.epoch_metrics(run["run_id"]) if r["split"] == "train"]
    return float(rows[-1]["metric"]) if rows and rows[-1]["metric"] is not None else np.nan


def load(ctx: Context, cfg: Config) -> Compared | str:
    """Q2's comparison over the complete data sets (with each pair's train accuracy and
    generalisation gap), from stored runs only, or what is missing."""
    loaded = load_complete_tasks(ctx, cfg)
    if isinstance(loaded, str):
        return loaded
    done, out, missing = loaded

    def gap(runs: list[dict[str, Any]]) -> list[str]:
        done = [r for r in runs if r["status"] == "finished"]
        train = [100 * _train_accuracy(ctx, r) for r in done]
        g = [t - 100 * r["test_metric"] for t, r in zip(train, done, strict=True)]
        if not done:
            return ["-", "-"]
        return [fmt(float(np.mean(train)), 3), fmt(float(np.mean(g)), 3)]

    return Compared(done, out, summarize(ctx, done.comparison(), out, REFERENCE, gap), missing)


def blocks(ctx: Context, cfg: Config, m: Compared) -> list[Block]:
    """Q2's body: protocol, budget, the figure and the table."""
    table = Table(
        [
            "data set / condition",
            "optimizer",
            "selected (tuning seed)",
            f"test accuracy % mean (min..max), {cfg.seeds} seeds",
            "train accuracy % on the labels as trained (noisy ones included)",
            "generalisation gap (train - test, points)",
            f"{REFERENCE} minus optimizer, paired 95% CI (points)",
            "verdict (Holm over the section, TOST margin)",
        ],
        m.summ.rows,
    )
    figure = _plot(ctx, m.cfg, m.summ.values)
    return [
        *paragraphs(protocol(cfg)),
        *missing_blocks(m.missing),
        Paragraph(
            f"Budget: harness budget `quick`{_epochs_text(cfg)}; "
            f"{cfg.trials} trials per optimizer (the bench tuning protocol), finals on "
            f"{cfg.seeds} seeds; " + compute_text(m.out.all_runs)
        ),
        Image(figure, "Q2 accuracy per condition"),
        table,
    ]


def verdict(cfg: Config, m: Compared) -> Verdict:
    """The headline, the tallies with the mean drops, and the C4 evidence (drops)."""
    cfg, summ = m.cfg, m.summ
    done = [t[0] for t in cfg.tasks]
    # Robustness: the drop of mean test accuracy from clean data to the worst condition.
    drops: dict[str, list[float]] = {o: [] for o in cfg.optimizers}
    for task, *_ in cfg.tasks:
        for o in cfg.optimizers:
            means = [summ.values.get((f"{task} / {c}", o)) for c, _ in cfg.conditions]
            if all(x is not None for x in means):
                drops[o].append(float(means[0].mean() - min(x.mean() for x in means)))
    drop_text = ", ".join(
        f"{o} {np.mean(d):.2f}" for o, d in drops.items() if len(d) == len(cfg.tasks)
    )
    n = len(cfg.comparison().settings)
    details = (
        ("" if not m.missing else f"On {', '.join(done)} only (the rest has not run). ")
        + f"Test accuracy of {REFERENCE}, paired over seeds: "
        + tally_text(REFERENCE, summ.tally, n, "settings")
        + f". Mean drop from clean data to the worst condition (points): {drop_text}."
    )
    claims = {}
    # Per seed: clean accuracy minus the accuracy under the optimizer's worst condition
    # (worst by its mean), averaged over the data sets; paired by seed across optimizers.
    per_seed: dict[str, np.ndarray] = {}
    for o in cfg.optimizers:
        parts = []
        for task, *_ in cfg.tasks:
            vals = [summ.values.get((f"{task} / {c}", o)) for c, _ in cfg.conditions]
            if any(v is None for v in vals):
                break
            worst = min(range(1, len(vals)), key=lambda k, v=vals: v[k].mean())
            parts.append(vals[0] - vals[worst])
        else:
            per_seed[o] = np.mean(parts, axis=0)
    c4 = stability_evidence("Q2", "drop from clean data to the worst condition", per_seed,
                            REFERENCE, margin=0.5)  # fmt: skip
    if c4 is not None:
        claims["C4"] = c4
    return Verdict(headline(REFERENCE, summ.tally, n, "settings"), claims, details)


def _epochs_text(cfg: Config) -> str:
    return "" if cfg.epochs is None else f", {cfg.epochs} epochs"


def _plot(ctx: Context, cfg: Config, acc: dict[tuple[str, str], np.ndarray]) -> Path:
    fig, axes = new_figure(1, len(cfg.tasks), 4.6, 3.2)
    for ax, (task, _) in zip(axes[0], cfg.tasks, strict=True):
        for o in cfg.optimizers:
            ys = [acc.get((f"{task} / {c}", o)) for c, _ in cfg.conditions]
            ax.plot(
                range(len(cfg.conditions)),
                [np.nan if y is None else y.mean() for y in ys],
                marker="o",
                ms=3,
                label=o,
            )
        ax.set_xticks(range(len(cfg.conditions)), [c for c, _ in cfg.conditions], fontsize=6)
        ax.set_ylabel("test accuracy % (mean over seeds)")
        ax.set_title(task, fontsize=9)
        ax.legend(fontsize=6)
    fig.suptitle(f"Q2: {cfg.seeds} seeds at each setting's selected lr", fontsize=10)
    return save_figure(fig, ctx.figures / "q2_conditions.png")


def protocol(cfg: Config) -> str:
    """Question and protocol."""
    tasks = ", ".join(
        f"`{t}`" + (f" ({', '.join(f'{k}={v}' for k, v in base)})" if base else "")
        for t, base in cfg.tasks
    )
    return (
        "**Question.** Does the rule stay stable under label noise and class imbalance?\n\n"
        f"**Protocol.** Harness tasks {tasks} under {', '.join(c for c, _ in cfg.conditions)} "
        "(training split only; validation and test clean and balanced) x optimizers "
        f"{', '.join(cfg.optimizers)}. "
        + protocol_text(cfg.trials, cfg.seeds, "validation accuracy")
        + " The "
        "generalisation gap is the last epoch's accuracy on the training split as trained "
        "(noisy labels included, so it is negative under label noise) minus test accuracy."
    )
