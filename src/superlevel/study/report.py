"""The report writer: ``docs/study/README.md`` from the sections' stored results.

Everything written is a function of the stored results and the profile: no dates, no
machine-dependent ordering, so ``--report-only`` rewrites the same bytes. The project
README quotes the study through :func:`update_readme`, which replaces the block between
:data:`BEGIN` and :data:`END` with the same claims and verdicts (never typed by hand).
"""

from __future__ import annotations

import os
from pathlib import Path

from superlevel.blocks import replace_block, write_atomic
from superlevel.study.claims import CLAIMS, claims_table, combine
from superlevel.study.common import Context, SectionResult, md_table
from superlevel.study.sections import section_results

README = "README.md"
BEGIN = "<!-- study summary: written by `superlevel study --readme README.md`; do not edit -->"
END = "<!-- end of study summary -->"


def overview_table(sections: list[SectionResult], link: str = "") -> str:
    """One row per section: id (linked to ``link#id``), status, verdict."""
    return md_table(
        ["section", "status", "verdict"],
        [[f"[{s.id}]({link}#{s.id.lower()}) {s.title}", s.status, s.verdict] for s in sections],
    )


def plain_summary(sections: list[SectionResult]) -> str:
    """At most eight lines a reader can take away: each claim's verdict in one line, the
    ablation's answer, and how sure the numbers are."""
    verdicts = {cid: combine([s.claims[cid].verdict for s in sections if cid in s.claims])
                for cid in CLAIMS}  # fmt: skip
    counts = {v: sum(x == v for x in verdicts.values()) for v in set(verdicts.values())}
    head = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
    lines = [f"**In short.** Of the paper's {len(CLAIMS)} claims: {head}."]
    lines += [f"- {cid} ({CLAIMS[cid]}): **{verdicts[cid]}**." for cid in CLAIMS]
    ablation = next((s for s in sections if s.id == "A1" and s.status != "not yet run"), None)
    if ablation is not None:
        lines.append(f"- Ablation: {ablation.verdict.split('. ')[0].rstrip('.')}.")
    lines.append(
        "- How sure: every comparison is paired over final seeds never used for tuning, "
        "Holm-corrected per section; `inconclusive` rows say what they could have detected."
    )
    return "\n".join(lines[:8])


def render(ctx: Context, sections: list[SectionResult]) -> str:
    """The whole report as markdown."""
    parts = [
        "# The study: the paper's experiments and open questions, measured",
        "",
        "Written by `superlevel study --profile "
        f"{ctx.profile}`; rebuild it from the stored results with `superlevel study --profile "
        f"{ctx.profile} --report-only`. Raw results: `raw/` (the harness's SQLite store "
        "`raw/study.db` and the landscape measurements `raw/E2.json`), so every number "
        "below can be regenerated and audited, and an interrupted study resumes. "
        "Confidence intervals are 95% Student-t intervals of paired (per-seed or per-start) "
        "differences; verdicts are Holm-corrected within a section, and equivalence is only "
        "claimed against a stated margin (TOST), never from an interval that contains 0.",
        "",
        "## Summary",
        "",
        plain_summary(sections),
        "",
        "## Claims",
        "",
        claims_table(sections),
        "",
        "## Sections",
        "",
        overview_table(sections),
        "",
    ]
    for s in sections:
        parts += [f"## {s.id}", "", f"### {s.title}", "", s.markdown.rstrip(), ""]
        if s.status in ("done", "partial"):
            parts += [f"**Verdict.** {s.verdict}", ""]
            if s.details:
                parts += [s.details, ""]
    return "\n".join(parts)


def summary(ctx: Context, sections: list[SectionResult], link: str) -> str:
    """The block the project README quotes: profile, claims table, section verdicts."""
    return "\n".join(
        [
            f"From the study's `{ctx.profile}` profile ([full report]({link})):",
            "",
            plain_summary(sections),
            "",
            claims_table(sections),
            "",
            overview_table(sections, link),
        ]
    )


def update_readme(readme: Path, block: str) -> None:
    """Replace the text between :data:`BEGIN` and :data:`END` of ``readme`` with ``block``.

    Raises:
        ValueError: the file lacks the markers (nothing is written).
    """
    replace_block(readme, BEGIN, END, block)


def write_report(ctx: Context, readme: Path | None = None) -> Path:
    """Write ``<out>/README.md`` (and the figures) from stored results; returns its path.

    With ``readme``, also refresh the study block of that file (links relative to it).
    """
    ctx.out.mkdir(parents=True, exist_ok=True)
    sections = section_results(ctx)
    path = ctx.out / README
    write_atomic(path, render(ctx, sections))
    if readme is not None:
        link = os.path.relpath(path.resolve(), readme.resolve().parent).replace(os.sep, "/")
        update_readme(readme, summary(ctx, sections, link))
    return path
