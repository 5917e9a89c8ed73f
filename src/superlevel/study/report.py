"""The report writer: ``docs/study/README.md`` and ``docs/study/report.html`` from the
sections' stored results.

The report is one list of :mod:`superlevel.bench.report.render` blocks (each section's
part is its own blocks), rendered twice: Markdown and one self-contained HTML page.
Everything written is a function of the stored results and the profile: no dates, no
machine-dependent ordering, so ``--report-only`` rewrites the same bytes. The project
README quotes the study through :func:`update_readme`, which replaces the block between
:data:`BEGIN` and :data:`END` with the same claims and verdicts (never typed by hand).
"""

from __future__ import annotations

import os
from pathlib import Path

from superlevel.bench.report.render import (
    Block,
    Bullets,
    Heading,
    Paragraph,
    Table,
    to_html,
    to_markdown,
)
from superlevel.blocks import replace_block, write_atomic
from superlevel.study.claims import CLAIMS, claims_table, combine
from superlevel.study.common import Context, SectionResult
from superlevel.study.sections import section_results

README = "README.md"
HTML = "report.html"
TITLE = "The study: the paper's experiments and open questions, measured"
BEGIN = "<!-- study summary: written by `superlevel study --readme README.md`; do not edit -->"
END = "<!-- end of study summary -->"


def overview_table(sections: list[SectionResult], link: str = "") -> Table:
    """One row per section: id (linked to ``link#id``), status, verdict."""
    return Table(
        ["section", "status", "verdict"],
        [[f"[{s.id}]({link}#{s.id.lower()}) {s.title}", s.status, s.verdict] for s in sections],
    )


def plain_summary(sections: list[SectionResult]) -> list[Block]:
    """At most eight lines a reader can take away: each claim's verdict in one line with
    the section verdicts it combines, the ablation's answer, and how sure the numbers are."""
    evidence = {cid: [(s.id, s.claims[cid].verdict) for s in sections if cid in s.claims]
                for cid in CLAIMS}  # fmt: skip
    verdicts = {cid: combine([v for _, v in evidence[cid]]) for cid in CLAIMS}
    counts = {v: sum(x == v for x in verdicts.values()) for v in set(verdicts.values())}
    head = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))

    def by_section(cid: str) -> str:
        parts = ", ".join(f"{sid} {v}" for sid, v in evidence[cid])
        return f" ({parts})" if parts else ""

    lines = [f"- {cid} ({CLAIMS[cid]}): **{verdicts[cid]}**{by_section(cid)}." for cid in CLAIMS]
    ablation = next((s for s in sections if s.id == "A1" and s.status != "not yet run"), None)
    if ablation is not None:
        lines.append(f"- Ablation: {ablation.verdict.split('. ')[0].rstrip('.')}.")
    lines.append(
        "- How sure: every comparison is paired over final seeds never used for tuning, "
        "Holm-corrected per section; `inconclusive` rows say what they could have detected."
    )
    lead = f"**In short.** Of the paper's {len(CLAIMS)} claims: {head}."
    return [Paragraph(lead), Bullets([line.removeprefix("- ") for line in lines[:7]])]


def report_blocks(ctx: Context, sections: list[SectionResult]) -> list[Block]:
    """The whole report as one block list: intro, summary, claims, overview, sections."""
    blocks: list[Block] = [
        Heading(1, TITLE),
        Paragraph(
            "Written by `superlevel study --profile "
            f"{ctx.profile}`; rebuild it from the stored results with `superlevel study "
            f"--profile {ctx.profile} --report-only`. Raw results: `raw/` (the harness's "
            "SQLite store `raw/study.db` and the landscape measurements `raw/E2.json`), so "
            "every number below can be regenerated and audited, and an interrupted study "
            "resumes. The same report as one self-contained page (figures embedded): "
            f"`{HTML}`. Confidence intervals are 95% Student-t intervals of paired (per-seed "
            "or per-start) differences; verdicts are Holm-corrected within a section, and "
            "equivalence is only claimed against a stated margin (TOST), never from an "
            "interval that contains 0."
        ),
        Heading(2, "Summary"),
        *plain_summary(sections),
        Heading(2, "Claims"),
        claims_table(sections),
        Heading(2, "Sections"),
        overview_table(sections),
    ]
    for s in sections:
        blocks += [Heading(2, s.id, anchor=s.id.lower()), Heading(3, s.title), *s.blocks]
        if s.status in ("done", "partial"):
            blocks.append(Paragraph(f"**Verdict.** {s.verdict}"))
            if s.details:
                blocks.append(Paragraph(s.details))
    return blocks


def summary(ctx: Context, sections: list[SectionResult], link: str) -> str:
    """The block the project README quotes: profile, plain summary, claims, section verdicts."""
    blocks = [
        Paragraph(f"From the study's `{ctx.profile}` profile ([full report]({link})):"),
        *plain_summary(sections),
        claims_table(sections),
        overview_table(sections, link),
    ]
    return to_markdown(blocks, ctx.out).rstrip("\n")


def update_readme(readme: Path, block: str) -> None:
    """Replace the text between :data:`BEGIN` and :data:`END` of ``readme`` with ``block``.

    Raises:
        ValueError: the file lacks the markers (nothing is written).
    """
    replace_block(readme, BEGIN, END, block)


def write_report(ctx: Context, readme: Path | None = None) -> Path:
    """Write ``<out>/README.md``, ``<out>/report.html`` (the same blocks, figures embedded)
    and the figures from stored results; returns the Markdown's path.

    With ``readme``, also refresh the study block of that file (links relative to it).
    """
    ctx.out.mkdir(parents=True, exist_ok=True)
    sections = section_results(ctx)
    blocks = report_blocks(ctx, sections)
    path = ctx.out / README
    write_atomic(path, to_markdown(blocks, ctx.out))
    write_atomic(ctx.out / HTML, to_html(blocks, title="superlevel study"))
    if readme is not None:
        link = os.path.relpath(path.resolve(), readme.resolve().parent).replace(os.sep, "/")
        update_readme(readme, summary(ctx, sections, link))
    return path
