"""Stability thresholds: the sharpness above which a step size diverges on a quadratic.

On ``L = 0.5 * lambda * x^2`` the update ``x <- x - eta * g`` of

* plain gradient descent is stable iff ``eta * lambda < 2``;
* heavy-ball momentum ``m <- mu*m + (1-d)*g, x <- x - eta*m`` iff
  ``eta * (1-d) * lambda < 2 + 2*mu``;
* Nesterov momentum (``torch.optim.SGD(nesterov=True)``) iff
  ``eta * lambda < (2 + 2*mu) / (1 + 2*mu)``;
* L2 weight decay ``wd`` adds ``wd`` to every curvature: ``lambda + wd`` replaces
  ``lambda`` above.

``SuperLevelSGD`` takes the step ``eta_eff = a(t) / (1 + ||g||)`` (its
``stats()["effective_lr"]``), so its threshold is the plain one with ``eta = eta_eff``
(times the momentum factor when it uses momentum). Its weight decay is *decoupled* and
scaled by ``a = a(t)``, not by ``eta_eff``: ``p <- (1 - a*wd) p - eta_eff * d``. On the
quadratic, with ``c = 1 - a*wd``, the characteristic polynomial of heavy ball is
``z^2 - (c - h + mu) z + mu*c`` with ``h = eta_eff*(1-d)*lambda``, whose roots stay in the
unit circle iff ``h < (1 + c)(1 + mu)``; Nesterov's gives ``h (1 + 2mu) < (1 + c)(1 + mu)``.
Both are the coupled-free rule with its constant scaled by ``(1 + c)/2 = 1 - a*wd/2``::

    eta_eff * lambda < factor * (1 - a*wd/2)        (plain GD: lambda < (2 - a*wd) / eta_eff)

so the decayed rate ``a`` enters the rule, and ``a*wd >= 2`` is unstable at any curvature.

Adam and AdamW: their stability is governed by the *preconditioned* sharpness
``lambda_max(P^{-1} H)`` with ``P = diag(sqrt(v_hat) + eps)`` (Adam's current
denominator), against ``(2 + 2*beta1) / ((1 - beta1) * lr)`` (Cohen et al., 2022,
"Adaptive gradient methods at the edge of stability"): Adam's first moment is heavy-ball
momentum ``beta1`` with dampening ``beta1``. :func:`stability_rule` returns that rule
with ``preconditioned=True`` and :func:`adam_preconditioner` gives ``P`` from the
optimizer's state; weight decay is ignored for Adam. Other optimizers: ``None``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["StabilityRule", "adam_preconditioner", "momentum_factor", "stability_rule"]


def momentum_factor(momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False) -> float:
    """The constant ``c`` in the stability condition ``eta * (lambda + wd) < c``.

    ``c = 2`` without momentum, ``(2 + 2*mu) / (1 - d)`` for heavy ball with dampening
    ``d``, ``(2 + 2*mu) / (1 + 2*mu)`` for Nesterov (torch's form, no dampening).
    """
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    if not 0.0 <= dampening < 1.0:
        raise ValueError(f"dampening must be in [0, 1), got {dampening!r}")
    if momentum == 0.0:
        return 2.0
    if nesterov:
        return (2.0 + 2.0 * momentum) / (1.0 + 2.0 * momentum)
    return (2.0 + 2.0 * momentum) / (1.0 - dampening)


@dataclass(frozen=True)
class StabilityRule:
    """``eta * (lambda + wd) < factor * (1 - a * dwd / 2)``: the stable region of one group.

    ``wd`` is coupled (L2) decay, ``dwd`` decoupled decay applied as ``p <- (1 - a*dwd) p``
    with ``a`` the rate that scales it (``SuperLevelSGD``'s decayed ``a(t)``, whose
    ``eta = a(t) * eta_t`` is the effective lr).

    Attributes:
        factor: ``c`` from :func:`momentum_factor`.
        weight_decay: L2 coefficient added to the curvature (coupled decay).
        decoupled_weight_decay: decoupled coefficient ``dwd`` (``SuperLevelSGD``).
        kind: ``"sgd"``, ``"heavy_ball"``, ``"nesterov"``, ``"superlevel"`` or ``"adam"``.
        preconditioned: the sharpness to compare is that of ``P^{-1} H``
            (:func:`adam_preconditioner`), not of ``H``.
    """

    factor: float
    weight_decay: float = 0.0
    kind: str = "sgd"
    preconditioned: bool = False
    decoupled_weight_decay: float = 0.0

    def _factor(self, lr: float | None) -> float:
        """``factor * (1 - lr * dwd / 2)``; ``lr`` is required when ``dwd != 0``."""
        if self.decoupled_weight_decay == 0.0:
            return self.factor
        if lr is None or not math.isfinite(lr) or lr < 0.0:
            raise ValueError(
                f"this rule has decoupled weight decay {self.decoupled_weight_decay}: pass "
                f"lr=a_t (the rate that scales it, SuperLevelSGD.stats()['lr']), got {lr!r}"
            )
        return self.factor * (1.0 - 0.5 * lr * self.decoupled_weight_decay)

    def threshold(self, eta: float, lr: float | None = None) -> float:
        """Largest stable sharpness at step ``eta``: ``factor*(1 - lr*dwd/2) / eta - wd``.

        ``lr`` is the rate ``a`` of the decoupled decay (needed only when it is nonzero).
        A negative value means no curvature is stable (``lr * dwd >= 2``).
        """
        factor = self._factor(lr)
        if eta <= 0.0:
            return math.inf
        return factor / eta - self.weight_decay

    def max_lr(self, sharpness: float, lr: float | None = None) -> float:
        """Largest stable step at ``sharpness``: ``factor*(1 - lr*dwd/2) / (sharpness + wd)``.

        With decoupled decay this is the largest stable *effective* lr at the current
        ``lr = a`` (``0`` when ``lr * dwd >= 2``).
        """
        factor = max(self._factor(lr), 0.0)
        curv = sharpness + self.weight_decay
        return math.inf if curv <= 0.0 else factor / curv


def _value(x: Any) -> float:
    return float(x.item()) if isinstance(x, torch.Tensor) else float(x)


def stability_rule(optimizer: torch.optim.Optimizer, group: int = 0) -> StabilityRule | None:
    """The :class:`StabilityRule` of ``optimizer.param_groups[group]``, or ``None``.

    Recognised: ``torch.optim.SGD`` and ``SuperLevelSGD`` (by their ``momentum``,
    ``dampening``, ``nesterov`` and ``weight_decay`` group entries; SuperLevelSGD's
    decay as decoupled), ``Adam`` and ``AdamW`` (a preconditioned rule), and a
    :class:`~superlevel.stability.LyapunovGuard` by its inner optimizer. ``None`` for
    other optimizers.
    """
    try:
        from superlevel.optim import SuperLevelSGD
    except ImportError:  # the optimizer package is optional for this module
        SuperLevelSGD = ()  # noqa: N806
    from superlevel.stability.guard import LyapunovGuard

    if isinstance(optimizer, LyapunovGuard):
        optimizer = optimizer.optimizer
    g = optimizer.param_groups[group]
    if isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        beta1 = _value(g["betas"][0])
        return StabilityRule(factor=momentum_factor(beta1, beta1), kind="adam", preconditioned=True)
    if not isinstance(optimizer, (torch.optim.SGD, SuperLevelSGD)):
        return None
    mu = _value(g.get("momentum", 0.0))
    nesterov = bool(g.get("nesterov", False))
    factor = momentum_factor(mu, _value(g.get("dampening", 0.0)), nesterov)
    wd = _value(g.get("weight_decay", 0.0))
    if isinstance(optimizer, torch.optim.SGD):
        kind = "sgd" if mu == 0.0 else ("nesterov" if nesterov else "heavy_ball")
        return StabilityRule(factor=factor, weight_decay=wd, kind=kind)
    # SuperLevelSGD's decay is decoupled (scaled by a_t): see the module docstring
    return StabilityRule(factor=factor, kind="superlevel", decoupled_weight_decay=wd)


def adam_preconditioner(
    optimizer: torch.optim.Optimizer, params: list[torch.Tensor]
) -> list[torch.Tensor] | None:
    """Adam's diagonal ``P = sqrt(v_hat) + eps`` for each of ``params``, or ``None``.

    ``v_hat = v / (1 - beta2**t)`` (with ``amsgrad`` the running max of ``v``), from the
    optimizer state; ``None`` while a param has no state yet (before its first step).
    """
    if not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        return None
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    out = []
    for p in params:
        state = optimizer.state.get(p)
        g = group_of.get(id(p))
        if not state or g is None or "exp_avg_sq" not in state:
            return None
        v = state["max_exp_avg_sq"] if g.get("amsgrad") else state["exp_avg_sq"]
        step = _value(state["step"])
        bias = 1.0 - _value(g["betas"][1]) ** step
        out.append((v.detach() / bias).sqrt() + _value(g["eps"]))
    return out
