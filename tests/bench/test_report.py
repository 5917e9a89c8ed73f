"""Report building blocks on hand-made run records (no training)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from superlevel.bench.report.figures import band, profile_figure
from superlevel.bench.report.render import Heading, Image, Paragraph, Table, to_html, to_markdown
from superlevel.bench.report.select import configurations, select, summarize
from superlevel.bench.report.tables import guard_text, overview_table, setting_table


def _run(opt: str, seed: int, tags: list[str], metric: float | None = 0.9, **kw) -> dict:
    run = {
        "run_id": f"{opt}{seed}{tags}{kw.get('hparams')}", "task": "t", "budget": "quick",
        "epochs": 2, "task_options": {}, "optimizer": opt, "seed": seed, "tags": tags,
        "status": "finished", "test_metric": metric, "test_loss": 0.3, "steps": 100,
        "train_s": 0.5, "steps_to_target": 40, "finished_at": 1.0, "hparams": {"lr": 0.1},
        "metric_name": "accuracy", "higher_is_better": 1, "target": 0.8, "env": {},
        "info": {},
    }  # fmt: skip
    run.update(kw)
    return run


def test_compared_configuration_is_the_latest_tuned_one_with_a_note() -> None:
    runs = [
        _run("sgd", 1, ["default"]),
        _run("sgd", 2, ["default"]),
        _run("sgd", 1, ["tuned"], hparams={"lr": 0.5}, finished_at=5.0),
        _run("sgd", 2, ["tuned"], hparams={"lr": 0.5}, finished_at=6.0),
        _run("sgd", 1, ["tuned"], hparams={"lr": 0.2}, finished_at=3.0),  # an older tuning
        _run("adam", 1, ["default"]),
        _run("adam", 2, ["default"], status="running"),
        _run("adam", 3, ["trial"]),
    ]
    rows, compared = configurations(runs)
    assert [(c.optimizer, c.protocol, c.seeds) for c in compared] == [
        ("adam", "default", [1]),  # running and trial runs left out
        ("sgd", "tuned", [1, 2]),
    ]
    assert compared[1].hparams == {"lr": 0.5} and "tuned 2 times" in compared[1].note
    assert [(c.optimizer, c.protocol, c.hparams["lr"]) for c in rows] == [
        ("adam", "default", 0.1),
        ("sgd", "tuned", 0.5),
        ("sgd", "default", 0.1),  # for reference, its own row
    ]


def test_configurations_with_different_hyperparameters_are_never_pooled() -> None:
    # Two `bench run --hp lr=...` calls under the same tag: two rows, each over its seeds.
    runs = [
        _run("sgd", s, ["default"], metric=m, hparams={"lr": lr, "momentum": 0.0})
        for lr, m in ((0.01, 0.9), (1.0, 0.1))
        for s in (1, 2)
    ]
    (setting,) = select(runs)
    assert [(c.label, c.seeds) for c in setting.compared] == [
        ("sgd (lr=0.01)", [1, 2]),
        ("sgd (lr=1)", [1, 2]),
    ]
    head, rows = setting_table(setting)
    assert head[:4] == ["optimizer", "protocol", "hyperparameters", "seeds"]
    assert [r[:5] for r in rows] == [
        ["sgd", "default", "lr=0.01", "1,2", "0.9 ± 0"],
        ["sgd", "default", "lr=1", "1,2", "0.1 ± 0"],
    ]
    head, rows = overview_table([setting])
    assert head == ["task (metric)", "sgd (lr=0.01)", "sgd (lr=1)"]
    assert rows[0][1:] == ["**0.9 ± 0**", "0.1 ± 0"]
    # Another budget or task option is another setting, never pooled either.
    other = [_run("sgd", 1, ["default"], task_options={"subset": 10}), _run("sgd", 1, ["default"])]
    assert sorted(s.key[3] for s in select(other)) == ['{"subset": 10}', "{}"]
    _, rows = overview_table(select(other))  # the overview tells the two settings apart
    assert sorted(r[0] for r in rows) == [
        "t (budget quick, 2 epochs) (accuracy ↑)",
        't (budget quick, 2 epochs, options {"subset": 10}) (accuracy ↑)',
    ]


def test_summarize_counts_divergence_and_unreached_targets() -> None:
    runs = [
        _run("sgd", 1, ["default"], metric=0.8, steps_to_target=30, train_s=0.2),
        _run("sgd", 2, ["default"], metric=0.9, steps_to_target=None, train_s=0.4),
        _run(
            "sgd",
            3,
            ["default"],
            metric=None,
            status="diverged",
            steps_to_target=None,
            initial_test_metric=0.1,
        ),  # the untrained model's accuracy: its score
    ]
    s = summarize(runs)
    assert s.n == 3 and s.diverged == 1 and s.reached == 1
    assert s.scores == [0.8, 0.9, 0.1]  # the diverged seed counts, it is not dropped
    assert s.mean == pytest.approx(0.6) and s.std == pytest.approx(math.sqrt(0.19))
    half = 4.302652729911275 * math.sqrt(0.19) / math.sqrt(3)  # t_{0.975, 2}
    assert s.ci == pytest.approx((0.6 - half, 0.6 + half))
    assert s.stt_median is None  # median of (30, inf, inf) is inf: not reached
    assert s.ms_per_step == pytest.approx(1000 * (0.002 + 0.004 + 0.005) / 3)


def test_overview_bolds_the_best_in_the_task_direction() -> None:
    hi = [_run("a", 1, ["default"], metric=0.7), _run("b", 1, ["tuned"], 0.9)]
    lo = [
        _run("a", 1, ["default"], metric=0.7, higher_is_better=0, task="u"),
        _run("b", 1, ["default"], metric=0.9, higher_is_better=0, task="u"),
    ]
    head, rows = overview_table(select(hi + lo))
    assert head == ["task (metric)", "a", "b"]
    assert rows[0][1] == "0.7 ± 0" and rows[0][2] == "**0.9 ± 0** (tuned)"
    assert rows[1][0] == "u (accuracy ↓)" and rows[1][1] == "**0.7 ± 0**"


def test_one_epoch_is_singular_in_titles() -> None:
    (one,) = select([_run("sgd", 1, ["default"], epochs=1)])
    assert one.title() == "t (budget quick, 1 epoch)"
    (two,) = select([_run("sgd", 1, ["default"])])
    assert two.title() == "t (budget quick, 2 epochs)"


def test_bands_keep_the_steps_every_seed_has() -> None:
    b = band([{0: 1.0, 1: 2.0, 2: 3.0}, {1: 4.0, 2: None}])
    assert b.x.tolist() == [1, 2] and b.mean.tolist() == [3.0, 3.0]
    assert b.std.tolist() == [1.0, 0.0]
    assert band([]) is None and band([{0: 1.0}, {1: 1.0}]) is None


def test_profile_never_hides_a_line_under_another() -> None:
    taus = np.logspace(0, 1, 5)
    zero = np.zeros(5)
    profile = {
        "adam": np.ones(5),
        "sgd": zero,
        "momentum": zero.copy(),
        "superlevel": np.r_[0, 0, 1, 1, 1],
    }
    fig = profile_figure(profile, taus, 1)
    (ax,) = fig.axes
    labels = [line.get_label() for line in ax.get_lines()]
    # The two curves that are 0 everywhere share one line and both names.
    assert sorted(labels) == ["adam", "momentum = sgd (never reached)", "superlevel"]
    styles = {(str(line.get_linestyle()), line.get_linewidth()) for line in ax.get_lines()}
    assert len(styles) == 3  # no two lines drawn alike


def test_markdown_and_html_render_the_same_blocks(tmp_path) -> None:
    png = tmp_path / "figures" / "f.png"
    png.parent.mkdir()
    png.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    blocks = [Heading(1, "Title"), Paragraph("uses `code` and **bold** <b>"),
              Table(["x", "y"], [["1", "2"]]), Image(png, "cap")]  # fmt: skip
    md = to_markdown(blocks, tmp_path)
    assert md.splitlines()[0] == "# Title" and "| x | y |" in md and "![cap](figures/f.png)" in md
    page = to_html(blocks)
    assert "<code>code</code>" in page and "<b>bold</b>" in page and "&lt;b&gt;" in page
    assert "data:image/png;base64,iVBORw0KGgpmYWtl" in page
    with pytest.raises(TypeError, match="not a report block"):
        to_markdown([("h", 1, "old tuple")], tmp_path)


def test_guard_sentence_sums_counters_over_seeds() -> None:
    c1 = {"steps": 10, "violations": 3, "retries": 2, "skips": 1}
    c2 = {"steps": 10, "violations": 1, "retries": 1, "skips": 0}
    runs = [
        _run("sgd", 1, ["default"]),
        _run("superlevel_guarded", 1, ["default"], info={"guard": c1}),
        _run("superlevel_guarded", 2, ["default"], info={"guard": c2}),
    ]
    _, compared = configurations(runs)
    assert guard_text(compared) == (
        "`superlevel_guarded`: the Lyapunov check rejected 4 trial steps in 20 steps "
        "(3 retries, 1 steps skipped), summed over 2 seeds."
    )
    assert guard_text(compared[:1]) == ""


def test_lists_anchors_links_and_italics_render_in_both(tmp_path) -> None:
    from superlevel.bench.report.render import Bullets

    blocks = [
        Heading(2, "E1", anchor="e1"),
        Paragraph("*final f - f\\*(x)*: see [E1](#e1); a * b stays, `*code*` too"),
        Bullets(["one **two**", "three"]),
    ]
    md = to_markdown(blocks, tmp_path)
    assert md == (
        "## E1\n\n*final f - f\\*(x)*: see [E1](#e1); a * b stays, `*code*` too\n\n"
        "- one **two**\n- three\n"
    )
    page = to_html(blocks, title="the study")
    assert "<title>the study</title>" in page and '<h2 id="e1">E1</h2>' in page
    assert (
        '<p><i>final f - f*(x)</i>: see <a href="#e1">E1</a>; a * b stays, '
        "<code>*code*</code> too</p>"
    ) in page
    assert "<ul><li>one <b>two</b></li><li>three</li></ul>" in page
    assert "<title>superlevel benchmark</title>" in to_html([])  # the bench's page title
