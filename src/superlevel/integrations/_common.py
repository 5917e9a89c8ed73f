"""See through framework wrappers to our optimizer; its ``stats()`` as loggable floats;
the checks every framework integration makes of the setup around it.

Frameworks wrap the optimizer they are given: Lightning in a ``LightningOptimizer``
(attribute ``_optimizer``), accelerate in an ``AcceleratedOptimizer`` (``optimizer``), and
our :class:`~superlevel.stability.LyapunovGuard` wraps another (``optimizer``). The walk
below is duck-typed on those attributes, so it needs none of the frameworks installed.

Two things a framework does around the optimizer change the rule silently, whatever the
framework: an lr schedule that lowers ``group["lr"]`` on top of ``exp(-decay * t)`` (a
double decay), and a gradient clip before the optimizer (the modulation never sees the
true norm). :func:`schedule_change`, :func:`decay_problem` and :func:`clip_problem` word
them once; :func:`refuse_or_warn` is what each callback does with them.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import torch

__all__ = [
    "check_callback_args",
    "clip_problem",
    "decay_problem",
    "factors_fall",
    "find_guard",
    "find_superlevel",
    "optimizer_chain",
    "refuse_or_warn",
    "schedule_change",
    "superlevel_stats",
]

log = logging.getLogger("superlevel.integrations")

# LightningOptimizer keeps the real one in `_optimizer`; the others in `optimizer`
_INNER_ATTRS = ("_optimizer", "optimizer")


def optimizer_chain(optimizer: Any) -> list[Any]:
    """``optimizer`` and every optimizer it wraps, outermost first.

    Example:
        >>> optimizer_chain(trainer.optimizer)  # doctest: +SKIP
        [AcceleratedOptimizer(...), SuperLevelSGD(...)]
    """
    chain = [optimizer]
    while True:
        outer = chain[-1]
        inner = None
        for attr in _INNER_ATTRS:
            cand = outer.__dict__.get(attr) if hasattr(outer, "__dict__") else None
            if cand is not None and hasattr(cand, "param_groups") and hasattr(cand, "step"):
                inner = cand
                break
        if inner is None or any(inner is c for c in chain):
            return chain
        chain.append(inner)


def _innermost(optimizer: Any, cls: type) -> Any:
    # innermost: a LightningOptimizer is a dynamic subclass of the class it wraps
    for opt in reversed(optimizer_chain(optimizer)):
        if isinstance(opt, cls):
            return opt
    return None


def find_superlevel(optimizer: Any) -> Any:
    """The ``SuperLevelSGD`` behind ``optimizer`` (itself, or inside wrappers), or ``None``."""
    from superlevel.optim import SuperLevelSGD

    return _innermost(optimizer, SuperLevelSGD)


def find_guard(optimizer: Any) -> Any:
    """The :class:`~superlevel.stability.LyapunovGuard` behind ``optimizer``, or ``None``."""
    from superlevel.stability import LyapunovGuard

    return _innermost(optimizer, LyapunovGuard)


def superlevel_stats(
    optimizer: Any, prefix: str = "superlevel", *, tensors: bool = False
) -> dict[str, Any]:
    """``stats()`` of the ``SuperLevelSGD`` behind ``optimizer`` as ``{prefix/key: value}``.

    Keys: ``step`` (t), ``lr`` (``a_t``, the decayed rate of group 0, what a plain lr
    monitor cannot show: ``group["lr"]`` stays ``a0``), ``effective_lr`` (``a_t * eta_t``),
    ``grad_norm``, ``scale`` (``eta_t``) and ``skipped``. With a guard in the chain also
    its counters under ``prefix/guard_<name>`` (host ints, as floats).

    Args:
        optimizer: the optimizer or any wrapper around it.
        prefix: the key prefix.
        tensors: ``False``: Python floats, read with one host sync. ``True``: detached
            0-dim tensor copies (no sync), for loggers that read them later.

    Raises:
        ValueError: no ``SuperLevelSGD`` behind ``optimizer``.
    """
    opt = find_superlevel(optimizer)
    if opt is None:
        names = " -> ".join(type(o).__name__ for o in optimizer_chain(optimizer))
        raise ValueError(f"no SuperLevelSGD behind the optimizer ({names})")
    stats = opt.stats()
    # copies: a value may be a live counter that the next step changes in place
    values = [torch.as_tensor(v).detach().reshape(()).clone() for v in stats.values()]
    if not tensors:
        home = values[0].device
        # one sync for all of them (device-to-device copies first where a value lives elsewhere)
        values = torch.stack([t.to(home, torch.float64) for t in values]).tolist()
    out: dict[str, Any] = {f"{prefix}/{k}": v for k, v in zip(stats, values, strict=True)}
    guard = find_guard(optimizer)
    if guard is not None:
        out.update({f"{prefix}/guard_{k}": float(v) for k, v in guard.counters.items()})
    return out


# ---------------------------------------------------------------- setup checks
def check_callback_args(prefix: Any, strict: Any) -> None:
    """A callback's ``prefix`` (a non-empty string) and ``strict`` (a bool), named."""
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a string, got {prefix!r} ({type(prefix).__name__})")
    if not prefix:
        raise ValueError("prefix must be a non-empty string, got ''")
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be True or False, got {strict!r} ({type(strict).__name__})")


def factors_fall(factors: Sequence[float]) -> tuple[float, float] | None:
    """``(peak, end)`` when the last lr factor is below the largest one, else ``None``.

    Rising (warmup) is no decay; ending below the peak is (relative tolerance 1e-9).
    """
    peak, end = max(factors), factors[-1]
    return (peak, end) if end < peak * (1 - 1e-9) else None


def schedule_change(scheduler: Any, horizon: int) -> str | None:
    """How ``scheduler`` lowers the lr over ``horizon`` of its steps, or ``None`` if never.

    A ``LambdaLR`` (every Hugging Face schedule but ``reduce_lr_on_plateau``) is checked
    by evaluating its factors at up to 1000 steps in ``[0, horizon]``: rising (warmup) is
    fine, a fall below the peak is a decay. A ``ConstantLR`` only ever raises the lr.
    Other schedulers cannot be evaluated without stepping them: reported as possible.
    """
    if scheduler is None:
        return None
    name = type(scheduler).__name__
    if isinstance(scheduler, torch.optim.lr_scheduler.ConstantLR):
        return None
    if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
        n = max(int(horizon), 1)
        steps = sorted({round(i * n / 999) for i in range(1000)} | {n})
        for fn in scheduler.lr_lambdas:
            fall = factors_fall([float(fn(s)) for s in steps])
            if fall is not None:
                peak, end = fall
                return f"{name} takes the lr factor from {peak:g} down to {end:g} by step {n}"
        return None
    return f"{name} may lower the lr (only LambdaLR and ConstantLR can be checked)"


def decay_problem(optimizer: Any, change: str | None, who: str, fix: str) -> str | None:
    """The double-decay message when ``who`` lowers the lr (``change``) and ``decay > 0``."""
    opt = find_superlevel(optimizer)
    decays = [float(g["decay"]) for g in opt.param_groups] if opt is not None else []
    if change is None or not any(d > 0 for d in decays):
        return None
    return (
        f"SuperLevelSGD already decays its rate (a_t = lr * exp(-decay * t), decay="
        f"{max(decays):g}), and {who} also lowers group['lr']: {change}. The rate used "
        f"would be the product of both. Fix: {fix}."
    )


def clip_problem(setting: str, clip: float, fix: str, *, by_value: bool = False) -> str:
    """The message for a gradient clip at ``clip`` that runs before the optimizer."""
    if by_value:
        return (
            f"{setting} clamps every gradient element to [-{clip:g}, {clip:g}] before "
            f"SuperLevelSGD sees them, so its modulation 1/(1 + ||g||/norm_scale) sees the "
            f"norm of the clamped gradient, not the true one (the rule is already a smooth "
            f"clip). Fix: {fix}."
        )
    return (
        f"{setting} clips the gradients before SuperLevelSGD sees them, so its modulation "
        f"1/(1 + ||g||/norm_scale) never sees a norm above {clip:g} (the rule is already a "
        f"smooth clip). Fix: {fix}."
    )


def refuse_or_warn(problems: Sequence[str], strict: bool, callback: str) -> None:
    """Raise ``ValueError`` listing ``problems`` (``strict``), or warn (``UserWarning``
    and the ``logging`` module) and go on; nothing when there are none."""
    if not problems:
        return
    msg = "this setup changes SuperLevelSGD's rule:\n- " + "\n- ".join(problems)
    if strict:
        raise ValueError(msg + f"\n({callback}(strict=False) only warns)")
    log.warning(msg)
    warnings.warn(msg, UserWarning, stacklevel=3)
