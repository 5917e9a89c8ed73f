"""The section contract, the registry (id -> module), and running the sections a profile has.

Every section is a module that implements :class:`Section`: ``configs`` (the units of work
it runs, which ``run`` resumes over), ``run`` (measure: train or compute what is missing),
``protocol`` (question, protocol and the rules written before the numbers), ``load`` (its
numbers from stored results only, or a sentence saying what is missing), ``blocks`` (the
body as :mod:`superlevel.bench.report.render` blocks, figures drawn) and ``verdict`` (the
sentence, the claims evidence and the tallies). :func:`section_result` is the one place
that puts them together.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

from superlevel.bench.report.render import Block
from superlevel.study import SECTION_IDS, a1, e1, e2, e3, n2, q1, q2, q3
from superlevel.study.common import Context, SectionResult, Verdict, not_yet_run
from superlevel.study.profiles import get_profile


class Measured(Protocol):
    """What a section's ``load`` returns: its numbers, and which of its parts are missing
    (``""`` when none; a partial section reports the parts it has)."""

    missing: str


@runtime_checkable
class Section(Protocol):
    """The contract every section module implements (see the module docstring)."""

    ID: str
    TITLE: str

    def configs(self, cfg: Any) -> Sequence[Any]: ...

    def run(self, ctx: Context, cfg: Any) -> None: ...

    def protocol(self, cfg: Any) -> str: ...

    def load(self, ctx: Context, cfg: Any) -> Measured | str: ...

    def blocks(self, ctx: Context, cfg: Any, measured: Any) -> list[Block]: ...

    def verdict(self, cfg: Any, measured: Any) -> Verdict: ...


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
    return [i for i in ids if i in sized]


def run_sections(ctx: Context, ids: Sequence[str]) -> None:
    """Run (or resume) the sections ``ids`` under ``ctx.profile``; others are reported skipped."""
    sized = get_profile(ctx.profile)
    for sid in ids:
        module = SECTIONS[sid]
        if sid not in sized:
            ctx.log(f"{sid}: not run (profile {ctx.profile} does not size it)")
            continue
        ctx.log(f"{sid}: {module.TITLE}")
        module.run(ctx, sized[sid])


def section_result(section: Section, ctx: Context, cfg: Any) -> SectionResult:
    """One section's part of the report, from stored results only."""
    measured = section.load(ctx, cfg)
    if isinstance(measured, str):
        return not_yet_run(section.ID, section.TITLE, section.protocol(cfg), measured)
    v = section.verdict(cfg, measured)
    status = "partial" if measured.missing else "done"
    return SectionResult(section.ID, section.TITLE, status, section.blocks(ctx, cfg, measured),
                         v.text, v.claims, v.details)  # fmt: skip


def section_results(ctx: Context) -> list[SectionResult]:
    """Every section's part of the report, from stored results only."""
    sized = get_profile(ctx.profile)
    out = []
    for sid, module in SECTIONS.items():
        if sid in sized:
            out.append(section_result(module, ctx, sized[sid]))  # type: ignore[arg-type]
        else:
            why = f"profile `{ctx.profile}` does not size this section."
            out.append(not_yet_run(sid, module.TITLE, "", why))
    return out
