"""The modulation alone, for any optimizer: ``g <- g / (1 + ||g|| / norm_scale)``."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from ._torch_api import group_by_device_and_dtype
from .norm import global_grad_norm, local

__all__ = ["damp_grad_norm_"]


@torch.no_grad()
def damp_grad_norm_(
    parameters: Tensor | Iterable[Tensor],
    norm_scale: float = 1.0,
    *,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> Tensor:
    r"""Scale gradients in place by the SuperLevelSGD modulation; return their norm.

    .. math:: g_i \leftarrow \frac{g_i}{1 + n / s}, \qquad
              n = \sqrt{\textstyle\sum_i \lVert g_i \rVert_2^2}

    A smooth counterpart of ``torch.nn.utils.clip_grad_norm_``: the resulting norm
    ``n / (1 + n / s)`` is always below ``s``. Use it before any optimizer's ``step``.
    No host sync unless ``error_if_nonfinite``. Like ``clip_grad_norm_``, a non-finite
    norm otherwise leaves non-finite gradients (they become nan).

    Args:
        parameters: A tensor or an iterable of tensors whose ``.grad`` is scaled.
        norm_scale: ``s > 0``.
        error_if_nonfinite: Raise ``FloatingPointError`` (before scaling) when ``n`` is
            not finite.
        foreach: Use the multi-tensor kernels (default: where the device has them).

    Returns:
        The total norm ``n`` of the gradients before scaling (0-dim tensor).
    """
    if not (isinstance(norm_scale, (int, float)) and norm_scale > 0):
        raise ValueError(f"norm_scale must be a number > 0, got {norm_scale!r}")
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norm = global_grad_norm(grads, foreach=foreach is not False)
    if error_if_nonfinite and not bool(torch.isfinite(norm)):
        raise FloatingPointError(f"non-finite gradient norm {float(norm)}; nothing was scaled")
    eta = torch.reciprocal(norm.div(norm_scale).add(1.0))
    locals_ = [local(g) for g in grads]
    for (device, dtype), idx in group_by_device_and_dtype(locals_).items():
        gs = [locals_[i] for i in idx]
        e = eta.to(device, dtype.to_real() if dtype.is_complex else dtype)
        if foreach is False:
            for g in gs:
                g.mul_(e)
        else:
            torch._foreach_mul_(gs, e)
    return norm
