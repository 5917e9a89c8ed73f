"""A slow, obviously correct SuperLevelSGD, the yardstick for the fast paths.

Every number is a Python float or a float64 tensor, every decision a plain ``if``; it
syncs freely and is written to be read next to the rule::

    a_t   = max(lr * exp(-decay * t), min_lr)
    n_t   = sqrt(sum over all grads of ||g||^2)          (g = -grad when maximize)
    eta_t = 1 / (1 + n_t / norm_scale)
    p    <- p - a_t * weight_decay * p
    buf  <- g on creation, else momentum * buf + (1 - dampening) * g
    d     = g + momentum * buf if nesterov else buf      (d = g without momentum)
    p    <- p - a_t * eta_t * d

The norm is scaled by the largest ``|g|``, so no finite gradient overflows it. A
non-finite ``n_t`` skips the step (``t`` unchanged, ``skipped += 1``); a momentum
buffer first seen on a skipped step is created as zeros.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = ["ReferenceSuperLevelSGD"]

_GROUP_KEYS = (
    "lr",
    "decay",
    "min_lr",
    "momentum",
    "dampening",
    "nesterov",
    "weight_decay",
    "maximize",
)


def _wide(t: Tensor) -> Tensor:
    """float64 (complex128 for complex tensors) copy of ``t``."""
    return t.to(torch.complex128 if t.is_complex() else torch.float64)


def _norm(mags: list[Tensor]) -> float:
    """``sqrt(sum |g|^2)`` as ``m * sqrt(sum (|g| / m)^2)``, ``m = max |g|``: no overflow."""
    m = max((float(x.max()) for x in mags if x.numel()), default=0.0)
    if m == 0.0 or not math.isfinite(m):
        return m
    if any(bool(torch.isnan(x).any()) for x in mags):
        return math.nan
    return m * math.sqrt(sum(float(((x / m) ** 2).sum()) for x in mags))


class ReferenceSuperLevelSGD:
    """Reference optimizer with SuperLevelSGD's arguments (no foreach/fused/capturable).

    Args:
        params: Tensors or dicts of param groups (same per-group overrides as the fast class).
        lr, decay, min_lr, norm_scale, momentum, dampening, nesterov, weight_decay,
        maximize, nonfinite: As in :class:`~superlevel.optim.SuperLevelSGD`.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.1,
        decay: float = 0.0,
        *,
        min_lr: float = 0.0,
        norm_scale: float = 1.0,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        maximize: bool = False,
        nonfinite: str = "skip",
    ) -> None:
        defaults = dict(
            lr=lr,
            decay=decay,
            min_lr=min_lr,
            momentum=momentum,
            dampening=dampening,
            nesterov=nesterov,
            weight_decay=weight_decay,
            maximize=maximize,
        )
        params = list(params)
        if params and not isinstance(params[0], dict):
            params = [{"params": params}]
        self.param_groups = []
        for group in params:
            full = {k: group.get(k, defaults[k]) for k in _GROUP_KEYS}
            full["params"] = list(group["params"])
            self.param_groups.append(full)
        self.norm_scale = norm_scale
        self.nonfinite = nonfinite
        self.t = 0
        self.skipped = 0
        self.buffers: dict[int, Tensor] = {}
        self.last_norm = 0.0
        self.last_lr = 0.0

    @torch.no_grad()
    def step(self) -> None:
        """One step of the rule on the params' current ``.grad``."""
        with_grad = [(g, p) for g in self.param_groups for p in g["params"] if p.grad is not None]
        n = _norm([_wide(p.grad).abs() for _, p in with_grad])
        self.last_norm = n
        self.last_lr = self.lr_at(0)
        if not math.isfinite(n):
            if self.nonfinite == "raise":
                raise FloatingPointError(f"non-finite gradient norm {n}")
            for group, p in with_grad:
                if group["momentum"] != 0 and id(p) not in self.buffers:
                    self.buffers[id(p)] = torch.zeros_like(_wide(p))
            self.skipped += 1
            return
        eta = 1.0 / (1.0 + n / self.norm_scale)
        for group in self.param_groups:
            a = max(group["lr"] * math.exp(-group["decay"] * self.t), group["min_lr"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = _wide(p.grad)
                if group["maximize"]:
                    g = -g
                x = _wide(p)
                x = x - a * group["weight_decay"] * x
                d = g
                if group["momentum"] != 0:
                    if id(p) not in self.buffers:
                        buf = g.clone()
                    else:
                        buf = group["momentum"] * self.buffers[id(p)] + (1 - group["dampening"]) * g
                    self.buffers[id(p)] = buf
                    d = g + group["momentum"] * buf if group["nesterov"] else buf
                x = x - a * eta * d
                p.copy_(x.to(p.dtype))
        self.t += 1

    def lr_at(self, group: int = 0) -> float:
        """``a_t`` of a group at the current ``t``."""
        g = self.param_groups[group]
        return max(g["lr"] * math.exp(-g["decay"] * self.t), g["min_lr"])
