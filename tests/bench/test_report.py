"""Report building blocks on hand-made run records (no training)."""

from __future__ import annotations

import math

import pytest

from superlevel.bench.report import final_runs, overview_table, summarize, to_html, to_markdown


def _run(opt: str, seed: int, tags: list[str], metric: float | None = 0.9, **kw) -> dict:
    run = {
        "run_id": f"{opt}{seed}{tags}", "task": "t", "budget": "quick", "epochs": 2,
        "task_options": {}, "optimizer": opt, "seed": seed, "tags": tags,
        "status": "finished", "test_metric": metric, "test_loss": 0.3, "steps": 100,
        "train_s": 0.5, "steps_to_target": 40, "finished_at": 1.0, "hparams": {"lr": 0.1},
        "metric_name": "accuracy", "higher_is_better": 1, "target": 0.8, "env": {},
    }  # fmt: skip
    run.update(kw)
    return run


def test_final_runs_prefers_the_latest_tuned_setting() -> None:
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
    chosen = final_runs(runs)
    assert [r["hparams"]["lr"] for r in chosen["sgd"]] == [0.5, 0.5]
    assert [r["seed"] for r in chosen["adam"]] == [1]  # running and trial runs left out
    assert [r["seed"] for r in final_runs(runs, "default")["sgd"]] == [1, 2]
    assert "adam" not in final_runs(runs, "tuned")
    with pytest.raises(ValueError, match="protocol"):
        final_runs(runs, "best")


def test_summarize_counts_divergence_and_unreached_targets() -> None:
    runs = [
        _run("sgd", 1, ["default"], metric=0.8, steps_to_target=30, train_s=0.2),
        _run("sgd", 2, ["default"], metric=0.9, steps_to_target=None, train_s=0.4),
        _run("sgd", 3, ["default"], metric=None, status="diverged", steps_to_target=None),
    ]
    s = summarize(runs)
    assert s["n"] == 3 and s["diverged"] == 1 and s["reached"] == 1
    assert s["mean"] == pytest.approx(0.85) and s["std"] == pytest.approx(math.sqrt(0.005))
    assert 0.8 <= s["ci"][0] <= s["ci"][1] <= 0.9
    assert s["stt_median"] is None  # median of (30, inf, inf) is inf: not reached
    assert s["ms_per_step"] == pytest.approx(1000 * (0.002 + 0.004 + 0.005) / 3)


def test_overview_bolds_the_best_in_the_task_direction() -> None:
    hi = {"a": [_run("a", 1, ["default"], metric=0.7)], "b": [_run("b", 1, ["tuned"], 0.9)]}
    lo = {
        "a": [_run("a", 1, ["default"], metric=0.7, higher_is_better=0)],
        "b": [_run("b", 1, ["default"], metric=0.9, higher_is_better=0)],
    }
    head, rows = overview_table({("t", "quick", 2, "{}"): hi, ("u", "quick", 2, "{}"): lo})
    assert head == ["task (metric)", "a", "b"]
    assert rows[0][1] == "0.7 ± 0" and rows[0][2] == "**0.9 ± 0** (tuned)"
    assert rows[1][0] == "u (accuracy ↓)" and rows[1][1] == "**0.7 ± 0**"


def test_markdown_and_html_render_the_same_blocks(tmp_path) -> None:
    png = tmp_path / "figures" / "f.png"
    png.parent.mkdir()
    png.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    blocks = [("h", 1, "Title"), ("p", "uses `code` and **bold** <b>"),
              ("table", ["x", "y"], [["1", "2"]]), ("img", png, "cap")]  # fmt: skip
    md = to_markdown(blocks, tmp_path)
    assert md.splitlines()[0] == "# Title" and "| x | y |" in md and "![cap](figures/f.png)" in md
    page = to_html(blocks)
    assert "<code>code</code>" in page and "<b>bold</b>" in page and "&lt;b&gt;" in page
    assert "data:image/png;base64,iVBORw0KGgpmYWtl" in page


def test_guard_sentence_sums_counters_over_seeds() -> None:
    from superlevel.bench.report import _guard_text

    c1 = {"steps": 10, "violations": 3, "retries": 2, "skips": 1}
    c2 = {"steps": 10, "violations": 1, "retries": 1, "skips": 0}
    by_opt = {
        "sgd": [_run("sgd", 1, ["default"], info={})],
        "superlevel_guarded": [
            _run("superlevel_guarded", 1, ["default"], info={"guard": c1}),
            _run("superlevel_guarded", 2, ["default"], info={"guard": c2}),
        ],
    }
    assert _guard_text(by_opt) == (
        "`superlevel_guarded`: the Lyapunov check rejected 4 trial steps in 20 steps "
        "(3 retries, 1 steps skipped), summed over 2 seeds."
    )
    assert _guard_text({"sgd": by_opt["sgd"]}) == ""
