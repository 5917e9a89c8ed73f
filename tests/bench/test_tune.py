"""The tuning protocol, rule by rule: equal trials, successive halving, the edge rule,
disjoint seeds, scored divergence, errors that stop it, and replay from the store."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from superlevel.bench import optimizers as registry
from superlevel.bench.optimizers import Param
from superlevel.bench.run import worker
from superlevel.bench.store import Store
from superlevel.bench.tune import (
    Incomplete,
    Protocol,
    Setting,
    TuneError,
    candidates,
    final_score,
    rung_ladder,
    tune,
    tune_settings,
)


def _narrow(monkeypatch, name: str, **space: Param) -> None:
    spec = registry.OPTIMIZERS[name]
    monkeypatch.setitem(registry.OPTIMIZERS, name, dataclasses.replace(spec, space=space))


def test_the_rung_ladder() -> None:
    assert rung_ladder(20, 9, 3) == [(2, 9), (7, 3), (20, 1)]
    assert rung_ladder(20, 16, 3) == [(2, 16), (7, 6), (20, 2)]
    assert rung_ladder(2, 9, 3) == [(1, 9), (2, 3)]  # equal rungs merged
    assert rung_ladder(1, 9, 3) == [(1, 9)]  # nothing to halve in one epoch
    assert rung_ladder(20, 9, 1) == [(20, 9)]  # halving off: every trial in full
    assert rung_ladder(20, 2, 3) == [(20, 2)]


def test_every_optimizer_gets_the_same_number_of_points() -> None:
    one = candidates({"lr": Param(1e-3, 10.0, log=True)}, 9, 0)
    assert [p["lr"] for p in one] == pytest.approx([10 ** (-3 + k / 2) for k in range(9)],
                                                   rel=1e-5)  # fmt: skip
    space = {"lr": Param(1e-3, 10.0, log=True), "decay_total": Param(0.1, 10.0, log=True)}
    two = candidates(space, 9, 0)
    assert len(two) == 9 and candidates(space, 9, 0) == two  # seeded: reproducible
    assert all(1e-3 <= p["lr"] <= 10 and 0.1 <= p["decay_total"] <= 10 for p in two)
    assert candidates(space, 9, 1) != two


def test_tuning_seed_is_never_a_final_seed() -> None:
    with pytest.raises(ValueError, match="tuning_seed 3 is one of the final seeds"):
        Protocol(seeds=5, tuning_seed=3)


def test_search_runs_on_the_tuning_seed_finals_on_fresh_seeds(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    protocol = Protocol(trials=3, seeds=2, halving=1, max_rounds=0, search="lr-grid")
    res = tune("quadratic", ["sgd", "adam"], protocol, store, epochs=2)
    for name, r in res.items():
        trials = [t for t in store.runs(tag="trial") if t["optimizer"] == name]
        finals = [store.get_run(rid) for rid in r.finals]
        assert len(trials) == 3 and {t["seed"] for t in trials} == {1001}
        assert [f["seed"] for f in finals] == [1, 2]
        assert all("trial" not in f["tags"] for f in finals)
        assert all(f["hparams"] == r.best_hparams for f in finals)
        best = min((t for t in trials if t["status"] == "finished"), key=lambda t: t["val_metric"])
        assert r.best_hparams == best["hparams"] and r.best_val == best["val_metric"]
    assert len(store.tunings()) == 2


def test_the_default_protocol_trains_every_trial_in_full(tmp_path: Path) -> None:
    # Halving judges a decaying schedule by its early progress (benchmarks/halving_bias.py):
    # it is opt-in, never the default.
    store = Store(tmp_path / "r.db")
    res = tune("quadratic", ["sgd"], Protocol(trials=3, seeds=1, max_rounds=0), store,
               epochs=4)["sgd"]  # fmt: skip
    assert res.rungs == [[4, 3]]
    statuses = [store.get_run(t["run_id"])["status"] for t in res.trials]
    assert statuses and all(st in ("finished", "diverged") for st in statuses)  # none paused


def test_successive_halving_trains_the_best_third_further(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    res = tune("quadratic", ["sgd"], Protocol(trials=9, seeds=1, halving=3, max_rounds=0), store,
               epochs=6)["sgd"]  # fmt: skip
    assert res.rungs == [[1, 9], [2, 3], [6, 1]]
    rows = [store.get_run(t["run_id"]) for t in res.trials]
    assert sum(r["status"] in ("finished", "diverged") for r in rows) <= 1 + sum(
        r["status"] == "diverged" for r in rows)  # fmt: skip
    at_1 = {t["run_id"]: t["values"].get("1") for t in res.trials}
    promoted = [t for t in res.trials if "2" in t["values"]]
    assert len(promoted) == 3
    rest = [v for k, v in at_1.items() if k not in {t["run_id"] for t in promoted}]
    worst_promoted = max(t["values"]["1"] for t in promoted)  # lower is better here
    assert all(v is None or v >= worst_promoted for v in rest)
    assert res.compute["full_runs"] == pytest.approx((9 * 1 + 3 * 1 + 1 * 4) / 6)
    assert not [p for p in (tmp_path / "checkpoints").glob("*.pt")]  # eliminated: dropped


def test_a_selection_on_an_edge_extends_the_range_until_it_is_interior(
    tmp_path: Path, monkeypatch
) -> None:
    # SGD's lr range made far too small for the quadratic: the best sits on its top edge.
    _narrow(monkeypatch, "sgd", lr=Param(1e-4, 1e-3, log=True, limits=(1e-6, 1e3)))
    store = Store(tmp_path / "r.db")
    res = tune("quadratic", ["sgd"], Protocol(trials=2, seeds=1, halving=1), store,
               epochs=2)["sgd"]  # fmt: skip
    assert res.initial_space == {"lr": [1e-4, 1e-3]}
    ups = [e for e in res.extensions if e.side == "high"]
    assert len(ups) >= 2 and ups[0].before == [1e-4, 1e-3]
    assert all(b.before[1] == a.after[1] for a, b in zip(ups, ups[1:], strict=False))
    assert all(e.kept for e in ups[:-1])  # it kept improving until the last step
    best = res.best_hparams["lr"]
    assert res.space["lr"][1] > best * 10**0.49 and not res.edges  # now interior
    assert best > 1e-3 and [e.side for e in res.extensions] == ["high"] * len(ups)


def test_an_edge_at_its_hard_limit_is_reported(tmp_path: Path, monkeypatch) -> None:
    _narrow(monkeypatch, "sgd", lr=Param(1e-4, 3e-4, log=True))  # no room to extend
    store = Store(tmp_path / "r.db")
    res = tune("quadratic", ["sgd"], Protocol(trials=2, seeds=1, halving=1), store,
               epochs=1)["sgd"]  # fmt: skip
    assert res.extensions == [] and res.edges == {"lr": "high edge at its hard limit"}


def test_a_diverged_run_is_scored_as_the_untrained_model(tmp_path: Path, monkeypatch) -> None:
    from superlevel.bench.report.select import summarize

    # An lr far too large: every trial diverges; then the defaults are the finals.
    _narrow(monkeypatch, "sgd", lr=Param(50.0, 60.0, log=True))
    store = Store(tmp_path / "r.db")
    res = tune("quadratic", ["sgd"], Protocol(trials=2, seeds=2, halving=1), store,
               epochs=1)["sgd"]  # fmt: skip
    assert res.best_val is None
    assert all(store.get_run(rid)["hparams"] == {"lr": 0.1} for rid in res.finals)
    diverged = store.runs(tag="trial")[0]
    assert diverged["status"] == "diverged" and diverged["test_metric"] is None
    (first,) = [m for m in store.epoch_metrics(diverged["run_id"])
                if m["epoch"] == 0 and m["split"] == "test"]  # fmt: skip
    assert final_score(diverged) == first["metric"] == diverged["initial_test_metric"]
    # In a table the diverged seed counts, with that score; it is not dropped.
    trials = store.runs(tag="trial")
    s = summarize(trials)
    assert s.diverged == 2 and s.scores == [final_score(r) for r in trials]


def test_a_run_that_errors_stops_the_protocol(tmp_path: Path, monkeypatch) -> None:
    def boom(*a, **kw):
        raise RuntimeError("bad data")

    monkeypatch.setattr(worker, "train", boom)
    with pytest.raises(TuneError, match=r"2 of 2 runs failed with an error.*bad data"):
        tune("quadratic", ["sgd"], Protocol(trials=2, seeds=1, halving=1),
             Store(tmp_path / "r.db"), epochs=1)  # fmt: skip


def test_the_protocol_replays_from_the_store_without_training(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    protocol = Protocol(trials=3, seeds=2, halving=3, max_rounds=1)
    settings = [Setting("quadratic", epochs=3)]
    with pytest.raises(Incomplete, match="0 of 3 runs"):
        tune_settings(settings, ["superlevel"], protocol, store, train=False)
    first = tune_settings(settings, ["superlevel"], protocol, store)
    n = store.count("runs")
    again = tune_settings(settings, ["superlevel"], protocol, store, train=False)
    assert store.count("runs") == n
    assert {k: v.to_json() for k, v in again.items()} == {k: v.to_json() for k, v in first.items()}
    assert Store(tmp_path / "r.db").count("tunings") == 1  # a replay writes nothing
