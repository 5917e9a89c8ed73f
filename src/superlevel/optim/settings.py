"""Argument checks and the frozen hyperparameter record of one param group.

Every number and flag the optimizer takes is checked here, once, with an error that names
the argument and the value: ``TypeError`` for the wrong kind of value (a string, ``None``,
a list, a complex number or a bool where a number goes; a non-bool flag), ``ValueError``
for a value outside its domain. :func:`group_hyper` turns a param-group dict into a
:class:`Hyper` record, so a change a user makes in ``param_groups`` is checked and takes
effect at the next step.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "GLOBAL_KEYS",
    "GROUP_DEFAULTS",
    "OPTIONAL_FLAGS",
    "Hyper",
    "check_flag",
    "check_global",
    "check_real",
    "group_hyper",
    "settings_key",
]

# Per-group keys with their defaults (what __setstate__ fills into old pickles).
GROUP_DEFAULTS: dict[str, Any] = {
    "decay": 0.0,
    "min_lr": 0.0,
    "momentum": 0.0,
    "dampening": 0.0,
    "nesterov": False,
    "weight_decay": 0.0,
    "maximize": False,
    "foreach": None,
    "fused": None,
    "capturable": False,
    "norm_scale": 1.0,
    "nonfinite": "skip",
}
# Flags a checkpoint from an older version may lack (torch's optimizers gained them one
# release at a time): loading fills their defaults, as torch's own optimizers do.
OPTIONAL_FLAGS = ("maximize", "foreach", "fused", "capturable")
# Kept in every group (where torch users look) but one value for the whole optimizer:
# the norm is global, so its scale and its non-finite policy are too.
GLOBAL_KEYS = ("norm_scale", "nonfinite")
NONFINITE = ("skip", "raise")
# The update kernels take a_t * eta_t in float32: a larger lr cannot be represented.
_LR_MAX = float(torch.finfo(torch.float32).max)


@dataclass(frozen=True, slots=True)
class Hyper:
    """The rule's hyperparameters for one param group, checked.

    ``lr`` is ``a_0`` (a float, or a 0-dim tensor changed in place between steps).
    """

    lr: float | Tensor
    decay: float
    min_lr: float
    momentum: float
    dampening: float
    nesterov: bool
    weight_decay: float
    maximize: bool


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    return float(value)


def check_real(
    name: str, value: Any, *, positive: bool = False, high: float | None = None
) -> float:
    """``value`` as a float, finite and ``>= 0`` (``> 0`` if ``positive``, ``<= high``)."""
    v = _real(name, value)
    if not math.isfinite(v) or v < 0.0 or (positive and v == 0.0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    if high is not None and v > high:
        raise ValueError(f"{name} must be <= {high:g}, got {value!r}")
    return v


def check_flag(name: str, value: Any, *, optional: bool = False) -> None:
    """``value`` is a bool (or ``None`` when ``optional``): ``"no"`` is not ``False``."""
    if isinstance(value, bool) or (optional and value is None):
        return
    kind = "True, False or None" if optional else "True or False"
    raise TypeError(f"{name} must be {kind}, got {value!r} ({type(value).__name__})")


def _check_lr(value: Any, read: bool) -> float | None:
    """A float lr, or a one-element real floating tensor (its value read only if ``read``).

    Under ``torch.compile`` a float lr is a graph input (a symbolic float): checking its
    value would specialize the graph on it (a recompile per lr value), so it is checked
    where it is set (construction, eager steps, ``load_state_dict``), not while tracing.
    """
    if not isinstance(value, Tensor):
        if torch.compiler.is_compiling():
            return None
        return check_real("lr", value, high=_LR_MAX)
    if value.numel() != 1:
        raise ValueError(f"a tensor lr must have one element, got shape {tuple(value.shape)}")
    if not value.dtype.is_floating_point:
        raise TypeError(f"a tensor lr must be real floating point, got dtype {value.dtype}")
    if not read:
        return None  # reading a device tensor would sync; checked at construction
    return check_real("lr", float(value.detach().reshape(())), high=_LR_MAX)


def check_global(name: str, value: Any) -> None:
    """One optimizer-wide setting (``norm_scale`` or ``nonfinite``)."""
    if name == "norm_scale":
        check_real("norm_scale", value, positive=True, high=_LR_MAX)
    elif not isinstance(value, str) or value not in NONFINITE:
        raise ValueError(f"nonfinite must be one of {NONFINITE}, got {value!r}")


def settings_key(group: dict[str, Any]) -> tuple[Any, ...]:
    """What :func:`group_hyper`'s result depends on: each setting's type and value.

    A tensor lr counts by identity (step() never reads its value). The type is part of
    the key so that ``1`` after ``True`` is checked again; ``nan != nan`` never matches.
    """
    return tuple(
        (type(v), id(v) if isinstance(v, Tensor) else v)
        for v in (group["lr"], *(group[k] for k in GROUP_DEFAULTS))
    )


def group_hyper(group: dict[str, Any], *, read_tensors: bool = False) -> Hyper:
    """Check a param group's settings and return its :class:`Hyper` record.

    Args:
        group: A param-group dict with every key of :data:`GROUP_DEFAULTS` and ``lr``.
        read_tensors: Also check a tensor lr's value (a host read: construction and
            ``load_state_dict`` only, never in ``step()``).

    Raises:
        TypeError: A value of the wrong kind, named.
        ValueError: A value outside its domain, named. Besides the per-value domains:
            ``dampening <= 1``; Nesterov needs ``momentum > 0`` and ``dampening = 0``;
            ``max(lr, min_lr) * weight_decay <= 1`` (the decay factor ``1 - a_t wd``
            stays in ``[0, 1]``; beyond it params flip sign and grow until they overflow);
            ``fused`` and ``foreach`` not both true; ``capturable`` with
            ``nonfinite="skip"`` (``"raise"`` reads the norm on the host).
    """
    lr = _check_lr(group["lr"], read_tensors)
    decay = check_real("decay", group["decay"])
    min_lr = check_real("min_lr", group["min_lr"], high=_LR_MAX)
    momentum = check_real("momentum", group["momentum"])
    dampening = check_real("dampening", group["dampening"], high=1.0)
    weight_decay = check_real("weight_decay", group["weight_decay"])
    for flag in ("nesterov", "maximize", "capturable"):
        check_flag(flag, group[flag])
    for flag in ("foreach", "fused"):
        check_flag(flag, group[flag], optional=True)
    for key in GLOBAL_KEYS:
        check_global(key, group[key])
    if group["nesterov"] and (momentum <= 0.0 or dampening != 0.0):
        raise ValueError(
            f"nesterov=True needs momentum > 0 and dampening = 0, got momentum="
            f"{group['momentum']!r}, dampening={group['dampening']!r}"
        )
    top = max(lr if lr is not None else 0.0, min_lr)
    if top * weight_decay > 1.0:
        raise ValueError(
            f"weight_decay={group['weight_decay']!r} with lr={group['lr']!r}, "
            f"min_lr={group['min_lr']!r}: max(lr, min_lr) * weight_decay must be <= 1 (the "
            f"decay factor 1 - a_t * weight_decay would be negative)"
        )
    if group["fused"] and group["foreach"]:
        raise ValueError(
            f"fused=True and foreach=True exclude each other, got "
            f"fused={group['fused']!r}, foreach={group['foreach']!r}"
        )
    if group["capturable"] and group["nonfinite"] == "raise":
        raise ValueError(
            "capturable=True needs nonfinite='skip' (nonfinite='raise' reads "
            "the norm on the host), got nonfinite='raise'"
        )
    return Hyper(
        lr=group["lr"],
        decay=decay,
        min_lr=min_lr,
        momentum=momentum,
        dampening=dampening,
        nesterov=group["nesterov"],
        weight_decay=weight_decay,
        maximize=group["maximize"],
    )
