"""The report: Markdown plus a self-contained HTML page, built only from the results store.

Three layers, composed by :func:`build_blocks`:

1. :mod:`~superlevel.bench.report.select` and :mod:`~superlevel.bench.report.tables`
   (pure): which runs are compared — one row per *configuration* (task, options,
   budget, epochs, optimizer, hyperparameters), only its seeds averaged — their
   summaries and the tables' text.
2. :mod:`~superlevel.bench.report.figures`: figures drawn from plain data (bands over
   seeds, learning-rate points, performance profiles), never from a store.
3. :mod:`~superlevel.bench.report.render`: typed blocks to Markdown and HTML.

For every *setting* (task, budget, epochs, task options) the report shows a table (test
metric mean ± std and 95% bootstrap CI over seeds, test loss, steps-to-target, time per
step, diverged runs), training curves (mean ± std band over seeds), the LR-sensitivity
plot (from grid or tuning runs, when present) and, for the super-level optimizers,
traces of the effective learning rate and the gradient norm. Across settings it draws
an AlgoPerf-style performance profile on steps-to-target. Every section states its
seeds, budget and hardware.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from superlevel.bench.report.figures import (
    Band,
    band,
    plot_curves,
    plot_lr_sensitivity,
    plot_profile,
    plot_superlevel_traces,
)
from superlevel.bench.report.render import (
    Block,
    Heading,
    Image,
    Paragraph,
    Table,
    naming,
    to_html,
    to_markdown,
)
from superlevel.bench.report.select import Config, Setting, plural, seeds_text, select
from superlevel.bench.report.tables import (
    TUNING_HEAD,
    comparison_table,
    environment_text,
    guard_text,
    lr_points,
    overview_table,
    profile_costs,
    provenance_text,
    setting_table,
    tuning_rows,
)
from superlevel.bench.stats import performance_profile
from superlevel.bench.store import Store

__all__ = ["Report", "build_blocks", "load_series", "write_report"]

# Per run: {"loss" | "grad_norm" | "lr" | "effective_lr" | "val_metric": {step: value}}.
RunSeries = dict[str, dict[int, float | None]]
_STEP_FIELDS = ("loss", "grad_norm", "lr", "effective_lr")


@dataclass
class Report:
    """Paths of a written report."""

    markdown: Path
    html: Path
    figures: list[Path] = field(default_factory=list)


def load_series(store: Store, runs: Iterable[dict[str, Any]]) -> dict[str, RunSeries]:
    """The per-step and per-epoch series of the finished ``runs``, keyed by run id."""
    out: dict[str, RunSeries] = {}
    for r in runs:
        if r["status"] != "finished" or r["run_id"] in out:
            continue
        steps = store.step_metrics(r["run_id"])
        series: RunSeries = {f: {row["step"]: row[f] for row in steps} for f in _STEP_FIELDS}
        val = [m for m in store.epoch_metrics(r["run_id"]) if m["split"] == "val"]
        series["val_metric"] = {m["step"]: m["metric"] for m in val}
        out[r["run_id"]] = series
    return out


def _band_of(cfg: Config, series: dict[str, RunSeries], name: str) -> Band | None:
    return band([series[r["run_id"]][name] for r in cfg.runs if r["run_id"] in series])


def _bands(configs: Iterable[Config], series: dict[str, RunSeries], name: str) -> dict[str, Band]:
    found = {c.label: _band_of(c, series, name) for c in configs}
    return {k: b for k, b in found.items() if b is not None}


def _intro(settings: list[Setting], n_runs: int) -> list[Block]:
    compared = [r for s in settings for c in s.compared for r in c.runs]
    budgets = sorted({f"`{s.key[1]}`" for s in settings})
    head, rows = overview_table(settings)
    blocks: list[Block] = [
        Paragraph(
            f"{len(compared)} compared runs ({n_runs} runs in the store). "
            f"Hardware: {environment_text(compared)}. {provenance_text(compared)}"
        ),
        Paragraph(
            "Protocol: `default` = the hyperparameters the runs were started with (the "
            "registry's unless overridden); `tuned` = the tuning protocol of "
            "`superlevel.bench.tune` (docs/benchmark.md): the same number of trials per "
            "optimizer over its own search space, each trained in full (or by successive halving "
            "where the tuning table's rungs say so), ranges extended while "
            "the selection sits on an edge, selection on the validation metric of a tuning "
            "seed that is never scored, finals on seeds never looked at. One row is one "
            "configuration (task, options, budget, epochs, optimizer, hyperparameters): only "
            "its seeds are averaged. A seed that diverged is **scored** with its untrained "
            "model's test metric (chance accuracy, the starting suboptimality), not dropped. "
            "The test split is never used for choices. Steps-to-target is measured at epoch "
            "ends."
        ),
        Heading(2, "Overview: test metric, mean ± std over seeds"),
        Paragraph(
            f"Seeds {seeds_text({r['seed'] for r in compared})}; budget {', '.join(budgets)}; "
            "best mean in bold; details per task below."
        ),
        Table(head, rows),
    ]
    head, rows = comparison_table(settings)
    if rows:
        blocks += [
            Heading(2, "Comparisons"),
            Paragraph(
                f"Per setting, its reference (`superlevel` where compared) minus each other "
                f"optimizer, paired over the seeds both have; a paired t interval (df = n - 1). "
                f"All {len(rows)} comparisons are one family: Holm's correction over it, for "
                "the difference tests and for the equivalence tests (TOST against the task's "
                "margin: 0.5 accuracy points, 0.1 decade of suboptimality, 25 return). "
                "`higher`/`lower`: the adjusted difference test rejects at 0.05; `equivalent "
                "within m`: the adjusted TOST rejects; otherwise `inconclusive`, with the "
                "smallest difference these seeds could have detected (power 0.8 at 0.05 / "
                'family size). A contained 0 is never read as "the same".'
            ),
            Table(head, rows),
        ]
    return blocks


def _setting_section(
    setting: Setting, series: dict[str, RunSeries], fig_dir: Path, tunings: list[dict[str, Any]]
) -> tuple[list[Block], list[Path]]:
    """A setting's heading, table, notes and figures."""
    task, budget, epochs, _ = setting.key
    compared_runs = [r for c in setting.compared for r in c.runs]
    blocks: list[Block] = [
        Heading(2, setting.title()),
        Paragraph(
            f"Seeds {seeds_text({r['seed'] for r in compared_runs})}; budget `{budget}` "
            f"({plural(epochs, 'epoch')}); hardware: {environment_text(compared_runs)}."
        ),
        Table(*setting_table(setting)),
    ]
    notes = " ".join(c.note for c in setting.rows if c.note)
    guard = guard_text(setting.compared)
    blocks += [Paragraph(t) for t in (notes, guard) if t]
    tuned = tuning_rows(setting, tunings)
    if tuned:
        blocks += [
            Paragraph(
                "Tuning: per optimizer its search (trials, rungs as trials@epochs: one rung "
                "when every trial ran in full, compute in full-run equivalents), its ranges "
                "after extension, the selection, "
                "every extension and every selection still on an edge."
            ),
            Table(TUNING_HEAD, tuned),
        ]
    slug = fig_dir / f"bench_{setting.slug()}"
    points, grid = lr_points(setting.runs)
    superlevel = [c for c in setting.compared if c.optimizer.startswith("superlevel")]
    traces = {}
    for c in superlevel:
        bands = [_band_of(c, series, f) for f in ("effective_lr", "lr", "grad_norm")]
        if all(b is not None for b in bands):
            traces[c.label] = tuple(bands)
    drawn = [
        (
            plot_curves(
                _bands(setting.compared, series, "loss"),
                _bands(setting.compared, series, "val_metric"),
                setting.metric_name,
                setting.title(),
                Path(f"{slug}_curves.png"),
            ),
            "Training loss and validation metric, mean ± std over seeds.",
        ),
        (
            plot_lr_sensitivity(
                points, setting.metric_name, task, Path(f"{slug}_lr.png"), grid=grid
            ),
            "LR sensitivity (one seed per setting).",
        ),
        (
            plot_superlevel_traces(traces, task, Path(f"{slug}_superlevel.png")),
            "Super-level optimizers: schedule a(t) (dashed), effective lr and gradient norm.",
        ),
    ]
    figures = [path for path, _ in drawn if path is not None]
    blocks += [Image(path, caption) for path, caption in drawn if path is not None]
    return blocks, figures


def _profile_section(settings: list[Setting], fig_dir: Path) -> tuple[list[Block], list[Path]]:
    costs = profile_costs(settings)
    if not costs:
        return [], []
    taus = np.logspace(0, 1.5, 200)
    path = plot_profile(
        performance_profile(costs, taus), taus, len(costs), fig_dir / "bench_profile.png"
    )
    blocks: list[Block] = [
        Heading(2, "Performance profile"),
        Paragraph(
            "AlgoPerf-style: for each task the ratio of an optimizer's median "
            "steps-to-target to the best optimizer's; rho(tau) is the fraction of "
            "tasks within a factor tau of the best (never reached = never counts). "
            "Optimizers with identical curves share one line."
        ),
        Image(path, "Performance profile on steps-to-target."),
    ]
    return blocks, [path]


def build_blocks(store: Store, out_dir: Path) -> tuple[list[Block], list[Path]]:
    """Read the store, draw the figures into ``out_dir/figures``, return the blocks.

    Selection (pure) -> series read once from the store -> figures from that data ->
    typed blocks, section by section.
    """
    runs = store.runs()
    settings = select(runs)
    blocks: list[Block] = [Heading(1, "superlevel benchmark report")]
    if not settings:
        return [*blocks, Paragraph(f"No finished runs in {store.path.name} yet.")], []
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    series = load_series(store, (r for s in settings for c in s.compared for r in c.runs))
    blocks += _intro(settings, len(runs))
    figures: list[Path] = []
    tunings = store.tunings()
    for part in [_setting_section(s, series, fig_dir, tunings) for s in settings]:
        blocks += part[0]
        figures += part[1]
    profile_blocks, profile_figures = _profile_section(settings, fig_dir)
    return blocks + profile_blocks, figures + profile_figures


def write_report(store: Store, out_dir: str | Path) -> Report:
    """Write ``report.md``, ``report.html`` and ``figures/*.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    blocks, figures = build_blocks(store, out)
    md, page = out / "report.md", out / "report.html"
    for path, text in ((md, to_markdown(blocks, out)), (page, to_html(blocks))):
        with naming(path):
            path.write_text(text, encoding="utf-8")
    return Report(md, page, figures)
