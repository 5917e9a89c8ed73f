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
from typing import Any

import numpy as np

from superlevel.study.claims import smallest_evidence
from superlevel.study.common import (
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
    Comparison,
    Setting,
    load_complete_tasks,
    run_comparison,
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
        return Comparison(
            settings, self.optimizers, self.trials, self.seeds, "quick", self.epochs
        )


def run(ctx: Context, cfg: Config) -> None:
    """Data set by data set (so an interrupted study has complete ones): every (setting,
    optimizer) tuned on seed 1, then the selected lr on every seed."""
    for task, _ in cfg.tasks:
        run_comparison(ctx, cfg.comparison((task,)), ID)


def _train_accuracy(ctx: Context, run: dict[str, Any]) -> float:
    rows = [r for r in ctx.store.epoch_metrics(run["run_id"]) if r["split"] == "train"]
    return float(rows[-1]["metric"]) if rows and rows[-1]["metric"] is not None else np.nan


def report(ctx: Context, cfg: Config) -> SectionResult:
    """The Q2 part of the report, from stored runs only."""
    protocol = _protocol(cfg)
    loaded = load_complete_tasks(ctx, cfg)
    if isinstance(loaded, str):
        return not_yet_run(ID, TITLE, protocol, loaded)
    cfg, out, missing = loaded
    if missing:  # the complete tasks are reported; say plainly which are not
        protocol += f"\n\n**Not yet run:** {missing} They are left out below."
    done = [t for t, _ in cfg.tasks]
    comp = cfg.comparison()

    def gap(runs: list[dict[str, Any]]) -> list[str]:
        g = [100 * (_train_accuracy(ctx, r) - r["test_metric"]) for r in runs]
        return [fmt(float(np.mean(g)), 3)]

    summ = summarize(ctx, comp, out, REFERENCE, gap)
    table = md_table(
        [
            "data set / condition",
            "optimizer",
            "selected lr",
            f"test accuracy % mean (min..max), {cfg.seeds} seeds",
            "generalisation gap (train - test, points)",
            f"{REFERENCE} minus optimizer, paired 95% CI (points)",
        ],
        summ.rows,
    )
    # Robustness: the drop of mean test accuracy from clean data to the worst condition.
    drops: dict[str, list[float]] = {o: [] for o in cfg.optimizers}
    for task, _ in cfg.tasks:
        for o in cfg.optimizers:
            means = [summ.values.get((f"{task} / {c}", o)) for c, _ in cfg.conditions]
            if all(m is not None for m in means):
                drops[o].append(float(means[0].mean() - min(m.mean() for m in means)))
    drop_text = ", ".join(
        f"{o} {np.mean(d):.2f}" for o, d in drops.items() if len(d) == len(cfg.tasks)
    )
    figure = _plot(ctx, cfg, summ.values)
    n = len(comp.settings)
    verdict = (
        ("" if not missing else f"On {', '.join(done)} only (the rest has not run). ")
        + f"Test accuracy of {REFERENCE}, paired over seeds: "
        + tally_text(REFERENCE, summ.tally, n, "settings")
        + f". Mean drop from clean data to the worst condition (points): {drop_text}."
    )
    claims = {}
    full = {o: float(np.mean(d)) for o, d in drops.items() if len(d) == len(cfg.tasks)}
    c4 = smallest_evidence("Q2", "drop from clean data to the worst condition", full, REFERENCE)
    if c4 is not None:
        claims["C4"] = c4
    body = "\n".join(
        [
            protocol,
            "",
            f"Budget: harness budget `quick`{_epochs_text(cfg)}; "
            f"{cfg.trials} trials per optimizer (the bench tuning protocol), finals on "
            f"{cfg.seeds} seeds; "
            f"{len(out.all_runs)} runs, {compute_seconds(out.all_runs) / 60:.1f} min of "
            f"compute. Hardware: {hardware_text(out.all_runs)}.",
            "",
            f"![Q2 accuracy per condition]({figure})",
            "",
            table,
        ]
    )
    status = "partial" if missing else "done"
    return SectionResult(ID, TITLE, status, body, verdict, claims)


def _epochs_text(cfg: Config) -> str:
    return "" if cfg.epochs is None else f", {cfg.epochs} epochs"


def _plot(ctx: Context, cfg: Config, acc: dict[tuple[str, str], np.ndarray]) -> str:
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
    save_figure(fig, ctx.figures / "q2_conditions.png")
    return "figures/q2_conditions.png"


def _protocol(cfg: Config) -> str:
    tasks = ", ".join(
        f"`{t}`" + (f" ({', '.join(f'{k}={v}' for k, v in base)})" if base else "")
        for t, base in cfg.tasks
    )
    return (
        "**Question.** Does the rule stay stable under label noise and class imbalance?\n\n"
        f"**Protocol.** Harness tasks {tasks} under {', '.join(c for c, _ in cfg.conditions)} "
        "(training split only; validation and test clean and balanced) x optimizers "
        f"{', '.join(cfg.optimizers)}. Each (setting, optimizer): {cfg.trials} "
        "log-spaced lrs over the optimizer's own range on seed 1, selected by validation "
        f"accuracy, then seeds 1..{cfg.seeds}. The test split selects nothing. The "
        "generalisation gap is the last epoch's accuracy on the training split as trained "
        "(noisy labels included, so it is negative under label noise) minus test accuracy."
    )
