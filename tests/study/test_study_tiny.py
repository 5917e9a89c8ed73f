"""`superlevel study --profile tiny` end to end: runs, resumes, and rebuilds byte for byte."""

from __future__ import annotations

import hashlib
import html
import re
from pathlib import Path

from superlevel.bench.store import Store
from superlevel.cli import main
from superlevel.study import SECTION_IDS
from superlevel.study.common import Context
from superlevel.study.sections import parse_only, run_sections


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix != ".db"
    }


def _part(text: str, start: str, stop: str) -> str:
    """``text`` from ``start`` to the next ``stop`` after it (or the end)."""
    i = text.index(start)
    j = text.find(stop, i + len(start))
    return text[i : j if j >= 0 else len(text)]


def _check_html_has_the_tables(markdown: str, page: str) -> None:
    """Each section's part of report.html has the tables of its Markdown part, with the
    same header cells, and its figures embedded."""
    for sid in SECTION_IDS:
        md = _part(markdown, f"\n## {sid}\n", "\n## ")
        part = _part(page, f'<h2 id="{sid.lower()}">{sid}</h2>', "<h2")
        lines = md.splitlines()
        heads = [lines[k - 1] for k, line in enumerate(lines) if line.startswith("|---")]
        assert heads, f"{sid} has no table"
        assert part.count("<table>") == len(heads), sid
        for head in heads:
            for cell in head.strip("| ").split(" | "):
                if not re.search(r"[`*\\[]", cell):  # cells without inline markup
                    assert f"<th>{html.escape(cell)}</th>" in part, (sid, cell)
        assert part.count('<img src="data:image/png;base64,') == md.count("](figures/"), sid


def test_tiny_study_runs_resumes_and_rebuilds(tmp_path, capsys):
    out = tmp_path / "study"
    args = ["study", "--profile", "tiny", "--out", str(out)]
    args += ["--checkpoint-dir", str(tmp_path / "ck")]
    assert main(args) == 0
    text = (out / "README.md").read_text()
    assert "## Claims" in text and "| C5 |" in text
    for sid in ("E1", "E2", "E3", "N2", "Q1", "Q2", "Q3", "A1"):
        assert f"## {sid}" in text
    summary = text[text.index("## Summary") : text.index("## Claims")]
    c2 = next(line for line in summary.splitlines() if line.startswith("- C2"))
    assert "(E1 " in c2 and ", E3 " in c2  # the claim's verdict names the sections it combines
    a1 = text[text.index("## A1") :]
    assert "more than clipping plus decay on" in a1 and "vs hard clip + decay" in a1
    assert "superlevel@norm_scale=10" in a1
    e3 = text[text.index("## E3") : text.index("## N2")]
    assert "sharpness x effective lr / 2 (median)" in e3  # measured on the final models
    q3 = text[text.index("## Q3") :]
    assert "collapses (all seeds)" in q3 and "Test return of superlevel" in q3
    assert "**Verdict.**" in text
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<title>superlevel study</title>" in page
    _check_html_has_the_tables(text, page)
    assert (out / "figures" / "e2_phase.png").stat().st_size > 0
    assert (out / "figures" / "q3_returns.png").stat().st_size > 0
    with Store(out / "raw" / "study.db") as store:
        n_runs = store.count("runs")
        statuses = {r["status"] for r in store.runs()}
    assert n_runs > 0 and statuses <= {"finished", "diverged", "paused"}
    first = _digest(out)

    # Running the sections again finds everything stored: no new run, no new E2 cell.
    e2_raw = (out / "raw" / "E2.json").read_bytes()
    with Store(out / "raw" / "study.db") as store:
        ctx = Context(store, out, "tiny", checkpoint_dir=tmp_path / "ck", log=lambda _: None)
        run_sections(ctx, parse_only(None))
        assert store.count("runs") == n_runs
    assert (out / "raw" / "E2.json").read_bytes() == e2_raw

    # --report-only from the stored results alone rewrites the same bytes (HTML included).
    assert "report.html" in first
    (out / "README.md").unlink()
    (out / "report.html").unlink()
    for fig in (out / "figures").iterdir():
        fig.unlink()
    assert main([*args, "--report-only"]) == 0
    assert _digest(out) == first


def test_cli_errors(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["study", "--profile", "tiny", "--only", "E9", "--out", str(out)]) == 2
    assert "unknown section id(s) E9" in capsys.readouterr().err
    assert main(["study", "--profile", "tiny", "--report-only", "--out", str(out)]) == 2
    assert "no stored results" in capsys.readouterr().err
    assert not out.exists()
