"""The study's pure pieces: paired intervals, lr widths, stability counts, claims, ids."""

from __future__ import annotations

import math

import pytest

from superlevel.study import e1, e2, e3, q3
from superlevel.study.claims import claims_table, combine
from superlevel.study.common import ClaimEvidence, SectionResult, paired_ci
from superlevel.study.profiles import get_profile
from superlevel.study.sections import parse_only


def test_paired_ci_by_hand():
    # d = (1, 2, 3): mean 2, sd 1, t_{0.975, 2} = 4.302653 -> half width 4.302653 / sqrt(3).
    p = paired_ci([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    half = 4.302652729911275 / math.sqrt(3)
    assert p.mean == pytest.approx(2.0)
    assert (p.low, p.high) == pytest.approx((2.0 - half, 2.0 + half))
    assert p.contains_zero and "no difference" in p.text()
    same = paired_ci([1.0, 1.0], [0.5, 0.5])
    assert (same.low, same.high) == (0.5, 0.5) and not same.contains_zero


def test_paired_ci_refuses_bad_input():
    with pytest.raises(ValueError, match="pairs"):
        paired_ci([1.0], [2.0])
    with pytest.raises(ValueError, match="finite"):
        paired_ci([1.0, math.inf], [0.0, 0.0])


def test_lr_width_takes_the_contiguous_block_around_the_best():
    lrs = [0.01, 0.1, 1.0, 10.0, 100.0]
    assert e1.lr_width(lrs, [1.0, 9.9, 10.0, 5.0, 9.9]) == pytest.approx(1.0)
    assert e1.lr_width(lrs, [1.0, 2.0, 10.0, 3.0, -math.inf]) == 0.0
    assert math.isnan(e1.lr_width(lrs, [-1.0] * 5))


def test_log_grid():
    assert e1.log_grid(-1, 1, 1) == (0.1, 1.0, 10.0)
    grid = e1.log_grid(-3, 1.5, 3)  # round(13.5) = 14: 15 points, 1e-3 .. 10^(14/3 - 3)
    assert len(grid) == 15 and grid[-1] == 46.42


def test_stability_counts():
    rising, spikes = e3.stability([4.0, 3.0, 3.5, 2.0, 5.0])
    assert rising == pytest.approx(2 / 4)  # 3 -> 3.5 and 2 -> 5
    assert spikes == pytest.approx(1 / 4)  # 5 > 2 x 2
    assert all(math.isnan(v) for v in e3.stability([1.0]))


def test_proportion_text_wilson():
    # 5 of 10: Wilson 95% interval [0.237, 0.763].
    assert e2.proportion_text([1] * 5 + [0] * 5) == "5/10 = 0.50 [0.24, 0.76]"


def test_claims_combine_and_table():
    assert combine([]) == "not tested"
    assert combine(["supported", "supported"]) == "supported"
    assert combine(["supported", "not supported"]) == "mixed"
    s = SectionResult("E9", "t", "done", [], "", {"C2": ClaimEvidence("supported", "x 0.1")})
    table = claims_table([s])
    c2 = next(r for r in table.rows if r[0] == "C2")
    assert c2[2] == "**supported**" and c2[3] == "x 0.1 (supported)"
    assert [r[2] for r in table.rows].count("**not tested**") == 4
    with pytest.raises(ValueError, match="verdict"):
        ClaimEvidence("maybe", "")


def test_parse_only_and_profiles():
    assert parse_only("e2, E1") == ["E1", "E2"]
    assert parse_only(None)[0] == "E1"
    with pytest.raises(ValueError, match="E7"):
        parse_only("E1,E7")
    with pytest.raises(ValueError, match="valid: tiny"):
        get_profile("huge")


def test_update_readme_replaces_only_the_block(tmp_path):
    from superlevel.study.report import BEGIN, END, update_readme

    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{BEGIN}\nold\n{END}\n\ntail\n")
    update_readme(readme, "new | table")
    assert readme.read_text() == f"# x\n\n{BEGIN}\nnew | table\n{END}\n\ntail\n"
    bare = tmp_path / "OTHER.md"
    bare.write_text("# no block\n")
    with pytest.raises(ValueError, match="has no generated block"):
        update_readme(bare, "x")
    assert bare.read_text() == "# no block\n"


def test_readme_quotes_the_committed_study():
    """The project README's study block is the committed report's claims, not hand-typed."""
    from pathlib import Path

    from superlevel.study.report import BEGIN, END

    root = Path(__file__).resolve().parents[2]
    report = (root / "docs" / "study" / "README.md").read_text()
    readme = (root / "README.md").read_text()
    block = readme[readme.index(BEGIN) : readme.index(END)]
    claims = [line for line in report.splitlines() if line.startswith("| C")]
    assert len(claims) == 5
    for line in claims:
        assert line in block


def test_gradient_spikes_counts_rollouts_far_above_the_median():
    log = [{"pg_norm": 1.0, "pg_norm_max": 2.0}] * 8
    assert q3.gradient_spikes(log) == 0
    spiky = [*log, {"pg_norm": 3.0, "pg_norm_max": 10.5}, {"pg_norm": 1.0, "pg_norm_max": 9.9}]
    assert q3.gradient_spikes(spiky) == 1  # 10.5 > 10 x median 1.0; 9.9 is not
    assert q3.gradient_spikes([{"rollout": 0, "nonfinite": 1.0}]) == 0  # no finite norms


def test_monotone_a0_is_the_end_of_the_monotone_prefix():
    lrs = (0.1, 1.0, 2.0, 5.0)
    assert e1.monotone_a0(lrs, [True, True, False, True]) == 1.0  # a later pass does not count
    assert e1.monotone_a0(lrs, [False, True, True, True]) == 0.0
    assert e1.monotone_a0(lrs, [True] * 4) == 5.0


def test_a_width_that_reaches_the_floor_is_left_out():
    lrs = (0.1, 1.0, 10.0, 100.0)
    red = [1.0, 29.0, 29.5, 2.0]
    assert e1._width_unless_floored(lrs, red, [False] * 4) == pytest.approx(1.0)
    assert e1._width_unless_floored(lrs, red, [False, False, True, False]) is None
    assert e1._width_unless_floored(lrs, red, [False, False, False, True]) == pytest.approx(1.0)


def _comparison(verdict: str):
    from superlevel.bench.stats import Comparison

    return Comparison(None, 1.0, 1.0, 0.0, verdict)  # only the verdict is read


def test_paired_tally_counts_each_verdict_per_group():
    from superlevel.study.common import Tally, paired_tally

    verdicts = {
        "relu|sgd": _comparison("higher"),
        "tanh|sgd": _comparison("inconclusive"),
        "relu|adam": _comparison("lower"),
        "tanh|adam": _comparison("lower"),
    }
    by_opt = paired_tally(verdicts, lambda k: k.split("|")[1], ["sgd", "adam", "momentum"])
    assert by_opt["sgd"] == Tally(higher=1, inconclusive=1)
    assert by_opt["adam"] == Tally(lower=2)
    assert by_opt["momentum"] == Tally()  # named groups are present with zero counts
    everything = paired_tally(verdicts)[None]
    assert everything == sum(by_opt.values(), Tally()) and everything.total == 4
    assert everything.counts(("lower", "higher")) == [2, 1]
    assert everything.phrase() == "higher in 1, lower in 2, equivalent in 0, inconclusive in 1"
    assert (
        everything.phrase(("lower", "higher"), {"lower": "fewer", "higher": "more"})
        == "fewer in 2, more in 1"
    )
    with pytest.raises(ValueError, match="'better'"):
        Tally().add("better")


def test_every_section_implements_the_contract():
    from superlevel.study.sections import SECTIONS, Section

    for sid, module in SECTIONS.items():
        assert isinstance(module, Section), sid
        assert sid == module.ID
    cfg = get_profile("tiny")["E1"]
    assert len(e1.configs(cfg)) == 4 * 2 * 3  # arms x a0 grid x (tuning seed + 2 seeds)


def test_summary_block_for_the_readme_is_markdown_without_a_trailing_newline(tmp_path):
    from superlevel.study.common import Context
    from superlevel.study.report import summary

    s = SectionResult("E9", "t", "done", [], "all good", {"C2": ClaimEvidence("supported", "x")})
    ctx = Context(store=None, out=tmp_path, profile="cpu")  # type: ignore[arg-type]
    text = summary(ctx, [s], "docs/study/README.md")
    assert text.startswith("From the study's `cpu` profile ([full report](docs/study/README.md)):")
    c2 = "- C2 (the loss decreases monotonically (dV <= 0)): **supported** (E9 supported)."
    assert c2 in text
    assert "| [E9](docs/study/README.md#e9) t | done | all good |" in text
    assert not text.endswith("\n")
