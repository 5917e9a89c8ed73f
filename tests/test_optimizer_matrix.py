"""One test matrix over every registered competitor: the same checks for all of them."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from superlevel.bench.optimizers import OPTIMIZERS, Param, Stepper, get_optimizer
from superlevel.bench.tasks import UnknownNameError

NAMES = sorted(OPTIMIZERS)
EXPECTED = {
    "sgd", "momentum", "nesterov", "adam", "adamw", "sgdr", "sgd_expdecay", "sgd_clip",
    "superlevel", "superlevel_momentum", "superlevel_guarded",
    "sgd_clip_expdecay", "ngd_expdecay", "adam_damped",
}  # fmt: skip


def _problem(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small, well-conditioned least-squares problem (full batch, deterministic)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 8, generator=g)
    w_true = 0.25 * torch.randn(8, 1, generator=g)  # near the init: Adam (lr 1e-3) gets there too
    y = x @ w_true
    torch.manual_seed(seed)
    model = nn.Linear(8, 1)
    return model, x, y


def _closure(stepper: Stepper, model: nn.Module, x: torch.Tensor, y: torch.Tensor, calls: list):
    def closure() -> torch.Tensor:
        calls.append(1)
        stepper.optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    return closure


def _build(name: str, model: nn.Module, steps: int = 1) -> Stepper:
    return get_optimizer(name).build(model.parameters(), steps_per_epoch=steps, epochs=1)


def test_registry_is_complete() -> None:
    assert set(OPTIMIZERS) == EXPECTED


@pytest.mark.parametrize("name", NAMES)
def test_defaults_and_search_space_are_documented_and_consistent(name: str) -> None:
    spec = OPTIMIZERS[name]
    assert spec.name == name and spec.description
    assert isinstance(spec.space["lr"], Param) and spec.space["lr"].log
    for key, p in spec.space.items():
        assert key in spec.defaults, f"{name}: searched {key} has no default"
        assert p.low <= spec.defaults[key] <= p.high, f"{name}: default {key} outside its range"


@pytest.mark.parametrize("name", NAMES)
def test_steps_and_loss_falls(name: str) -> None:
    model, x, y = _problem()
    stepper = _build(name, model, steps=300)
    calls: list = []
    closure = _closure(stepper, model, x, y, calls)
    with torch.no_grad():
        initial = nn.functional.mse_loss(model(x), y).item()
    first = stepper.step(closure)
    # The returned loss is the closure's, computed before the update.
    assert first.item() == pytest.approx(initial, rel=1e-6)
    for _ in range(299):
        loss = stepper.step(closure)
    assert len(calls) >= 300  # the closure runs at least once per step
    with torch.no_grad():
        final = nn.functional.mse_loss(model(x), y).item()
    assert math.isfinite(loss.item())
    assert final < 0.5 * initial, f"{name}: loss {initial:.4g} -> {final:.4g}"
    stats = stepper.stats()
    assert set(stats) == {"grad_norm", "lr", "effective_lr"}
    for key, value in stats.items():
        assert value.dim() == 0 and math.isfinite(value.item()), (key, value)
    assert 0 < stats["effective_lr"].item() <= stats["lr"].item() + 1e-12


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_continues_identically(name: str) -> None:
    model_a, x, y = _problem(1)
    a = _build(name, model_a, steps=5)  # short cycles: the schedulers' state matters
    for _ in range(7):
        a.step(_closure(a, model_a, x, y, []))
    model_b = copy.deepcopy(model_a)
    b = _build(name, model_b, steps=5)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    for _ in range(6):
        la = a.step(_closure(a, model_a, x, y, []))
        lb = b.step(_closure(b, model_b, x, y, []))
        assert torch.equal(la, lb)
    for pa, pb in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    if a.guard is not None:  # the guard's counters travel with the state too
        assert a.guard.counters["steps"] == 13 and b.guard.counters == a.guard.counters


def test_unknown_optimizer_and_hyperparameter_are_named() -> None:
    with pytest.raises(UnknownNameError, match=r"'adamm'.*valid:.*Did you mean 'adam'"):
        get_optimizer("adamm")
    with pytest.raises(ValueError, match=r"no hyperparameter 'betas'"):
        get_optimizer("adam").resolve({"betas": 1})
    with pytest.raises(ValueError, match="not finite"):
        get_optimizer("sgd").resolve({"lr": float("nan")})
    with pytest.raises(ValueError, match="must be a number"):
        get_optimizer("sgd").resolve({"lr": "fast"})
    with pytest.raises(ValueError, match="must be an integer"):
        get_optimizer("superlevel_guarded").resolve({"max_retries": 1.5})
    with pytest.raises(ValueError, match="true or false"):
        get_optimizer("nesterov").resolve({"nesterov": 1})
    # One run, whatever the spelling of a number: lr=1 is lr=1.0.
    assert get_optimizer("sgd").resolve({"lr": 1}) == {"lr": 1.0}
    assert isinstance(get_optimizer("sgd").resolve({"lr": 1})["lr"], float)


def test_decay_total_sets_the_final_learning_rate() -> None:
    # a(T) = lr * exp(-decay_total) after T = total_steps steps, for both exponential decays.
    for name in ("sgd_expdecay", "superlevel"):
        model, x, y = _problem(2)
        stepper = get_optimizer(name).build(
            model.parameters(), {"lr": 0.1, "decay_total": 2.0}, steps_per_epoch=10, epochs=2
        )
        for _ in range(20):
            stepper.step(_closure(stepper, model, x, y, []))
        lr_next = stepper.optimizer.param_groups[0]["lr"]
        if name == "superlevel":
            last = stepper.stats()["lr"].item()  # a(t) of the last step, t = 19
            assert last == pytest.approx(0.1 * math.exp(-2.0 * 19 / 20), rel=1e-5)
        else:
            assert float(lr_next) == pytest.approx(0.1 * math.exp(-2.0), rel=1e-6)


def test_clip_reports_pre_clip_norm_and_scaled_effective_lr() -> None:
    model, x, y = _problem(3)
    with torch.no_grad():
        model.weight.mul_(30)  # a large gradient, so clipping is active
    stepper = get_optimizer("sgd_clip").build(model.parameters(), {"lr": 0.1, "max_norm": 1.0})
    stepper.step(_closure(stepper, model, x, y, []))
    s = stepper.stats()
    assert s["grad_norm"].item() > 1.0
    assert s["effective_lr"].item() == pytest.approx(0.1 / (s["grad_norm"].item() + 1e-6))


def test_param_grid_and_validation() -> None:
    assert Param(1e-3, 1e-1, log=True).grid(3) == pytest.approx([1e-3, 1e-2, 1e-1])
    assert Param(0.0, 1.0).grid(3) == pytest.approx([0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="low < high"):
        Param(1.0, 1.0)
    with pytest.raises(ValueError, match="low > 0"):
        Param(0.0, 1.0, log=True)
    with pytest.raises(ValueError, match="grid points"):
        Param(1e-3, 1.0, log=True).grid(0)


def _one_step(name: str, hp: dict, scale: float = 30.0) -> tuple[nn.Module, dict, torch.Tensor]:
    """One step from a large gradient; the params before, the gradient it saw."""
    model, x, y = _problem(4)
    with torch.no_grad():
        model.weight.mul_(scale)
    stepper = get_optimizer(name).build(model.parameters(), hp, steps_per_epoch=10, epochs=2)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    model.zero_grad()
    nn.functional.mse_loss(model(x), y).backward()
    raw = torch.cat([p.grad.flatten() for p in model.parameters()]).clone()
    stepper.step(_closure(stepper, model, x, y, []))
    return model, before, raw


def _moved(model: nn.Module, before: dict) -> torch.Tensor:
    return torch.cat([(p.detach() - before[k]).flatten() for k, p in model.named_parameters()])


def test_ablation_competitors_take_the_steps_they_are_named_for() -> None:
    # Normalised GD: every step has length lr (the decay starts after the first step).
    model, before, raw = _one_step("ngd_expdecay", {"lr": 0.3, "decay_total": 1.0})
    assert float(_moved(model, before).norm()) == pytest.approx(0.3, rel=1e-5)
    # Hard clip + decay: the step is lr * g * min(1, c / ||g||).
    model, before, raw = _one_step("sgd_clip_expdecay",
                                   {"lr": 0.3, "decay_total": 1.0, "max_norm": 0.5})  # fmt: skip
    expected = -0.3 * raw * min(1.0, 0.5 / (float(raw.norm()) + 1e-6))
    assert torch.allclose(_moved(model, before), expected, rtol=1e-5, atol=1e-7)
    # Adam on damped gradients: its first step is lr * sign(g) whatever the damping.
    model, before, raw = _one_step("adam_damped", {"lr": 0.01, "decay_total": 1.0})
    assert torch.allclose(_moved(model, before), -0.01 * torch.sign(raw), atol=1e-6)


def test_a_variant_fixes_hyperparameters_the_protocol_does_not_tune() -> None:
    spec = get_optimizer("superlevel@norm_scale=10")
    assert spec.defaults["norm_scale"] == 10.0 and "norm_scale" not in spec.space
    assert list(spec.space) == ["lr", "decay_total"]
    stepper = spec.build(nn.Linear(2, 1).parameters())
    assert stepper.optimizer.defaults["norm_scale"] == 10.0
    for bad, message in (("superlevel@norm_scale=-1", "norm_scale=-1.0"),
                         ("superlevel@lr=1", "the lr cannot be fixed"),
                         ("superlevel@nope=1", "no hyperparameter 'nope'"),
                         ("superlevel@norm_scale", "base@key=value")):  # fmt: skip
        with pytest.raises(Exception, match=message):
            get_optimizer(bad)
