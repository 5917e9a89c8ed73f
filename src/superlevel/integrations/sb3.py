"""Stable-Baselines3 / sb3-contrib: SuperLevelSGD through ``policy_kwargs``, the rule intact.

SB3 builds the optimizer itself, ``optimizer_class(params, lr=lr_schedule(1),
**optimizer_kwargs)``, and two of its defaults change the rule silently:

* ``max_grad_norm`` (0.5 for PPO, A2C and RecurrentPPO, 10 for DQN): SB3 calls
  ``clip_grad_norm_`` before ``optimizer.step()``, so the rule never sees a norm above
  it; with PPO's 0.5 and a true norm above it every measured norm is exactly 0.5 and
  ``eta = 1 / (1 + 0.5)`` is a constant 2/3: clipped SGD with exponential decay.
* ``learning_rate``: SB3 writes its value (or its schedule's, a function of the progress
  remaining, 1 -> 0) into every group's ``lr`` before each update; a falling schedule
  multiplies a second decay onto ``exp(-decay * t)``.

:func:`superlevel_sb3_kwargs` returns the algorithm's keyword arguments with both right
(``max_grad_norm=inf``, ``policy_kwargs`` naming SuperLevelSGD) and refuses a finite
``max_grad_norm``; :func:`check_sb3_setup` lists what is wrong with a model built
otherwise, and :class:`SuperLevelSB3Callback` refuses it at training start and records
``stats()`` into SB3's logger.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

try:
    from stable_baselines3.common.callbacks import BaseCallback
except ImportError as exc:  # the optional extra
    raise ImportError(
        "superlevel.integrations.sb3 needs stable-baselines3: pip install 'superlevel[rl]'"
    ) from exc

from superlevel.integrations._common import (
    check_callback_args,
    clip_problem,
    decay_problem,
    factors_fall,
    find_superlevel,
    refuse_or_warn,
    superlevel_stats,
)
from superlevel.optim import SuperLevelSGD

__all__ = ["SuperLevelSB3Callback", "check_sb3_setup", "superlevel_sb3_kwargs"]

# SB3 evaluates a schedule at the progress remaining, from 1 (start) down to 0 (end).
_PROGRESS = [1.0 - i / 999 for i in range(1000)]
_CLIP_FIX = "max_grad_norm=float('inf') (superlevel_sb3_kwargs sets it; the clip is then a no-op)"


def _schedule_change(learning_rate: Any) -> str | None:
    """How an SB3 learning-rate schedule falls over a run, or ``None`` (constant, rising)."""
    if not callable(learning_rate):
        return None
    fall = factors_fall([float(learning_rate(p)) for p in _PROGRESS])
    if fall is None:
        return None
    peak, end = fall
    return f"the schedule goes from {peak:g} down to {end:g} by the end of training"


def _clip(max_grad_norm: Any, algorithm: str) -> str | None:
    if max_grad_norm is None or not math.isfinite(float(max_grad_norm)):
        return None
    return clip_problem(f"{algorithm}(max_grad_norm={max_grad_norm:g})", float(max_grad_norm),
                        _CLIP_FIX)  # fmt: skip


def _decay(optimizer: Any, learning_rate: Any) -> str | None:
    return decay_problem(
        optimizer,
        _schedule_change(learning_rate),
        "SB3's learning_rate schedule (written into group['lr'] before each update)",
        "a constant learning_rate (a0), and let decay do the decay",
    )


def superlevel_sb3_kwargs(
    learning_rate: float | Callable[[float], float] = 0.1,
    *,
    max_grad_norm: float = math.inf,
    policy_kwargs: dict[str, Any] | None = None,
    **optimizer_kwargs: Any,
) -> dict[str, Any]:
    """Keyword arguments for an SB3 algorithm that trains with SuperLevelSGD, rule intact.

    Args:
        learning_rate: ``a0`` (SB3 passes it as ``lr=``); a schedule of the progress
            remaining may only rise or stay while ``decay > 0``.
        max_grad_norm: SB3's clip; must stay ``inf`` (the default here, not SB3's).
        policy_kwargs: other policy arguments (``net_arch``, ...), kept.
        **optimizer_kwargs: SuperLevelSGD's arguments but ``lr`` (``decay``,
            ``norm_scale``, ``momentum``, ...), checked here by building it once.

    Returns:
        ``{"learning_rate", "max_grad_norm", "policy_kwargs"}`` for
        ``PPO("MlpPolicy", env, **superlevel_sb3_kwargs(0.2, decay=1e-4))``.

    Raises:
        ValueError: a finite ``max_grad_norm``, a falling schedule with ``decay > 0``,
            ``policy_kwargs`` that name another optimizer, or a bad optimizer argument.
        TypeError: ``lr`` among the optimizer arguments, or a bad argument's kind.

    Example:
        >>> model = PPO("MlpPolicy", env, **superlevel_sb3_kwargs(
        ...     0.2, decay=1e-4, policy_kwargs=dict(net_arch=[32, 32])))  # doctest: +SKIP
    """
    if "lr" in optimizer_kwargs:
        raise TypeError(
            "lr is SB3's learning_rate (it calls optimizer_class(params, lr=learning_rate, "
            "...)): pass it as superlevel_sb3_kwargs(learning_rate=...), not lr="
        )
    policy_kwargs = dict(policy_kwargs or {})
    taken = sorted({"optimizer_class", "optimizer_kwargs"} & set(policy_kwargs))
    if taken:
        raise ValueError(f"policy_kwargs already sets {taken}; superlevel_sb3_kwargs sets them")
    a0 = learning_rate(1.0) if callable(learning_rate) else learning_rate
    probe = SuperLevelSGD([torch.zeros(1, requires_grad=True)], lr=a0, **optimizer_kwargs)
    problems = [p for p in (_clip(max_grad_norm, "SB3"), _decay(probe, learning_rate)) if p]
    if problems:
        raise ValueError("this setup changes SuperLevelSGD's rule:\n- " + "\n- ".join(problems))
    policy_kwargs.update(optimizer_class=SuperLevelSGD, optimizer_kwargs=dict(optimizer_kwargs))
    return {
        "learning_rate": learning_rate,
        "max_grad_norm": max_grad_norm,
        "policy_kwargs": policy_kwargs,
    }


def check_sb3_setup(model: Any) -> list[str]:
    """What in a built SB3 model changes SuperLevelSGD's rule, each with its fix.

    Reads ``model.max_grad_norm`` (PPO, A2C, RecurrentPPO, DQN; algorithms without a
    clip have none), ``model.learning_rate`` and ``model.policy.optimizer``.

    Returns:
        One message per problem (empty: intact). No ``SuperLevelSGD``: one saying so.
    """
    optimizer = getattr(getattr(model, "policy", None), "optimizer", None)
    if find_superlevel(optimizer) is None:
        return [f"no SuperLevelSGD behind the policy's optimizer ({type(optimizer).__name__})"]
    name = type(model).__name__
    checks = (
        _clip(getattr(model, "max_grad_norm", None), name),
        _decay(optimizer, getattr(model, "learning_rate", None)),
    )
    return [p for p in checks if p is not None]


class SuperLevelSB3Callback(BaseCallback):
    """Refuse an SB3 setup that changes the rule; record ``stats()`` in SB3's logger.

    At training start it runs :func:`check_sb3_setup`: ``strict=True`` raises a
    ``ValueError`` listing each problem and its fix before any update, ``strict=False``
    warns. At the end of each rollout (after the previous updates, when SB3 records its
    own ``train/`` values) it records ``<prefix>/step``, ``lr`` (``a_t``),
    ``effective_lr``, ``grad_norm`` (the norm the rule saw), ``scale`` and ``skipped``.

    Args:
        prefix: key prefix of the recorded values (a non-empty string).
        strict: raise (``True``) or warn (``False``).
        verbose: SB3's verbosity.
    """

    def __init__(self, prefix: str = "superlevel", strict: bool = True, verbose: int = 0) -> None:
        check_callback_args(prefix, strict)
        super().__init__(verbose)
        self.prefix = prefix
        self.strict = strict
        self.problems: list[str] = []

    def _on_training_start(self) -> None:
        self.problems = check_sb3_setup(self.model)
        refuse_or_warn(self.problems, self.strict, type(self).__name__)

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        optimizer = self.model.policy.optimizer
        if find_superlevel(optimizer) is None:
            return
        for key, value in superlevel_stats(optimizer, self.prefix).items():
            self.logger.record(key, value)
