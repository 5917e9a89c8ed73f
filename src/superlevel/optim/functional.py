"""Functional core of :class:`~superlevel.optim.SuperLevelSGD`.

The rule (arXiv 2409.16769, with SGD momentum and decoupled weight decay added)::

    a_t   = max(lr * exp(-decay * t), min_lr)           per param group
    n_t   = || (g_1, ..., g_k) ||_2                      one norm over every gradient
    eta_t = 1 / (1 + n_t / norm_scale)
    p    <- p - a_t * weight_decay * p                   decoupled weight decay
    buf  <- momentum * buf + (1 - dampening) * g         (buf = g when it is created)
    d     = g + momentum * buf if nesterov else buf      (d = g without momentum)
    p    <- p - a_t * eta_t * d

The norm lives in :mod:`.norm`. Here: the schedule, the modulation, and the update of one
param group, written once (:func:`_rule`) for two list-op back ends (``torch._foreach_*``
or one tensor at a time) and two kinds of scalars:

* **host scalars** (CPU, eager): ``a_t``, ``a_t eta_t`` and the finite flag are Python
  values; the update is in place and a skipped step is an ``if``.
* **device scalars** (accelerators, ``torch.compile``, CUDA graphs): 0-dim tensors that
  nothing reads on the host; a non-finite norm skips the step by *selection*
  (``torch.where``); multiplying the step by 0 would not do, since ``0 * inf = nan``.

plus torch's fused SGD kernel (:func:`_fused`) with a tensor lr ``a_t eta_t`` and
``found_inf``. :func:`resolve_impl` and :func:`host_scalars` are the only places that
choose; :mod:`.reference` is the slow twin every path is held equal to.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from ._torch_api import (
    Buckets,
    fused_devices,
    fused_sgd_,
    fused_sgd_updates_all,
    group_by_device_and_dtype,
)
from .norm import global_grad_norm, local
from .settings import Hyper

__all__ = [
    "Impl",
    "bucket_impl",
    "decayed_lr",
    "decayed_lr_host",
    "fused_supported",
    "global_grad_norm",
    "host_scalars",
    "local",
    "modulation",
    "modulation_host",
    "resolve_impl",
    "superlevel_update_",
]

Impl = Literal["single", "foreach", "fused"]
IMPLS = ("single", "foreach", "fused")
_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# ---------------------------------------------------------------- schedule and modulation
def decayed_lr(
    step: Tensor, lr: float | Tensor, decay: float, min_lr: float, dtype: torch.dtype | None = None
) -> Tensor:
    r"""Exponentially decayed learning rate with a floor, as a device tensor.

    .. math:: a_t = \max(\text{lr} \cdot e^{-\beta t}, \text{min\_lr})

    Args:
        step: 0-dim tensor ``t`` (completed, non-skipped steps; an integer count).
        lr: ``a_0`` (a float, or a 0-dim tensor that may change between steps).
        decay: ``beta >= 0``.
        min_lr: The floor.
        dtype: Dtype of the result (default float64, float32 on MPS).

    Returns:
        0-dim tensor on ``step``'s device.
    """
    wide = torch.float32 if step.device.type == "mps" else torch.float64
    t = step.to(wide)
    a = torch.exp(t * (-decay)) if decay != 0.0 else torch.ones_like(t)
    a = a * (lr.to(t.device, wide) if isinstance(lr, Tensor) else lr)
    a = a.clamp_min(min_lr) if min_lr > 0.0 else a
    return a if dtype is None else a.to(dtype)


def decayed_lr_host(step: float, lr: float | Tensor, decay: float, min_lr: float) -> float:
    r""":func:`decayed_lr` on Python floats (``lr`` may be a CPU tensor).

    .. math:: a_t = \max(\text{lr} \cdot e^{-\beta t}, \text{min\_lr})
    """
    a = float(lr) * math.exp(-decay * step) if decay != 0.0 else float(lr)
    return max(a, min_lr) if min_lr > 0.0 else a


def modulation(grad_norm: Tensor, norm_scale: float) -> tuple[Tensor, Tensor]:
    r"""The gradient-norm modulation and the finite flag.

    .. math:: \eta = \frac{1}{1 + n / s}, \qquad \text{ok} = \text{isfinite}(n)

    Args:
        grad_norm: 0-dim tensor ``n``.
        norm_scale: ``s > 0``; the norm at which the step is halved.

    Returns:
        ``(eta, ok)``: 0-dim tensors on ``grad_norm``'s device; ``eta`` is 0 where not ok.
    """
    ok = torch.isfinite(grad_norm)
    eta = torch.reciprocal(grad_norm.div(norm_scale).add_(1.0))
    return torch.where(ok, eta, 0.0), ok


def modulation_host(grad_norm: float, norm_scale: float) -> tuple[float, bool]:
    r""":func:`modulation` on Python floats (for norms already in host memory).

    .. math:: \eta = \frac{1}{1 + n / s}, \qquad \text{ok} = \text{isfinite}(n)

    Returns:
        ``(eta, ok)``; ``eta`` is 0 where not ok.
    """
    ok = math.isfinite(grad_norm)
    return (1.0 / (1.0 + grad_norm / norm_scale) if ok else 0.0), ok


# ---------------------------------------------------------------- choosing the path
def host_scalars(devices: Sequence[torch.device], lrs: Sequence[Any] = ()) -> bool:
    """Whether a step may read its scalars (norm, flag, ``t``) on the host.

    True in eager mode when every gradient and every tensor lr is in host memory: reading
    them is then no device sync, and plain Python arithmetic replaces some fifteen tiny
    tensor ops (a 1e6-param step: 0.77 -> 0.33 ms).
    """
    if torch.compiler.is_compiling():
        return False
    on_host = all(dev.type == "cpu" for dev in devices)
    return on_host and all(not isinstance(lr, Tensor) or lr.device.type == "cpu" for lr in lrs)


def _fused_key_ok(device: torch.device, dtype: torch.dtype) -> bool:
    return device.type in fused_devices() and dtype in _FUSED_DTYPES


def fused_supported(tensors: Sequence[Tensor]) -> bool:
    """Whether torch's fused SGD kernel accepts these tensors (device type and dtype)."""
    if any(t.is_sparse for t in tensors):
        return False
    return all(_fused_key_ok(dev, dt) for dev, dt in group_by_device_and_dtype(tensors))


def resolve_impl(
    tensors: Sequence[Tensor] | None = None,
    *,
    foreach: bool | None,
    fused: bool | None,
    buckets: Buckets | None = None,
) -> Impl:
    """Pick the update path of one param group (the one place that does).

    Explicit flags win. With both ``None``: ``fused`` when every tensor is on an
    accelerator with the fused kernel, in float16/bfloat16/float32 (one pass, the skip
    inside the kernel, no host sync; the kernels take the lr as float32, so float64 stays
    on foreach). Otherwise ``foreach``: on CPU it reads the finite flag for free and
    updates in place, which measures as fast as the fused CPU kernel for large tensors
    and faster for many small ones. Under ``torch.compile`` the fused kernel (no
    fake-tensor kernel for a tensor lr) is replaced by ``foreach``, whose selection
    inductor fuses.
    """
    if torch.compiler.is_compiling():
        return "single" if foreach is False and not fused else "foreach"
    if fused:
        return "fused"
    if foreach:
        return "foreach"
    if foreach is False:
        return "single"
    keys = (buckets if buckets is not None else group_by_device_and_dtype(tensors or [])).keys()
    if (
        fused is None
        and keys
        and all(
            _fused_key_ok(dev, dt) and dev.type != "cpu" and dt != torch.float64 for dev, dt in keys
        )
    ):
        return "fused"
    return "foreach"


def bucket_impl(impl: Impl, device: torch.device, dtype: torch.dtype) -> Impl:
    """The path of one (device, dtype) bucket of a group whose path is ``impl``.

    The group's own, except where torch's fused kernel fails its probe step
    (:func:`~._torch_api.fused_sgd_updates_all`: torch 2.13's CPU kernel leaves most
    float16/bfloat16 elements unchanged): such a bucket of a fused group takes the
    foreach path, with a warning, rather than not training.
    """
    if impl != "fused" or fused_sgd_updates_all(device.type, dtype):
        return impl
    warnings.warn(
        f"fused=True: torch {torch.__version__}'s fused SGD kernel does not update every "
        f"element of {dtype} tensors on {device.type} (a probe step left elements "
        f"unchanged), so these params take the foreach path (the same rule)",
        RuntimeWarning,
        stacklevel=4,
    )
    return "foreach"


# ---------------------------------------------------------------- the update
class _Each:
    """List ops: ``torch._foreach_<op>`` (multi-tensor) or ``Tensor.<op>`` per tensor."""

    def __init__(self, foreach: bool) -> None:
        self.foreach = foreach

    def __call__(self, op: str, xs: list[Tensor], *args: Any, **kw: Any) -> list[Tensor]:
        if self.foreach:
            out = getattr(torch, f"_foreach_{op}")(xs, *args, **kw)
            return xs if out is None else list(out)  # in-place ops return None
        if args and isinstance(args[0], list):
            return [getattr(x, op)(y, *args[1:], **kw) for x, y in zip(xs, args[0], strict=True)]
        return [getattr(x, op)(*args, **kw) for x in xs]


def _rule(
    each: _Each,
    ps: list[Tensor],
    gs: list[Tensor],
    bufs: list[Tensor | None],
    idx: list[int],
    *,
    a: float | Tensor,
    s: float | Tensor,
    ok: bool | Tensor,
    h: Hyper,
) -> None:
    """The rule on one (device, dtype) bucket, with ``a = a_t`` and ``s = a_t eta_t``.

    Host scalars (floats, bool ``ok``): in place, nothing but new buffers when not ok.
    Device scalars (0-dim tensors, bool tensor ``ok``): new values, then
    ``torch.where(ok, new, old)`` into the params and buffers.
    """
    select = isinstance(ok, Tensor)
    if h.maximize:
        gs = each("neg", gs)
    if h.momentum != 0.0:
        old = [j for j, i in enumerate(idx) if bufs[i] is not None]
        for j, i in enumerate(idx):
            if bufs[i] is None:
                # Created on first sight; a skipped step leaves it at zero.
                if select:
                    bufs[i] = torch.where(ok, gs[j], 0.0).to(ps[j].dtype)
                else:
                    bufs[i] = gs[j].clone() if ok else torch.zeros_like(ps[j])
        if old and (select or ok):  # select first: never bool() a tensor flag
            bs, g_old = [bufs[idx[j]] for j in old], [gs[j] for j in old]
            new = each("mul", bs, h.momentum) if select else each("mul_", bs, h.momentum)
            each("add_", new, g_old, alpha=1.0 - h.dampening)
            if select:
                for b, nb in zip(bs, new, strict=True):
                    torch.where(ok, nb, b, out=b)
    if not select and not ok:
        return
    d = gs
    if h.momentum != 0.0:
        d = [bufs[i] for i in idx]
        d = each("add", gs, d, alpha=h.momentum) if h.nesterov else d
    if not select:
        if h.weight_decay != 0.0:
            each("mul_", ps, 1.0 - a * h.weight_decay)
        each("add_", ps, d, alpha=-s)
        return
    new = each("mul", d, -s)
    each("add_", new, each("mul", ps, 1.0 - a * h.weight_decay) if h.weight_decay else ps)
    for p, n in zip(ps, new, strict=True):
        torch.where(ok, n, p, out=p)


def _fused(
    ps: list[Tensor],
    gs: list[Tensor],
    bufs: list[Tensor | None],
    idx: list[int],
    *,
    a: Tensor,
    s: Tensor,
    ok: Tensor,
    h: Hyper,
) -> None:
    """One bucket through torch's fused SGD kernel: lr ``s``, skip via ``found_inf``."""
    device = ps[0].device
    found_inf = torch.where(ok, 0.0, 1.0).to(torch.float32)  # one kernel
    if h.weight_decay != 0.0:
        # Decoupled decay outside the kernel; factor 1 on a skipped step is exact.
        torch._foreach_mul_(ps, torch.where(ok, 1.0 - a * h.weight_decay, 1.0))
    kw = dict(
        # The CPU kernel reads the lr as a double; CUDA's reads a float pointer.
        lr=s if device.type == "cpu" else s.float(),
        found_inf=found_inf,
        momentum=h.momentum,
        dampening=h.dampening,
        nesterov=h.nesterov,
        maximize=h.maximize,
    )
    if h.momentum == 0.0:
        fused_sgd_(ps, gs, [], is_first_step=False, **kw)
        return
    fresh = [j for j, i in enumerate(idx) if bufs[i] is None]
    seen = [j for j, i in enumerate(idx) if bufs[i] is not None]
    for j in fresh:
        # Zero-filled: the kernel copies g in, or leaves zeros on a skipped step.
        bufs[idx[j]] = torch.zeros_like(ps[j])
    for first, sub in ((True, fresh), (False, seen)):
        if sub:
            fused_sgd_(
                [ps[j] for j in sub],
                [gs[j] for j in sub],
                [bufs[idx[j]] for j in sub],
                is_first_step=first,
                **kw,
            )


def check_fused(buckets: Buckets) -> None:
    """Refuse a fused update the kernel cannot do (before anything changes)."""
    for device, dtype in buckets:
        if not _fused_key_ok(device, dtype):
            raise RuntimeError(
                f"fused=True needs floating-point tensors on a device with torch's fused SGD "
                f"kernel; got a {dtype} tensor on {device}"
            )


def _scalars_on(device: torch.device, dtype: torch.dtype, *values: Any) -> list[Tensor]:
    # Device-to-device copies are asynchronous; the dtype cast keeps half params exact.
    cast = torch.float64 if dtype in (torch.float64, torch.complex128) else torch.float32
    return [
        v.to(device=device, dtype=cast) if isinstance(v, Tensor)
        else torch.tensor(v, dtype=cast, device=device)
        for v in values
    ]  # fmt: skip


def superlevel_update_(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    lr: Tensor | float,
    eta: Tensor | float,
    ok: Tensor | bool,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
    impl: Impl = "foreach",
    buckets: Buckets | None = None,
    hyper: Hyper | None = None,
) -> None:
    r"""Apply one SuperLevelSGD update to one param group, in place.

    .. math::
        p \leftarrow p - a\,\lambda\,p, \quad
        b \leftarrow \mu b + (1-\tau) g, \quad
        p \leftarrow p - a\,\eta\,d

    with ``d = g + mu * b`` (Nesterov), ``b`` (momentum) or ``g``, and nothing changed when
    ``ok`` is false. Missing momentum buffers are created (``g``, or zeros when not ok) and
    written back into ``momentum_buffers``.

    Args:
        params: Dense tensors (DTensor local shards) updated in place.
        grads: Their gradients (same shapes and dtypes).
        momentum_buffers: One entry per param, ``None`` where not created yet.
        lr: ``a_t``: a 0-dim tensor, or a Python float with host scalars.
        eta: ``eta_t`` from :func:`modulation`: a 0-dim tensor, or a float (0 when not ok).
        ok: 0-dim bool tensor, or a Python bool (host scalars); false skips the update.
        weight_decay, momentum, dampening, nesterov, maximize: ``lambda``, ``mu``,
            ``tau`` and the flags (ignored when ``hyper`` is given).
        impl: ``"single"``, ``"foreach"`` or ``"fused"`` (see :func:`resolve_impl`).
        buckets: ``params``' indices by (device, dtype), if the caller has them already.
        hyper: The group's :class:`~superlevel.optim.settings.Hyper` record.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {list(IMPLS)}, got {impl!r}")
    if not params:
        return
    h = hyper or Hyper(lr, 0.0, 0.0, momentum, dampening, nesterov, weight_decay, maximize)
    buckets = buckets if buckets is not None else group_by_device_and_dtype(params)
    if impl == "fused":
        check_fused(buckets)
    for (device, dtype), idx in buckets.items():
        path_impl = bucket_impl(impl, device, dtype)
        each = _Each(foreach=path_impl != "single")
        ps, gs = [params[i] for i in idx], [grads[i] for i in idx]
        if isinstance(ok, bool) and path_impl != "fused":  # host scalars
            a = float(lr)
            _rule(each, ps, gs, momentum_buffers, idx, a=a, s=a * float(eta), ok=ok, h=h)
            continue
        a, e, k = _scalars_on(device, dtype, lr, eta, ok)
        path = _fused if path_impl == "fused" else _rule
        kw: dict[str, Any] = {} if path_impl == "fused" else {"each": each}
        path(ps=ps, gs=gs, bufs=momentum_buffers, idx=idx, a=a, s=a * e, ok=k.bool(), h=h, **kw)
