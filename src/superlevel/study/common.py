"""Pieces every section shares: the run context, section results, paired statistics, output.

A section's part of the report is a list of :mod:`superlevel.bench.report.render` blocks
(:class:`SectionResult`); the paired verdicts of :func:`superlevel.bench.stats.compare_family`
are counted in one place, :class:`Tally` / :func:`paired_tally`.

Paired differences use a Student-t interval of the per-seed (or per-start) differences
rather than the harness's bootstrap: with the 3-10 pairs a section has, a percentile
bootstrap cannot be wider than the data's range and understates the uncertainty.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from superlevel.bench.report.render import Block, Paragraph
from superlevel.bench.stats import Comparison
from superlevel.bench.store import Store

#: the verdict words of the claims table
VERDICTS = ("supported", "not supported", "mixed", "not tested")


@dataclass
class Context:
    """Where a section reads and writes, and how it runs.

    Attributes:
        store: the results store every harness run goes to.
        out: the report folder (``docs/study``); raw non-harness results go in ``out/raw``.
        profile: the profile name (``tiny``, ``cpu``, ``gpu``).
        device: ``auto``, ``cpu`` or ``cuda``.
        data_dir: data folder for real data sets (``None``: env ``SUPERLEVEL_DATA``).
        checkpoint_dir: per-epoch checkpoints of interrupted runs.
        workers: worker processes for the harness (1: in this process).
        other_code: stored runs made by other code: ``refuse`` (an error), ``accept``
            or ``rerun`` (:func:`superlevel.bench.run.run_many`).
        log: receives progress lines.
    """

    store: Store
    out: Path
    profile: str
    device: str = "cpu"
    data_dir: str | None = None
    checkpoint_dir: Path | None = None
    workers: int = 1
    other_code: str = "refuse"
    log: Callable[[str], None] = print

    @property
    def raw(self) -> Path:
        """Folder of the raw results that are not harness runs (committed with the report)."""
        return self.out / "raw"

    @property
    def figures(self) -> Path:
        return self.out / "figures"


@dataclass(frozen=True)
class ClaimEvidence:
    """What one section says about one claim of the claims table."""

    verdict: str
    number: str

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


@dataclass(frozen=True)
class Verdict:
    """What a section concludes from its numbers.

    Attributes:
        text: one sentence computed from the numbers.
        claims: evidence per claim id (``C1`` ... ``C5``).
        details: the tallies behind the sentence, shown below it.
    """

    text: str
    claims: dict[str, ClaimEvidence] = field(default_factory=dict)
    details: str = ""


@dataclass
class SectionResult:
    """A section's part of the report.

    Attributes:
        id: the fixed id (``E1`` ...).
        title: its title.
        status: ``done``, ``partial`` (some of its parts have run) or ``not yet run``.
        blocks: the body (question, protocol, tables, figures) as render blocks, without
            the heading.
        verdict: one sentence computed from the numbers (or why there are none).
        claims: evidence per claim id (``C1`` ... ``C5``).
        details: the tallies behind the verdict, shown below it.
    """

    id: str
    title: str
    status: str
    blocks: list[Block]
    verdict: str
    claims: dict[str, ClaimEvidence] = field(default_factory=dict)
    details: str = ""


#: the verdicts of :func:`superlevel.bench.stats.compare_family`, in the order tallies list them
VERDICT_ORDER = ("higher", "lower", "equivalent", "inconclusive")


@dataclass
class Tally:
    """How many paired comparisons came out each way (:data:`VERDICT_ORDER`)."""

    higher: int = 0
    lower: int = 0
    equivalent: int = 0
    inconclusive: int = 0

    def add(self, verdict: str) -> None:
        """Count one comparison's verdict.

        Raises:
            ValueError: ``verdict`` is not one of :data:`VERDICT_ORDER`.
        """
        if verdict not in VERDICT_ORDER:
            raise ValueError(f"verdict must be one of {VERDICT_ORDER}, got {verdict!r}")
        setattr(self, verdict, getattr(self, verdict) + 1)

    def __add__(self, other: Tally) -> Tally:
        return Tally(*(getattr(self, v) + getattr(other, v) for v in VERDICT_ORDER))

    @property
    def total(self) -> int:
        return sum(self.counts())

    def counts(self, order: Sequence[str] = VERDICT_ORDER) -> list[int]:
        """The counts in ``order``."""
        return [getattr(self, v) for v in order]

    def phrase(
        self, order: Sequence[str] = VERDICT_ORDER, words: Mapping[str, str] | None = None
    ) -> str:
        """``higher in a, lower in b, equivalent in c, inconclusive in d`` (in ``order``,
        each verdict named by ``words`` where given)."""
        words = words or {}
        return ", ".join(f"{words.get(v, v)} in {getattr(self, v)}" for v in order)


def paired_tally(
    verdicts: Mapping[str, Comparison],
    group: Callable[[str], Hashable] = lambda name: None,
    groups: Iterable[Hashable] = (),
) -> dict[Hashable, Tally]:
    """Count the verdicts of a :func:`~superlevel.bench.stats.compare_family` result per
    group: ``group(name)`` of each comparison's name; every key of ``groups`` is present
    (zero counts included). With the default ``group`` everything counts under ``None``."""
    out: dict[Hashable, Tally] = {g: Tally() for g in groups}
    for name, c in verdicts.items():
        out.setdefault(group(name), Tally()).add(c.verdict)
    return out


@dataclass(frozen=True)
class Paired:
    """Mean of per-pair differences ``d_i = a_i - b_i`` with a 95% t interval."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def contains_zero(self) -> bool:
        return self.low <= 0.0 <= self.high

    def text(self, digits: int = 3) -> str:
        """``+0.12 [0.05, 0.19]`` or ``... (no difference)`` when the interval holds 0."""
        s = f"{self.mean:+.{digits}g} [{self.low:+.{digits}g}, {self.high:+.{digits}g}]"
        return s + (" (no difference)" if self.contains_zero else "")


def paired_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Paired:
    """Mean and ``level`` Student-t interval of the paired differences ``a_i - b_i``.

    ``mean(d) +- t_{(1+level)/2, n-1} * sd(d) / sqrt(n)``; with identical differences the
    interval is the point itself.

    Raises:
        ValueError: lengths differ, fewer than two pairs, or a value is not finite.
    """
    from scipy import stats

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(a) != len(b) or d.size < 2:
        raise ValueError(f"need >= 2 pairs of equal length, got {len(a)} and {len(b)}")
    if not np.all(np.isfinite(d)):
        raise ValueError(f"paired values must be finite, got differences {d.tolist()}")
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        return Paired(mean, mean, mean, int(d.size))
    half = float(stats.t.ppf((1 + level) / 2, d.size - 1)) * sd / math.sqrt(d.size)
    return Paired(mean, mean - half, mean + half, int(d.size))


def rising_fraction(losses: Sequence[float]) -> float:
    """Fraction of consecutive logged losses ``l_k -> l_{k+1}`` with ``l_{k+1} > l_k``.

    NaN for fewer than two values or a non-finite one (a diverged run).
    """
    x = np.asarray(losses, dtype=float)
    if x.size < 2 or not np.all(np.isfinite(x)):
        return math.nan
    return float(np.mean(np.diff(x) > 0))


def run_rising_fraction(store: Store, run_id: str) -> float:
    """:func:`rising_fraction` of a stored run's window-mean training losses."""
    return rising_fraction([r["loss"] for r in store.step_metrics(run_id)])


def fmt(x: float | None, digits: int = 3) -> str:
    """A number for a table: ``-`` for missing, ``g`` format otherwise."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}g}"


def paragraphs(text: str) -> list[Block]:
    """``text`` as one :class:`Paragraph` per blank-line-separated part."""
    return [Paragraph(p.strip()) for p in text.split("\n\n") if p.strip()]


def hardware_text(runs: Sequence[dict[str, Any]]) -> str:
    """The distinct machines the runs used, e.g. ``cpu: AMD EPYC ... (2 cores), torch 2.13``."""
    seen = sorted(
        {
            f"{e.get('device', '?')}: {e.get('device_name', '?')} "
            f"({e.get('cpu_count', '?')} cores, {e.get('torch_threads', '?')} torch thread(s)), "
            f"torch {e.get('torch', '?')}"
            for e in (r.get("env") or {} for r in runs)
            if e
        }
    )
    return "; ".join(seen) if seen else "unknown"


def compute_seconds(runs: Sequence[dict[str, Any]]) -> float:
    """Sum of the stored wall times of ``runs`` (compute spent, not the study's wall time)."""
    return float(sum(r.get("wall_s") or 0.0 for r in runs))


def compute_text(runs: Sequence[dict[str, Any]]) -> str:
    """``"N runs, M min of compute. Hardware: ..."``: what every section says it cost."""
    return (f"{len(runs)} runs, {compute_seconds(runs) / 60:.1f} min of compute. "
            f"Hardware: {hardware_text(runs)}.")  # fmt: skip


def save_figure(fig: Any, path: Path) -> Path:
    """Save ``fig`` as a PNG without metadata that varies between runs, and close it."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)
    return path


def new_figure(nrows: int, ncols: int, width: float = 4.0, height: float = 3.0) -> tuple[Any, Any]:
    """A matplotlib figure with a grid of axes (Agg backend, no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    w, h = width * ncols, height * nrows
    fig, axes = plt.subplots(nrows, ncols, figsize=(w, h), squeeze=False)
    # Fixed margins in inches (a layout engine would double the cost of every figure).
    fig.subplots_adjust(
        left=0.75 / w, right=1 - 0.2 / w, bottom=0.6 / h, top=1 - 0.6 / h, wspace=0.4, hspace=0.5
    )
    return fig, axes


def not_yet_run(section_id: str, title: str, protocol: str, why: str) -> SectionResult:
    """The part of a section that has no stored results: its protocol and why."""
    body = [Paragraph(f"**Status: not yet run.** {why}"), *paragraphs(protocol)]
    return SectionResult(section_id, title, "not yet run", body, f"Not yet run: {why}")
