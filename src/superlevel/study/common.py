"""Pieces every section shares: the run context, section results, paired statistics, output.

Paired differences use a Student-t interval of the per-seed (or per-start) differences
rather than the harness's bootstrap: with the 3-10 pairs a section has, a percentile
bootstrap cannot be wider than the data's range and understates the uncertainty.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
        log: receives progress lines.
    """

    store: Store
    out: Path
    profile: str
    device: str = "cpu"
    data_dir: str | None = None
    checkpoint_dir: Path | None = None
    workers: int = 1
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


@dataclass
class SectionResult:
    """A section's part of the report.

    Attributes:
        id: the fixed id (``E1`` ...).
        title: its title.
        status: ``done``, ``partial`` (some of its parts have run) or ``not yet run``.
        markdown: the body (question, protocol, tables, figures), without the heading.
        verdict: one sentence computed from the numbers (or why there are none).
        claims: evidence per claim id (``C1`` ... ``C5``).
        details: the tallies behind the verdict, shown below it.
    """

    id: str
    title: str
    status: str
    markdown: str
    verdict: str
    claims: dict[str, ClaimEvidence] = field(default_factory=dict)
    details: str = ""


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


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


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
    body = f"**Status: not yet run.** {why}\n\n{protocol}\n"
    return SectionResult(section_id, title, "not yet run", body, f"Not yet run: {why}")
