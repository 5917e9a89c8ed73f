"""The competitor registry: every optimizer the benchmark compares, behind one step interface.

Each :class:`OptimizerSpec` declares documented default hyperparameters, a tuning search
space and a builder. The builder returns a :class:`Stepper`, the one abstraction the runner
trains with: ``stepper.step(closure) -> loss``. That single call hides the differences
between plain optimizers, gradient clipping (clip, then step), learning-rate schedulers
(stepped once per optimizer step) and the Lyapunov guard (which may call the closure
several times).

Decay rates are given per *run*, not per step, so that one default fits every budget:
``decay_total = beta * total_steps``, i.e. the learning rate ends the run at
``lr * exp(-decay_total)``; the builder converts it to the per-step ``beta``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from superlevel.bench.registry import ConfigError, lookup

Closure = Callable[[], torch.Tensor]


@dataclass(frozen=True)
class Param:
    """One dimension of a search space: a range, the step it is extended by, hard limits.

    Attributes:
        low: lower end of the range (inclusive).
        high: upper end (inclusive).
        log: the range is read in ``log10(value)`` (learning rates, decays, norms).
        integer: the value is an integer.
        step: how far the range is extended when the selection lands on its edge, and
            how close to an end counts as "on the edge": in decades when ``log`` (default
            0.5, a factor ``sqrt(10)``), else in the value's units (default 1).
        limits: the hard limits no extension passes (default: the range itself, so a
            range without limits is never extended).
    """

    low: float
    high: float
    log: bool = False
    integer: bool = False
    step: float | None = None
    limits: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"search range needs low < high, got [{self.low}, {self.high}]")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-uniform range needs low > 0, got {self.low}")
        lo, hi = self.hard_limits
        if not lo <= self.low < self.high <= hi:
            raise ValueError(f"range [{self.low}, {self.high}] lies outside its limits {lo, hi}")
        if not self.extension_step > 0:
            raise ValueError(f"extension step must be > 0, got {self.step}")

    @property
    def hard_limits(self) -> tuple[float, float]:
        return self.limits if self.limits is not None else (self.low, self.high)

    @property
    def extension_step(self) -> float:
        if self.step is not None:
            return self.step
        return 0.5 if self.log else 1.0

    def _scale(self, value: float) -> float:
        return math.log10(value) if self.log else float(value)

    def grid(self, points: int) -> list[float]:
        """``points`` values spread evenly (in log space when ``log``) from low to high."""
        if points < 1:
            raise ValueError(f"grid points must be >= 1, got {points}")
        if points == 1:
            return [self.low]
        a, b = self._scale(self.low), self._scale(self.high)
        return [self._value(a + (b - a) * i / (points - 1)) for i in range(points)]

    def _value(self, x: float, digits: int = 6) -> float:
        v = 10**x if self.log else x
        return round(v) if self.integer else float(f"{v:.{digits}g}")

    def at(self, u: float) -> float:
        """The value at fraction ``u`` in ``[0, 1]`` of the range (in log space when ``log``),
        to 3 significant digits (integers: rounded), for quasi-random points."""
        a, b = self._scale(self.low), self._scale(self.high)
        return self._value(a + (b - a) * min(max(u, 0.0), 1.0), digits=3)

    def edge(self, value: float) -> str | None:
        """``"low"`` / ``"high"`` when ``value`` lies less than one step from that end of the
        range (the optimum may lie beyond it), else ``None``."""
        tol = 0.01 * self.extension_step  # rounding of grid values must not move them
        x = self._scale(value)
        to_low, to_high = x - self._scale(self.low), self._scale(self.high) - x
        near = [(d, side) for d, side in ((to_low, "low"), (to_high, "high"))
                if d < self.extension_step - tol]  # fmt: skip
        return min(near)[1] if near else None  # in a range narrower than a step: the nearer

    def extended(self, side: str) -> Param | None:
        """The range moved out by one step at ``side`` (clipped to the hard limits), or
        ``None`` when that end is at its limit already."""
        lo, hi = self.hard_limits
        step = self.extension_step
        if side == "low":
            if self.low <= lo:
                return None
            new = max(self._value(self._scale(self.low) - step), lo)
            return replace(self, low=new)
        if side == "high":
            if self.high >= hi:
                return None
            new = min(self._value(self._scale(self.high) + step), hi)
            return replace(self, high=new)
        raise ValueError(f"side must be 'low' or 'high', got {side!r}")

    def text(self) -> str:
        """``[0.001, 10] (log, step 0.5 decade, limits [1e-05, 1000])``."""
        scale = f"log, step {self.extension_step:g} decade" if self.log else (
            f"step {self.extension_step:g}")  # fmt: skip
        lo, hi = self.hard_limits
        return f"[{self.low:g}, {self.high:g}] ({scale}, limits [{lo:g}, {hi:g}])"


@dataclass(frozen=True)
class Domain:
    """The values a hyperparameter may take: an interval, each end open or closed.

    Attributes:
        low, high: the ends (``-inf`` / ``inf`` for none).
        low_open, high_open: the end itself is excluded.
        integer: only whole numbers.
    """

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below and (not self.integer or value == int(value))

    def __str__(self) -> str:
        left = "(" if self.low_open or self.low == -math.inf else "["
        right = ")" if self.high_open or self.high == math.inf else "]"
        return f"{left}{self.low:g}, {self.high:g}{right}"


_POSITIVE = Domain(0.0, low_open=True)
_NON_NEGATIVE = Domain(0.0)
_UNIT = Domain(0.0, 1.0, high_open=True)  # momentum, betas: [0, 1)

# The domain of every numeric hyperparameter of the registry, by name (one place: the
# same name means the same thing for every optimizer).
DOMAINS: dict[str, Domain] = {
    "lr": _POSITIVE,
    "momentum": _UNIT,
    "weight_decay": _NON_NEGATIVE,
    "beta1": _UNIT,
    "beta2": _UNIT,
    "eps": _POSITIVE,
    "T_0": _POSITIVE,  # epochs to the first restart
    "T_mult": Domain(1.0, integer=True),
    "eta_min_ratio": Domain(0.0, 1.0),
    "decay_total": _NON_NEGATIVE,
    "max_norm": _POSITIVE,
    "tol": _NON_NEGATIVE,
    "shrink": Domain(0.0, 1.0, low_open=True, high_open=True),
    "max_retries": Domain(0.0, integer=True),
}


def _lr_of(optimizer: torch.optim.Optimizer) -> torch.Tensor:
    lr = optimizer.param_groups[0]["lr"]
    return lr.detach().clone() if isinstance(lr, torch.Tensor) else torch.tensor(float(lr))


def _grad_norm(params: list[nn.Parameter]) -> torch.Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    return torch.nn.utils.get_total_norm(grads)


class Stepper:
    """One optimizer step, uniform across competitors: ``step(closure) -> loss``.

    The closure zero-grads, computes the loss, calls ``backward`` and returns the loss.

    Args:
        optimizer: the torch optimizer doing the update.
        params: the parameters it updates (for gradient norms and clipping).
        scheduler: optional LR scheduler, stepped once after every optimizer step.
        max_norm: when set, ``clip_grad_norm_(params, max_norm)`` runs before the step.
        guard: optional object with ``step(closure) -> loss`` (the Lyapunov guard) that
            performs the whole step instead of ``optimizer.step``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        params: Iterable[nn.Parameter],
        *,
        scheduler: Any = None,
        max_norm: float | None = None,
        guard: Any = None,
    ) -> None:
        self.optimizer = optimizer
        self.params = list(params)
        self.scheduler = scheduler
        self.max_norm = max_norm
        self.guard = guard
        self._clip_norm: torch.Tensor | None = None

    def step(self, closure: Closure) -> torch.Tensor:
        """Run one training step and return the loss the closure computed (before the update)."""
        if self.guard is not None:
            loss = self.guard.step(closure)
        else:
            with torch.enable_grad():
                loss = closure()
            if self.max_norm is not None:
                self._clip_norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_norm)
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.detach()

    def stats(self) -> dict[str, torch.Tensor]:
        """0-dim tensors ``grad_norm``, ``lr`` and ``effective_lr`` of the last step.

        ``effective_lr`` is the length of the step per unit gradient: ``lr`` for plain SGD
        and Adam (nominal), ``lr * min(1, max_norm / ||g||)`` after clipping, and the
        optimizer's own value (``a(t) / (1 + ||g||)``) for the super-level optimizer.
        """
        own = getattr(self.optimizer, "stats", None)
        if callable(own):
            s = own()
            return {
                "grad_norm": s["grad_norm"].detach().float().cpu(),
                "lr": s["lr"].detach().float().cpu(),
                "effective_lr": s["effective_lr"].detach().float().cpu(),
            }
        lr = _lr_of(self.optimizer).float().cpu()
        if self._clip_norm is not None:
            norm = self._clip_norm.detach().float().cpu()
            scale = torch.clamp(self.max_norm / (norm + 1e-6), max=1.0)
            return {"grad_norm": norm, "lr": lr, "effective_lr": lr * scale}
        return {"grad_norm": _grad_norm(self.params).float().cpu(), "lr": lr, "effective_lr": lr}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: optimizer and scheduler state, guard counters."""
        counters = getattr(self.guard, "counters", None)
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "guard": None if counters is None else dict(counters),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.guard is not None and state.get("guard") is not None:
            self.guard.counters.update(state["guard"])


@dataclass(frozen=True)
class BuildContext:
    """What a builder may know about the run: its length (to turn per-run rates per-step)
    and the model's buffers (BatchNorm statistics), which a guard must restore with the
    params when it rejects a step."""

    steps_per_epoch: int
    epochs: int
    buffers: tuple[torch.Tensor, ...] = ()

    @property
    def total_steps(self) -> int:
        """Optimizer steps in the whole run."""
        return max(1, self.steps_per_epoch * self.epochs)


Builder = Callable[[list[nn.Parameter], dict[str, Any], BuildContext], Stepper]


@dataclass(frozen=True)
class OptimizerSpec:
    """A registered competitor.

    Attributes:
        name: registry name (``bench run --optimizers NAME``).
        description: one line: what it is and what its defaults mean.
        defaults: default hyperparameters (used by ``bench run`` without tuning).
        space: tuning search space; names not in it keep their default.
        builder: ``builder(params, hparams, ctx) -> Stepper``.
    """

    name: str
    description: str
    defaults: dict[str, Any]
    space: dict[str, Param]
    builder: Builder = field(repr=False)

    def __post_init__(self) -> None:
        numeric = [k for k, v in self.defaults.items() if not isinstance(v, bool)]
        missing = sorted(set(numeric) - set(DOMAINS))
        if missing:
            raise ValueError(f"optimizer {self.name!r}: no domain for {missing}")
        self.resolve(self.defaults)  # the defaults lie in their domains

    def resolve(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults updated with ``overrides``, each checked against its :data:`DOMAINS` entry.

        Raises:
            ConfigError: an unknown name, a value of the wrong type or outside its domain.
        """
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            raise ConfigError(
                f"optimizer {self.name!r} has no hyperparameter {unknown[0]!r}; "
                f"valid: {', '.join(sorted(self.defaults))}"
            )
        hp = dict(self.defaults)
        for key, value in overrides.items():
            hp[key] = _coerce(self.name, key, value, self.defaults[key])
        if hp.get("nesterov") and hp.get("momentum") == 0:  # torch's SGD refuses it
            raise ConfigError(f"optimizer {self.name!r}: Nesterov momentum needs momentum > 0")
        return hp

    def build(
        self,
        params: Iterable[nn.Parameter],
        hparams: Mapping[str, Any] | None = None,
        *,
        steps_per_epoch: int = 1,
        epochs: int = 1,
        buffers: Iterable[torch.Tensor] = (),
    ) -> Stepper:
        """Build the stepper for ``params`` with resolved hyperparameters.

        ``buffers``: the model's buffers (``model.buffers()``), for steppers that undo a
        step (the Lyapunov guard restores them with the params).
        """
        if steps_per_epoch < 1 or epochs < 1:
            raise ValueError(
                f"need steps_per_epoch >= 1 and epochs >= 1, got {steps_per_epoch}, {epochs}"
            )
        ctx = BuildContext(steps_per_epoch=steps_per_epoch, epochs=epochs, buffers=tuple(buffers))
        return self.builder(list(params), self.resolve(hparams), ctx)


def _coerce(opt: str, key: str, value: Any, default: Any) -> Any:
    """``value`` in the type of ``default`` (``lr=1`` and ``lr=1.0`` are one run), in its domain."""
    bad = f"hyperparameter {key}={value!r} of {opt!r}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{bad} must be true or false")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{bad} must be a number")
        if not math.isfinite(value):
            raise ConfigError(f"{bad} is not finite")
        if isinstance(default, int) and value != int(value):
            raise ConfigError(f"{bad} must be an integer")
        domain = DOMAINS[key]
        if value not in domain:
            kind = "an integer " if domain.integer else ""
            raise ConfigError(f"{bad} must be {kind}in {domain}")
        return int(value) if isinstance(default, int) else float(value)
    return value


def _per_step(decay_total: float, ctx: BuildContext) -> float:
    """``beta = decay_total / total_steps`` so that ``lr`` ends at ``lr * exp(-decay_total)``."""
    return decay_total / ctx.total_steps


def _sgd(params: list[nn.Parameter], hp: dict[str, Any], ctx: BuildContext) -> Stepper:
    opt = torch.optim.SGD(
        params,
        lr=hp["lr"],
        momentum=hp.get("momentum", 0.0),
        nesterov=hp.get("nesterov", False),
        weight_decay=hp.get("weight_decay", 0.0),
    )
    return Stepper(opt, params)


def _adam(params: list[nn.Parameter], hp: dict[str, Any], ctx: BuildContext) -> Stepper:
    opt = torch.optim.Adam(params, lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"])
    return Stepper(opt, params)


def _adamw(params: list[nn.Parameter], hp: dict[str, Any], ctx: BuildContext) -> Stepper:
    opt = torch.optim.AdamW(
        params,
        lr=hp["lr"],
        betas=(hp["beta1"], hp["beta2"]),
        eps=hp["eps"],
        weight_decay=hp["weight_decay"],
    )
    return Stepper(opt, params)


def _sgdr(params: list[nn.Parameter], hp: dict[str, Any], ctx: BuildContext) -> Stepper:
    opt = torch.optim.SGD(params, lr=hp["lr"], momentum=hp["momentum"])
    # T_0 is in epochs (fractions allowed); the scheduler is stepped once per optimizer step.
    t0 = max(1, round(hp["T_0"] * ctx.steps_per_epoch))
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        opt, T_0=t0, T_mult=int(hp["T_mult"]), eta_min=hp["eta_min_ratio"] * hp["lr"]
    )
    return Stepper(opt, params, scheduler=sched)


def _sgd_expdecay(params: list[nn.Parameter], hp: dict[str, Any], ctx: BuildContext) -> Stepper:
    opt = torch.optim.SGD(params, lr=hp["lr"])
    # a(t) = lr * exp(-beta t): ExponentialLR with gamma = exp(-beta), stepped every step.
    gamma = math.exp(-_per_step(hp["decay_total"], ctx))
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=gamma)
    return Stepper(opt, params, scheduler=sched)


def _sgd_clip(params: list[nn.Parameter], hp: dict[str, Any], ctx: BuildContext) -> Stepper:
    opt = torch.optim.SGD(params, lr=hp["lr"])
    return Stepper(opt, params, max_norm=hp["max_norm"])


def _superlevel_opt(
    params: list[nn.Parameter], hp: dict[str, Any], ctx: BuildContext
) -> torch.optim.Optimizer:
    from superlevel.optim import SuperLevelSGD

    return SuperLevelSGD(
        params,
        lr=hp["lr"],
        decay=_per_step(hp["decay_total"], ctx),
        momentum=hp.get("momentum", 0.0),
    )


def _superlevel(params: list[nn.Parameter], hp: dict[str, Any], ctx: BuildContext) -> Stepper:
    return Stepper(_superlevel_opt(params, hp, ctx), params)


def _superlevel_guarded(
    params: list[nn.Parameter], hp: dict[str, Any], ctx: BuildContext
) -> Stepper:
    from superlevel.stability import LyapunovGuard

    opt = _superlevel_opt(params, hp, ctx)
    guard = LyapunovGuard(
        opt,
        tol=hp["tol"],
        shrink=hp["shrink"],
        max_retries=hp["max_retries"],
        buffers=ctx.buffers or None,  # a rejected step leaves BatchNorm statistics alone
    )
    return Stepper(opt, params, guard=guard)


def _lr(low: float, high: float) -> Param:
    """A learning-rate range: log, extended by half a decade up to ``[1e-6, 1e3]``."""
    return Param(low, high, log=True, limits=(1e-6, 1e3))


_LR_SGD = _lr(1e-3, 3.0)
_LR_MOM = _lr(1e-4, 1.0)
_LR_ADAM = _lr(1e-5, 1e-1)
# The super-level step length is below a(t) (it is a(t) * ||g|| / (1 + ||g||)), so its
# useful lr range sits higher than plain SGD's.
_LR_SL = _lr(1e-3, 10.0)
# lr ends the run at lr * exp(-decay_total): from 0.9 lr (0.1) to 4.5e-5 lr (10).
_DECAY = Param(0.1, 10.0, log=True, limits=(1e-3, 100.0))
_WEIGHT_DECAY = Param(1e-4, 1e-1, log=True, limits=(1e-6, 10.0))
_MAX_NORM = Param(0.01, 10.0, log=True, limits=(1e-4, 1e3))
# SGDR: the first cycle in epochs (a factor 2 per step) and the growth of the cycles.
_T_0 = Param(0.25, 8.0, log=True, step=math.log10(2), limits=(1 / 64, 256.0))
_T_MULT = Param(1, 2, integer=True, limits=(1, 4))

_ADAM_DEFAULTS = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}

OPTIMIZERS: dict[str, OptimizerSpec] = {
    spec.name: spec
    for spec in [
        OptimizerSpec("sgd", "plain SGD, lr=0.1", {"lr": 0.1}, {"lr": _LR_SGD}, _sgd),
        OptimizerSpec(
            "momentum",
            "SGD with heavy-ball momentum 0.9, lr=0.01 (effective step lr/(1-m) = 0.1)",
            {"lr": 0.01, "momentum": 0.9},
            {"lr": _LR_MOM},
            _sgd,
        ),
        OptimizerSpec(
            "nesterov",
            "SGD with Nesterov momentum 0.9, lr=0.01",
            {"lr": 0.01, "momentum": 0.9, "nesterov": True},
            {"lr": _LR_MOM},
            _sgd,
        ),
        OptimizerSpec(
            "adam",
            "Adam, lr=1e-3, betas (0.9, 0.999)",
            dict(_ADAM_DEFAULTS),
            {"lr": _LR_ADAM},
            _adam,
        ),
        OptimizerSpec(
            "adamw",
            "AdamW, lr=1e-3, decoupled weight decay 0.01",
            {**_ADAM_DEFAULTS, "weight_decay": 0.01},
            {"lr": _LR_ADAM, "weight_decay": _WEIGHT_DECAY},
            _adamw,
        ),
        OptimizerSpec(
            "sgdr",
            "SGD + momentum 0.9 with cosine warm restarts (SGDR), lr=0.01, first cycle T_0=1 epoch",
            {"lr": 0.01, "momentum": 0.9, "T_0": 1.0, "T_mult": 1, "eta_min_ratio": 0.0},
            {"lr": _LR_MOM, "T_0": _T_0, "T_mult": _T_MULT},
            _sgdr,
        ),
        OptimizerSpec(
            "sgd_expdecay",
            "SGD with standard exponential decay lr*exp(-beta t), ends at lr*exp(-2), lr=0.1",
            {"lr": 0.1, "decay_total": 2.0},
            {"lr": _LR_SGD, "decay_total": _DECAY},
            _sgd_expdecay,
        ),
        OptimizerSpec(
            "sgd_clip",
            "clip_grad_norm_(max_norm=1) then SGD, lr=0.1",
            {"lr": 0.1, "max_norm": 1.0},
            {"lr": _LR_SGD, "max_norm": _MAX_NORM},
            _sgd_clip,
        ),
        OptimizerSpec(
            "superlevel",
            "SuperLevelSGD: lr*exp(-beta t)*g/(1+||g||), lr=0.5, ends at lr*exp(-2)",
            {"lr": 0.5, "decay_total": 2.0},
            {"lr": _LR_SL, "decay_total": _DECAY},
            _superlevel,
        ),
        OptimizerSpec(
            "superlevel_momentum",
            "SuperLevelSGD with heavy-ball momentum 0.9, lr=0.05, ends at lr*exp(-2)",
            {"lr": 0.05, "decay_total": 2.0, "momentum": 0.9},
            {"lr": _LR_MOM, "decay_total": _DECAY},
            _superlevel,
        ),
        OptimizerSpec(
            "superlevel_guarded",
            "SuperLevelSGD under the Lyapunov guard (retry with lr*0.5 if the loss rose), lr=0.5",
            {"lr": 0.5, "decay_total": 2.0, "tol": 0.0, "shrink": 0.5, "max_retries": 4},
            {"lr": _LR_SL, "decay_total": _DECAY},
            _superlevel_guarded,
        ),
    ]
}


def get_optimizer(name: str) -> OptimizerSpec:
    """The registered :class:`OptimizerSpec` called ``name``.

    Raises:
        UnknownNameError: ``name`` is not registered (message lists the valid names).
    """
    return lookup("optimizer", OPTIMIZERS, name)
