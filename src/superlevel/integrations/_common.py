"""See through framework wrappers to our optimizer; its ``stats()`` as loggable floats.

Frameworks wrap the optimizer they are given: Lightning in a ``LightningOptimizer``
(attribute ``_optimizer``), accelerate in an ``AcceleratedOptimizer`` (``optimizer``), and
our :class:`~superlevel.stability.LyapunovGuard` wraps another (``optimizer``). The walk
below is duck-typed on those attributes, so it needs none of the frameworks installed.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["find_guard", "find_superlevel", "optimizer_chain", "superlevel_stats"]

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
