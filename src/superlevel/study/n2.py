"""N2 — activations: is the rule's behaviour the same across activation functions?

A :class:`~superlevel.study.compare.Comparison` whose settings are the activations of one
harness task: every (activation, optimizer) pair is tuned with the bench protocol (the same
number of trials over the optimizer's own search space on the tuning seed, selected by
validation accuracy), then runs the final seeds ``1..n``; differences are paired over seeds
against ``superlevel``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from superlevel.bench.report.render import Block, Image, Paragraph, Table
from superlevel.study.common import (
    Context,
    Verdict,
    compute_text,
    fmt,
    new_figure,
    paragraphs,
    run_rising_fraction,
    save_figure,
)
from superlevel.study.compare import (
    Compared,
    Comparison,
    Setting,
    headline,
    load_comparison,
    protocol_text,
    run_comparison,
    stability_evidence,
    summarize,
    tally_text,
)

ID = "N2"
TITLE = "Activations"
REFERENCE = "superlevel"


@dataclass(frozen=True)
class Config:
    """N2's size: task, activations, optimizers, trials per optimizer, seeds."""

    activations: tuple[str, ...]
    optimizers: tuple[str, ...]
    trials: int
    seeds: int
    task: str = "digits_mlp"
    budget: str = "quick"
    epochs: int | None = None

    def comparison(self) -> Comparison:
        return Comparison(
            tuple(Setting(a, self.task, (("activation", a),)) for a in self.activations),
            self.optimizers,
            self.trials,
            self.seeds,
            self.budget,
            self.epochs,
        )


def configs(cfg: Config) -> list[Comparison]:
    """The one comparison N2 tunes and finishes (every activation is a setting of it)."""
    return [cfg.comparison()]


def run(ctx: Context, cfg: Config) -> None:
    """The tuning of every pair on the tuning seed, then the final seeds."""
    for comp in configs(cfg):
        run_comparison(ctx, comp, ID)


def load(ctx: Context, cfg: Config) -> Compared | str:
    """N2's comparison from stored runs only (with each pair's rising fraction), or what
    is missing."""
    comp = cfg.comparison()
    out = load_comparison(ctx, comp)
    if isinstance(out, str):
        return out

    def rising(runs: list[dict]) -> list[str]:
        rise = np.nanmean([run_rising_fraction(ctx.store, r["run_id"]) for r in runs])
        return [fmt(float(rise), 2)]

    return Compared(cfg, out, summarize(ctx, comp, out, REFERENCE, rising))


def blocks(ctx: Context, cfg: Config, m: Compared) -> list[Block]:
    """N2's body: protocol, budget, the figure and the table."""
    table = Table(
        [
            "activation",
            "optimizer",
            "selected (tuning seed)",
            f"test accuracy % mean (min..max), {cfg.seeds} seeds",
            "rising intervals",
            f"{REFERENCE} minus optimizer, paired 95% CI (points)",
            "verdict (Holm over the section, TOST margin)",
        ],
        m.summ.rows,
    )
    figure = _plot(ctx, cfg, m.summ.values)
    return [
        *paragraphs(protocol(cfg)),
        Paragraph(
            f"Budget: harness budget `{cfg.budget}` of `{cfg.task}`; {cfg.trials} "
            f"trials per optimizer on the tuning seed, then {cfg.seeds} seeds; "
            + compute_text(m.out.all_runs)
        ),
        Image(figure, "N2 accuracy per activation"),
        table,
    ]


def verdict(cfg: Config, m: Compared) -> Verdict:
    """The headline, the tallies per competitor and the C4 evidence (activation spread)."""
    summ = m.summ
    n = len(cfg.activations)
    details = (
        f"Test accuracy of {REFERENCE}, paired over seeds: "
        + tally_text(REFERENCE, summ.tally, n, "activations")
        + "."
    )
    claims = {}
    # Per seed: the spread (max - min) of test accuracy over the activations.
    per_seed = {
        o: np.ptp(np.stack([summ.values[(a, o)] for a in cfg.activations]), axis=0)
        for o in cfg.optimizers
        if all((a, o) in summ.values for a in cfg.activations)
    }
    c4 = stability_evidence("N2", f"spread of test accuracy over {n} activations", per_seed,
                            REFERENCE, margin=0.5)  # fmt: skip
    if c4 is not None:
        claims["C4"] = c4
    return Verdict(headline(REFERENCE, summ.tally, n, "activations"), claims, details)


def _plot(ctx: Context, cfg: Config, acc: dict[tuple[str, str], np.ndarray]) -> Path:
    fig, axes = new_figure(1, 1, 7.0, 3.2)
    ax = axes[0][0]
    width = 0.8 / len(cfg.optimizers)
    for k, o in enumerate(cfg.optimizers):
        xs, ys, lo, hi = [], [], [], []
        for i, a in enumerate(cfg.activations):
            if (a, o) in acc:
                x = acc[(a, o)]
                xs.append(i + (k - (len(cfg.optimizers) - 1) / 2) * width)
                ys.append(x.mean())
                lo.append(x.mean() - x.min())
                hi.append(x.max() - x.mean())
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", ms=3, capsize=2, label=o)
    ax.set_xticks(range(len(cfg.activations)), list(cfg.activations))
    ax.set_ylabel("test accuracy % (mean, min..max)")
    ax.legend(fontsize=6, ncol=3)
    ax.set_title(f"N2: {cfg.task}, {cfg.seeds} seeds at the selected lr", fontsize=9)
    return save_figure(fig, ctx.figures / "n2_activations.png")


def protocol(cfg: Config) -> str:
    """Question and protocol."""
    return (
        "**Question.** Is the rule's behaviour the same across activation functions?\n\n"
        f"**Protocol.** Harness task `{cfg.task}` with activation "
        f"{', '.join(cfg.activations)} x optimizers {', '.join(cfg.optimizers)} (harness "
        "defaults besides the searched hyperparameters). "
        + protocol_text(cfg.trials, cfg.seeds, "validation accuracy")
        + " *Rising intervals*: the fraction of logged "
        "intervals whose mean training loss rose."
    )
