"""N2 — activations: is the rule's behaviour the same across activation functions?

A :class:`~superlevel.study.compare.Comparison` whose settings are the activations of one
harness task: every (activation, optimizer) pair gets the same number of grid points over
the optimizer's own lr range on seed 1, selected by validation accuracy, then seeds
``1..n`` at the selected lr; differences are paired over seeds against ``superlevel``.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    run_rising_fraction,
    save_figure,
)
from superlevel.study.compare import (
    Comparison,
    Setting,
    load_comparison,
    run_comparison,
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


def run(ctx: Context, cfg: Config) -> None:
    """The grid of every pair on seed 1, then the selected lr on every seed."""
    run_comparison(ctx, cfg.comparison(), ID)


def report(ctx: Context, cfg: Config) -> SectionResult:
    """The N2 part of the report, from stored runs only."""
    protocol = _protocol(cfg)
    comp = cfg.comparison()
    out = load_comparison(ctx, comp)
    if isinstance(out, str):
        return not_yet_run(ID, TITLE, protocol, out)

    def rising(runs: list[dict]) -> list[str]:
        rise = np.nanmean([run_rising_fraction(ctx.store, r["run_id"]) for r in runs])
        return [fmt(float(rise), 2)]

    summ = summarize(ctx, comp, out, REFERENCE, rising)
    table = md_table(
        [
            "activation",
            "optimizer",
            "selected lr",
            f"test accuracy % mean (min..max), {cfg.seeds} seeds",
            "rising intervals",
            f"{REFERENCE} minus optimizer, paired 95% CI (points)",
        ],
        summ.rows,
    )
    figure = _plot(ctx, cfg, summ.values)
    n = len(cfg.activations)
    verdict = (
        f"Test accuracy of {REFERENCE}, paired over seeds: "
        + tally_text(REFERENCE, summ.tally, n, "activations")
        + "."
    )
    claims = {}
    spread = {
        o: float(np.ptp([summ.values[(a, o)].mean() for a in cfg.activations]))
        for o in cfg.optimizers
        if all((a, o) in summ.values for a in cfg.activations)
    }
    c4 = smallest_evidence(
        "N2", f"spread of mean test accuracy over {n} activations", spread, REFERENCE
    )
    if c4 is not None:
        claims["C4"] = c4
    body = "\n".join(
        [
            protocol,
            "",
            f"Budget: harness budget `{cfg.budget}` of `{cfg.task}`; {cfg.trials} grid "
            f"points per optimizer on seed 1, then {cfg.seeds} seeds; {len(out.all_runs)} "
            f"runs, {compute_seconds(out.all_runs) / 60:.1f} min of compute. Hardware: "
            f"{hardware_text(out.all_runs)}.",
            "",
            f"![N2 accuracy per activation]({figure})",
            "",
            table,
        ]
    )
    return SectionResult(ID, TITLE, "done", body, verdict, claims)


def _plot(ctx: Context, cfg: Config, acc: dict[tuple[str, str], np.ndarray]) -> str:
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
    save_figure(fig, ctx.figures / "n2_activations.png")
    return "figures/n2_activations.png"


def _protocol(cfg: Config) -> str:
    return (
        "**Question.** Is the rule's behaviour the same across activation functions?\n\n"
        f"**Protocol.** Harness task `{cfg.task}` with activation "
        f"{', '.join(cfg.activations)} x optimizers {', '.join(cfg.optimizers)} (harness "
        f"defaults besides the lr). Each pair: {cfg.trials} log-spaced lrs over the "
        "optimizer's own search range (the same budget for every optimizer), run on seed 1, "
        f"selected by validation accuracy; the selected lr then runs on seeds 1..{cfg.seeds}. "
        "The test split selects nothing. *Rising intervals*: the fraction of logged "
        "intervals whose mean training loss rose."
    )
