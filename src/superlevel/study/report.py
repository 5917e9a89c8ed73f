"""The report writer: ``docs/study/README.md`` from the sections' stored results.

Everything written is a function of the stored results and the profile: no dates, no
machine-dependent ordering, so ``--report-only`` rewrites the same bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

from superlevel.study.claims import claims_table
from superlevel.study.common import Context, SectionResult, md_table
from superlevel.study.sections import section_results

README = "README.md"


def render(ctx: Context, sections: list[SectionResult]) -> str:
    """The whole report as markdown."""
    overview = md_table(
        ["section", "status", "verdict"],
        [[f"[{s.id}](#{s.id.lower()}) {s.title}", s.status, s.verdict] for s in sections],
    )
    parts = [
        "# The study: the paper's experiments and open questions, measured",
        "",
        "Written by `superlevel study --profile "
        f"{ctx.profile}`; rebuild it from the stored results with `superlevel study --profile "
        f"{ctx.profile} --report-only`. Raw results: `raw/` (the harness's SQLite store "
        "`raw/study.db` and the landscape measurements `raw/E2.json`), so every number "
        "below can be regenerated and audited, and an interrupted study resumes. "
        "Confidence intervals are 95% Student-t intervals of paired (per-seed or per-start) "
        'differences; "no difference" means the interval contains 0.',
        "",
        "## Claims",
        "",
        claims_table(sections),
        "",
        "## Sections",
        "",
        overview,
        "",
    ]
    for s in sections:
        parts += [f"## {s.id}", "", f"### {s.title}", "", s.markdown.rstrip(), ""]
        if s.status == "done":
            parts += [f"**Verdict.** {s.verdict}", ""]
    return "\n".join(parts)


def write_report(ctx: Context) -> Path:
    """Write ``<out>/README.md`` (and the figures) from stored results; returns its path."""
    ctx.out.mkdir(parents=True, exist_ok=True)
    text = render(ctx, section_results(ctx))
    path = ctx.out / README
    tmp = path.with_name(f".{README}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
