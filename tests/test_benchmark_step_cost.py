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
