"""benchmarks/step_cost.py's training-step candidates are what their names say."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from superlevel.optim import SuperLevelSGD

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "step_cost.py"


@pytest.fixture(scope="module")
def step_cost():
    spec = importlib.util.spec_from_file_location("step_cost", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("config", ["1e3x4", "mlp:8-6-3x5"])
def test_training_candidates_are_what_they_are_named(step_cost, config):
    cands = step_cost.training_candidates(config, "cpu")
    assert list(cands) == [step_cost.BASE, step_cost.CLIP, "SuperLevelSGD", step_cost.HOOKED,
                           step_cost.HOOK_FLOOR]  # fmt: skip
    for name, cand in cands.items():
        sgd = name in (step_cost.BASE, step_cost.CLIP, step_cost.HOOK_FLOOR)
        assert type(cand.optimizer) is (torch.optim.SGD if sgd else SuperLevelSGD), name
        assert (cand.handle is not None) == (name == step_cost.HOOKED), name
    params = {name: c.optimizer.param_groups[0]["params"] for name, c in cands.items()}
    assert len({id(p) for ps in params.values() for p in ps}) == 5 * len(params[step_cost.BASE])
    times = step_cost.time_training(cands, "cpu", repeats=2, warmup=0)
    assert set(times) == set(cands)
    assert cands[step_cost.HOOKED].handle.cached == 2  # every timed norm from the hooks


def test_bad_mlp_spec_is_refused(step_cost):
    with pytest.raises(ValueError, match="784-1024-1024-10x128"):
        step_cost.parse_mlp("784x")


@pytest.mark.parametrize(
    ("during", "busy"),
    [
        ([1.9, 2.1, 2.0], False),  # only this benchmark's two threads
        ([2.3, 2.4], False),  # within the slack
        ([2.0, 3.6, 2.1], True),  # others ran during one of the runs
        ([], False),  # no sample: nothing to say it was busy
    ],
)
def test_busy_note_counts_other_jobs_not_this_one(step_cost, during, busy):
    note = step_cost.busy_note(during, threads=2, cores=2)
    assert ("other jobs were running" in note) == busy, note
    assert ("quiet" in note) != busy


def test_header_gives_the_load_before_and_after_each_run(step_cost):
    text = step_cost.header(2, 9, 30, "median", 0.7, [2.0, 2.2, 3.9])
    assert "load average 0.7 before, 2.0-3.9 after each run" in text
    assert "load up to ~1.9 besides this one" in text


def test_hook_balance_reports_both_reads_and_the_verdict(step_cost):
    def row(name, backward, step):
        return dict(config="1e3x4", name=name, backward_ms=backward, step_ms=step,
                    vs_sgd=(backward + step) / 12.0)  # fmt: skip

    rows = [row(step_cost.BASE, 10.0, 2.0), row("SuperLevelSGD", 10.0, 5.0),
            row(step_cost.HOOKED, 12.3, 2.5), row(step_cost.HOOK_FLOOR, 12.0, 2.0)]  # fmt: skip
    (line,) = step_cost.hook_balance(rows)
    assert "zero_grad+fwd+bwd +2.300 ms, step -2.500 ms: a net gain of 0.200 ms" in line
    assert "costs 2.000 ms in backward (bare hooks) against 3.000 ms in the step" in line
    assert "0.500 ms of it left with the hooks" in line
    rows[2] = row(step_cost.HOOKED, 14.0, 2.5)
    (line,) = step_cost.hook_balance(rows)
    assert "the hooks cost 1.500 ms more in backward than they save in the step" in line
