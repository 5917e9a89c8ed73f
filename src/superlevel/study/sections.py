"""The section registry: id -> module, and running the sections a profile has."""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

from superlevel.study import SECTION_IDS, a1, e1, e2, e3, n2, q1, q2, q3
from superlevel.study.common import Context, SectionResult, not_yet_run
from superlevel.study.profiles import get_profile

SECTIONS: dict[str, ModuleType] = {m.ID: m for m in (e1, e2, e3, n2, q1, q2, q3, a1)}
assert tuple(SECTIONS) == SECTION_IDS


def parse_only(text: str | None) -> list[str]:
    """``"E1,E2"`` -> ``["E1", "E2"]`` in report order; ``None`` -> every section.

    Raises:
        ValueError: an unknown id (the message lists the valid ones).
    """
    if text is None:
        return list(SECTION_IDS)
    ids = [t.strip().upper() for t in text.split(",") if t.strip()]
    bad = [i for i in ids if i not in SECTIONS]
    if bad or not ids:
        raise ValueError(
            f"unknown section id(s) {', '.join(bad) or '(none given)'}; "
            f"valid: {', '.join(SECTION_IDS)}"
        )
    return [i for i in SECTION_IDS if i in ids]


def runnable(profile: str, ids: Sequence[str]) -> list[str]:
    """The ids among ``ids`` that ``profile`` sizes and that have a runner."""
    sized = get_profile(profile)
    return [i for i in ids if i in sized and hasattr(SECTIONS[i], "run")]


def run_sections(ctx: Context, ids: Sequence[str]) -> None:
    """Run (or resume) the sections ``ids`` under ``ctx.profile``; others are reported skipped."""
    sized = get_profile(ctx.profile)
    for sid in ids:
        module = SECTIONS[sid]
        if not hasattr(module, "run"):
            ctx.log(f"{sid}: not run (see its section for why)")
            continue
        if sid not in sized:
            ctx.log(f"{sid}: not run (profile {ctx.profile} does not size it)")
            continue
        ctx.log(f"{sid}: {module.TITLE}")
        module.run(ctx, sized[sid])


def section_results(ctx: Context) -> list[SectionResult]:
    """Every section's part of the report, from stored results only."""
    sized = get_profile(ctx.profile)
    out = []
    for sid, module in SECTIONS.items():
        if sid in sized or not hasattr(module, "run"):
            out.append(module.report(ctx, sized.get(sid)))
        else:
            out.append(
                not_yet_run(
                    sid,
                    module.TITLE,
                    "",
                    f"profile `{ctx.profile}` does not size this section.",
                )
            )
    return out
