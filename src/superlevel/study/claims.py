"""The claims table at the top of the report: each claim, its verdict, its numbers.

A claim's verdict combines what the sections found: one verdict when they agree,
``mixed`` when they disagree, ``not tested`` when no section that has run speaks to it.
"""

from __future__ import annotations

from collections.abc import Sequence

from superlevel.bench.report.render import Table
from superlevel.study.common import SectionResult

CLAIMS: dict[str, str] = {
    "C1": "the level sets stay connected along training",
    "C2": "the loss decreases monotonically (dV <= 0)",
    "C3": "it avoids poor minima",
    "C4": "it is stable across conditions and hyperparameters",
    "C5": "it matches or beats AdamW and SGDR",
}

#: which sections would speak to each claim (named when none of them has run)
SOURCES: dict[str, str] = {
    "C1": "E2 (and barriers on real networks)",
    "C2": "E1, E3",
    "C3": "E2",
    "C4": "E1, E3, N2",
    "C5": "Q1",
}


def combine(verdicts: Sequence[str]) -> str:
    """One verdict from several: the common one, ``mixed`` if they differ, else ``not tested``."""
    distinct = sorted(set(verdicts))
    if not distinct:
        return "not tested"
    return distinct[0] if len(distinct) == 1 else "mixed"


def claims_table(sections: Sequence[SectionResult]) -> Table:
    """The claims table from the sections' evidence."""
    rows = []
    for cid, text in CLAIMS.items():
        ev = [(s.id, s.claims[cid]) for s in sections if cid in s.claims]
        verdict = combine([e.verdict for _, e in ev])
        numbers = "; ".join(f"{e.number} ({e.verdict})" for _, e in ev)
        if not ev:
            numbers = f"no section that tests it has run ({SOURCES[cid]})"
        rows.append([cid, text, f"**{verdict}**", numbers])
    return Table(["claim", "the paper says", "verdict", "evidence"], rows)
