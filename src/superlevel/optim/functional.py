"""Functional core of :class:`~superlevel.optim.SuperLevelSGD`.

The rule (arXiv 2409.16769, with SGD momentum and decoupled weight decay added)::

    a_t   = max(lr * exp(-decay * t), min_lr)           per param group
    n_t   = || (g_1, ..., g_k) ||_2                      one norm over every gradient
    eta_t = 1 / (1 + n_t / norm_scale)
    p    <- p - a_t * weight_decay * p                   decoupled weight decay
    buf  <- momentum * buf + (1 - dampening) * g         (buf = g when it is created)
    d     = g + momentum * buf if nesterov else buf      (d = g without momentum)
    p    <- p - a_t * eta_t * d

Everything that depends on gradient values (``n_t``, ``eta_t``, the finite flag, the step
count ``t``) stays a tensor on the gradients' device, and on accelerators no path reads it
on the host. A non-finite norm skips the step by *selection* (``torch.where``) or, in the
fused kernel, through its ``found_inf`` argument; multiplying the step by 0 would not do,
since ``0 * inf = nan``. On CPU in eager mode the foreach and per-tensor paths read the
finite flag instead (it is already in host memory) and update in place, which saves the
selection's two extra passes over the parameters.

Three interchangeable update paths, held equal to :mod:`superlevel.optim.reference`:

* ``single``: one tensor at a time (any device, any dtype);
* ``foreach``: ``torch._foreach_*`` ops per (device, dtype) bucket; the path used under
  ``torch.compile``, where the selection fuses into the update;
* ``fused``: torch's fused SGD kernel with a tensor learning rate ``a_t * eta_t`` and
  ``found_inf = not isfinite(n_t)``: one pass over params and grads, skip in the kernel.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "Impl",
    "decayed_lr",
    "fused_supported",
    "global_grad_norm",
    "modulation",
    "resolve_impl",
    "superlevel_update_",
]

Impl = Literal["single", "foreach", "fused"]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _is_dtensor(t: Tensor) -> bool:
    # Imported lazily: torch.distributed is optional and slow to import.
    if type(t).__name__ != "DTensor":
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def local(t: Tensor) -> Tensor:
    """The local shard of a DTensor (same storage), or ``t`` itself.

    Every update is elementwise, so updating each rank's shard in place updates the
    sharded parameter; only the norm needs the other ranks.
    """
    return t.to_local() if _is_dtensor(t) else t


Buckets = dict[tuple[torch.device, torch.dtype], list[int]]


def _buckets(tensors: Sequence[Tensor]) -> Buckets:
    """Indices of ``tensors`` grouped by (device, dtype), in order."""
    if len(tensors) == 0:
        return {}
    if torch.compiler.is_compiling():
        # Traced once at compile time; the C++ grouping is opaque to dynamo.
        out: dict[tuple[torch.device, torch.dtype], list[int]] = defaultdict(list)
        for i, t in enumerate(tensors):
            out[(t.device, t.dtype)].append(i)
        return dict(out)
    # The C++ grouping costs ~0.1 us per tensor, the Python loop ~1 us.
    grouped = torch._C._group_tensors_by_device_and_dtype([list(tensors)], True)
    return {key: idx for key, (_, idx) in grouped.items()}


def _norm_dtype(dtype: torch.dtype) -> torch.dtype | None:
    # Half-precision squares overflow at |g| ~ 256 (fp16): accumulate in float32.
    if dtype.is_complex:
        return None  # the norm of a complex tensor is real already
    return torch.float64 if dtype == torch.float64 else torch.float32


def _sum_of_squares(
    grads: Sequence[Tensor], foreach: bool, buckets: Buckets | None = None
) -> list[Tensor]:
    """Per-(device, dtype) bucket ``sum ||g_i||^2`` as 0-dim tensors on each bucket's device."""
    out = []
    for (device, dtype), idx in (buckets or _buckets(grads)).items():
        gs = [grads[i] for i in idx]
        acc = _norm_dtype(dtype)
        if device.type == "cpu" and dtype in _BLAS_DTYPES and not torch.compiler.is_compiling():
            out.append(_cpu_sum_of_squares(gs, acc))
            continue
        if foreach and device.type in ("cpu", "cuda", "xpu", "mps"):
            if (
                device.type == "cpu"
                and hasattr(torch, "_foreach_powsum")
                and not torch.compiler.is_compiling()
            ):
                # sum |g|^2 directly: no sqrt-then-square, and 2-3x cheaper per tensor on CPU.
                # (dynamo cannot trace it in torch 2.13, hence the norm under compile.)
                try:
                    squares = torch._foreach_powsum(gs, 2, dtype=acc)
                except (RuntimeError, NotImplementedError) as exc:
                    if "not implemented" not in str(exc).lower():
                        raise  # e.g. a sync flagged by set_sync_debug_mode: do not hide it
                    squares = torch._foreach_pow(torch._foreach_norm(gs, 2, dtype=acc), 2)
            else:
                # Square after stacking: a foreach pow would allocate one output tensor per
                # gradient, host work that delays the update's launch on CUDA.
                norms = torch.stack(_foreach_norm(gs, acc))
                out.append(torch.dot(norms, norms))
                continue
        else:
            squares = [torch.linalg.vector_norm(g, 2, dtype=acc).square() for g in gs]
        out.append(torch.stack(list(squares)).sum())
    return out


def _foreach_norm(gs: list[Tensor], acc: torch.dtype | None) -> list[Tensor]:
    # Pass dtype only when it widens: with an explicit dtype, torch's CUDA multi-tensor
    # norm may take its per-tensor slow route (one launch per gradient).
    if acc is None or all(g.dtype == acc for g in gs):
        return list(torch._foreach_norm(gs, 2))
    return list(torch._foreach_norm(gs, 2, dtype=acc))


_BLAS_DTYPES = (torch.float32, torch.float64)
_BLAS_MIN_NUMEL = 1 << 16


def _cpu_sum_of_squares(gs: list[Tensor], acc: torch.dtype | None) -> Tensor:
    """``sum ||g||^2`` on CPU: BLAS ``dot`` for large tensors, ``powsum`` for the rest.

    torch's CPU norm/powsum reductions run on one thread; BLAS ``dot`` uses them all, which
    halves the norm pass with 2 threads. Small tensors go through one foreach call instead
    of a Python loop.
    """
    big = [g for g in gs if g.numel() >= _BLAS_MIN_NUMEL and g.is_contiguous()]
    small = [g for g in gs if g.numel() < _BLAS_MIN_NUMEL or not g.is_contiguous()]
    parts = [torch.dot(g.view(-1), g.view(-1)) for g in big]
    if small:
        if hasattr(torch, "_foreach_powsum"):
            parts.extend(torch._foreach_powsum(small, 2, dtype=acc))
        else:
            parts.extend(torch._foreach_pow(torch._foreach_norm(small, 2, dtype=acc), 2))
    return torch.stack(parts).sum()


def has_dtensor(tensors: Sequence[Tensor]) -> bool:
    """Whether any of ``tensors`` is a DTensor (one type check per distinct type)."""
    return any(tp.__name__ == "DTensor" for tp in {type(t) for t in tensors})


def global_grad_norm(
    grads: Sequence[Tensor], *, foreach: bool = True, buckets: Buckets | None = None
) -> Tensor:
    r"""One L2 norm over all gradients, without reading it on the host.

    .. math:: n = \sqrt{\sum_i \lVert g_i \rVert_2^2}

    Sums of squares are taken per (device, dtype) bucket (``torch._foreach_powsum``, or
    BLAS ``dot`` for large CPU tensors; half precision accumulated in float32) and combined
    on the device of the first gradient, in float64 when any gradient is float64, else
    float32. DTensor gradients (FSDP2 shards) are summed over their local shards and
    all-reduced over the sharded mesh dimensions, so the result is the norm of the
    *unsharded* gradient, identical on every rank.

    Args:
        grads: The gradients (dense tensors or DTensors); may be empty.
        foreach: Use the multi-tensor norm kernel where the device has one.
        buckets: ``grads``' indices by (device, dtype), if the caller has them already.

    Returns:
        A 0-dim tensor; ``0.`` on CPU for an empty list.
    """
    if len(grads) == 0:
        return torch.zeros(())
    home = local(grads[0]).device
    wide = (torch.float64, torch.complex128)
    out_dtype = torch.float64 if any(g.dtype in wide for g in grads) else torch.float32
    if not has_dtensor(grads):
        parts = [s.to(home, out_dtype) for s in _sum_of_squares(grads, foreach, buckets)]
    else:
        dense = [g for g in grads if not _is_dtensor(g)]
        parts = [s.to(home, out_dtype) for s in _sum_of_squares(dense, foreach)]
        parts += [s.to(home, out_dtype) for s in _sharded_sum_of_squares(
            [g for g in grads if _is_dtensor(g)], foreach
        )]  # fmt: skip
    # One bucket (the usual case): no stack/sum kernels, each a launch on an accelerator.
    total = parts[0] if len(parts) == 1 else torch.stack(parts).sum()
    return total.sqrt()


def _sharded_sum_of_squares(grads: Sequence[Tensor], foreach: bool) -> list[Tensor]:
    """``sum ||g||^2`` of DTensors: local shards, then one all-reduce per sharded mesh dim.

    Shards of a ``Shard`` mesh dimension hold disjoint pieces, so their local sums of
    squares add up (FSDP2's padding is zeros); ``Replicate`` dimensions hold copies and
    are not summed (HSDP). Other placements (``Partial``) go through DTensor ops.
    """
    import torch.distributed as dist

    layouts: dict[tuple, list[Tensor]] = defaultdict(list)
    for g in grads:
        layouts[(g.device_mesh, tuple(g.placements))].append(g)
    out = []
    for (mesh, placements), gs in layouts.items():
        if all(p.is_shard() or p.is_replicate() for p in placements):
            shards = [g.to_local() for g in gs]
            sq = torch.stack(_sum_of_squares(shards, foreach)).sum()
            for dim, placement in enumerate(placements):
                if placement.is_shard():
                    dist.all_reduce(sq, group=mesh.get_group(dim))
            out.append(sq)
        else:
            norms = [torch.linalg.vector_norm(g, 2, dtype=_norm_dtype(g.dtype)) for g in gs]
            out.append(torch.linalg.vector_norm(torch.stack(norms), 2).full_tensor().square())
    return out


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


def decayed_lr_host(step: float, lr: float | Tensor, decay: float, min_lr: float) -> float:
    r""":func:`decayed_lr` on Python floats (``lr`` may be a CPU tensor).

    .. math:: a_t = \max(\text{lr} \cdot e^{-\beta t}, \text{min\_lr})
    """
    a = float(lr) * math.exp(-decay * step) if decay != 0.0 else float(lr)
    return max(a, min_lr) if min_lr > 0.0 else a


def decayed_lr(
    step: Tensor, lr: float | Tensor, decay: float, min_lr: float, dtype: torch.dtype | None = None
) -> Tensor:
    r"""Exponentially decayed learning rate with a floor, as a device tensor.

    .. math:: a_t = \max(\text{lr} \cdot e^{-\beta t}, \text{min\_lr})

    Args:
        step: 0-dim tensor ``t`` (completed, non-skipped steps).
        lr: ``a_0`` (a float, or a 0-dim tensor that may change between steps).
        decay: ``beta >= 0``.
        min_lr: The floor.
        dtype: Dtype of the result (default ``step``'s); float64 keeps float64 runs exact.

    Returns:
        0-dim tensor on ``step``'s device.
    """
    step = step.to(dtype) if dtype is not None else step
    a = torch.exp(step * (-decay)) if decay != 0.0 else torch.ones_like(step)
    lr_t = lr.to(step.device, step.dtype) if isinstance(lr, Tensor) else lr
    a = a * lr_t
    return a.clamp_min(min_lr) if min_lr > 0.0 else a


def _fused_key_ok(device: torch.device, dtype: torch.dtype) -> bool:
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    return device.type in _get_fused_kernels_supported_devices() and dtype in _FLOAT_DTYPES


def fused_supported(tensors: Sequence[Tensor]) -> bool:
    """Whether torch's fused SGD kernel accepts these tensors (device type and dtype)."""
    if any(t.is_sparse for t in tensors):
        return False
    return all(_fused_key_ok(device, dtype) for device, dtype in _buckets(tensors))


def resolve_impl(
    tensors: Sequence[Tensor],
    *,
    foreach: bool | None,
    fused: bool | None,
    buckets: Buckets | None = None,
) -> Impl:
    """Pick the update path.

    Explicit flags win. With both ``None``: ``fused`` when every tensor is on an
    accelerator with the fused kernel, in float16/bfloat16/float32 (one pass, the skip
    inside the kernel, no host sync; the kernels take the lr as float32, so float64 stays
    on foreach). Otherwise ``foreach``: on CPU it reads the finite flag for free and
    updates in place, which measures as fast as the fused CPU kernel for large tensors and
    faster for many small ones. Under
    ``torch.compile`` the fused kernel (no fake-tensor kernel for a tensor lr) is
    replaced by ``foreach``, whose selection inductor fuses.
    """
    if torch.compiler.is_compiling():
        return "single" if foreach is False and not fused else "foreach"
    if fused:
        return "fused"
    if foreach:
        return "foreach"
    if foreach is False:
        return "single"
    keys = (buckets or _buckets(tensors)).keys()
    if (
        fused is None
        # CPU: foreach measures faster (equal at 8M/64 tensors, 1.4x faster at 1M/256).
        # float64 on accelerators stays on foreach: their kernels take the lr as float32.
        and all(
            _fused_key_ok(dev, dt) and dev.type != "cpu" and dt != torch.float64 for dev, dt in keys
        )
        and not any(t.is_sparse for t in tensors)
    ):
        return "fused"
    return "foreach"


def _scalars_on(device: torch.device, dtype: torch.dtype, *tensors: Tensor) -> tuple[Tensor, ...]:
    # Device-to-device copies are asynchronous; the dtype cast keeps half params exact.
    cast = torch.float64 if dtype in (torch.float64, torch.complex128) else torch.float32
    return tuple(t.to(device=device, dtype=cast) for t in tensors)


def host_scalars(device: torch.device) -> bool:
    """Whether a step on ``device`` may read its scalars (norm, flag, ``t``) on the host.

    True for CPU in eager mode: the values are in host memory already, so reading them is
    no device sync, and plain Python arithmetic replaces some fifteen tiny tensor ops.
    """
    return device.type == "cpu" and not torch.compiler.is_compiling()


def _host_flag(ok: Tensor, device: torch.device) -> bool | None:
    """The finite flag as a Python bool where reading it costs no device sync, else None.

    CPU tensors in eager mode: the flag is already in host memory. There an ``if`` beats the
    selection, which costs two extra passes over the params and a temporary per step.
    """
    if ok.device.type == "cpu" and host_scalars(device):
        return bool(ok)
    return None


def _inplace(
    params: list[Tensor],
    grads: list[Tensor],
    bufs: list[Tensor | None],
    idx: list[int],
    *,
    ok: bool,
    a: float,
    s: float,
    weight_decay: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    maximize: bool,
    foreach: bool,
) -> None:
    """In-place update with host scalars (``s = a_t * eta_t``), for a host-known ``ok``."""

    def each(op: str, xs: list[Tensor], *args, **kw) -> list[Tensor]:
        if foreach:
            return getattr(torch, f"_foreach_{op}")(xs, *args, **kw)
        if isinstance(args[0] if args else None, list):
            return [getattr(x, op)(y, *args[1:], **kw) for x, y in zip(xs, args[0], strict=True)]
        return [getattr(x, op)(*args, **kw) for x in xs]

    if momentum != 0.0:
        for j, i in enumerate(idx):
            if bufs[i] is None and not ok:
                # Created on first sight; a skipped step leaves it at zero.
                bufs[i] = torch.zeros_like(params[j])
    if not ok:
        return
    gs = list(each("neg", grads)) if maximize else grads
    if weight_decay != 0.0:
        each("mul_", params, 1.0 - a * weight_decay)
    d = gs
    if momentum != 0.0:
        old = [j for j, i in enumerate(idx) if bufs[i] is not None]
        for j, i in enumerate(idx):
            if bufs[i] is None:
                bufs[i] = gs[j].detach().clone()
        if old:
            bs = [bufs[idx[j]] for j in old]
            each("mul_", bs, momentum)
            each("add_", bs, [gs[j] for j in old], alpha=1.0 - dampening)
        bs_all = [bufs[i] for i in idx]
        d = list(each("add", gs, bs_all, alpha=momentum)) if nesterov else bs_all
    each("add_", params, d, alpha=-s)


def _single_tensor(
    params: list[Tensor],
    grads: list[Tensor],
    bufs: list[Tensor | None],
    *,
    buckets: Buckets | None,
    lr: Tensor,
    eta: Tensor,
    ok: Tensor,
    weight_decay: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    hyper = dict(weight_decay=weight_decay, momentum=momentum, dampening=dampening,
                 nesterov=nesterov, maximize=maximize)  # fmt: skip
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        a, e, k = _scalars_on(p.device, p.dtype, lr, eta, ok)
        k = k.bool()
        host = _host_flag(k, p.device)
        if host is not None:
            s = float(a * e) if host else 0.0
            _inplace([p], [g], bufs, [i], ok=host, a=float(a), s=s, foreach=False, **hyper)
            continue
        g = -g if maximize else g
        new_p = p * (1.0 - a * weight_decay) if weight_decay != 0.0 else p
        d = g
        if momentum != 0.0:
            buf = bufs[i]
            if buf is None:
                # Created on first sight; a skipped step leaves it at zero.
                buf = bufs[i] = torch.where(k, g, 0.0).to(p.dtype)
            else:
                buf.copy_(torch.where(k, buf * momentum + g * (1.0 - dampening), buf))
            d = g + momentum * buf if nesterov else buf
        new_p = new_p - (a * e) * d
        torch.where(k, new_p, p, out=p)


def _multi_tensor(
    params: list[Tensor],
    grads: list[Tensor],
    bufs: list[Tensor | None],
    *,
    buckets: Buckets | None,
    lr: Tensor,
    eta: Tensor,
    ok: Tensor,
    weight_decay: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    hyper = dict(weight_decay=weight_decay, momentum=momentum, dampening=dampening,
                 nesterov=nesterov, maximize=maximize)  # fmt: skip
    for (device, dtype), idx in (buckets or _buckets(params)).items():
        a, e, k = _scalars_on(device, dtype, lr, eta, ok)
        k = k.bool()
        ps = [params[i] for i in idx]
        gs = [grads[i] for i in idx]
        host = _host_flag(k, device)
        if host is not None:
            s = float(a * e) if host else 0.0
            _inplace(ps, gs, bufs, idx, ok=host, a=float(a), s=s, foreach=True, **hyper)
            continue
        if maximize:
            gs = list(torch._foreach_neg(gs))
        d = gs
        if momentum != 0.0:
            fresh = [j for j, i in enumerate(idx) if bufs[i] is None]
            for j in fresh:
                # Created on first sight; a skipped step leaves it at zero.
                bufs[idx[j]] = torch.where(k, gs[j], 0.0).to(dtype)
            old = [j for j in range(len(idx)) if j not in set(fresh)]
            if old:
                bs = [bufs[idx[j]] for j in old]
                new = torch._foreach_mul(bs, momentum)
                torch._foreach_add_(new, [gs[j] for j in old], alpha=1.0 - dampening)
                for b, nb in zip(bs, new, strict=True):
                    torch.where(k, nb, b, out=b)
            bs_all = [bufs[i] for i in idx]
            d = torch._foreach_add(gs, bs_all, alpha=momentum) if nesterov else bs_all
        step = torch._foreach_mul(d, -(a * e))
        if weight_decay != 0.0:
            torch._foreach_add_(step, torch._foreach_mul(ps, 1.0 - a * weight_decay))
        else:
            torch._foreach_add_(step, ps)
        for p, s in zip(ps, step, strict=True):
            torch.where(k, s, p, out=p)


def _fused(
    params: list[Tensor],
    grads: list[Tensor],
    bufs: list[Tensor | None],
    *,
    buckets: Buckets | None,
    lr: Tensor,
    eta: Tensor,
    ok: Tensor,
    weight_decay: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    buckets = buckets or _buckets(params)
    for device, dtype in buckets:
        if not _fused_key_ok(device, dtype):
            raise RuntimeError(
                f"fused=True needs floating-point tensors on a device with torch's fused SGD "
                f"kernel; got a {dtype} tensor on {device}"
            )
    for (device, dtype), idx in buckets.items():
        a, e, k = _scalars_on(device, dtype, lr, eta, ok)
        found_inf = torch.where(k.bool(), 0.0, 1.0).to(torch.float32)  # one kernel
        ps = [params[i] for i in idx]
        if weight_decay != 0.0:
            # Decoupled decay outside the kernel; factor 1 on a skipped step is exact.
            torch._foreach_mul_(ps, torch.where(k.bool(), 1.0 - a * weight_decay, 1.0))
        kw = dict(
            weight_decay=0.0,
            momentum=momentum,
            # The CPU kernel reads the lr as a double; CUDA's reads a float pointer.
            lr=a * e if device.type == "cpu" else (a * e).float(),
            dampening=dampening,
            nesterov=nesterov,
            maximize=maximize,
            found_inf=found_inf,
        )
        if momentum == 0.0:
            torch._fused_sgd_(ps, [grads[i] for i in idx], [], is_first_step=False, **kw)
            continue
        fresh = [i for i in idx if bufs[i] is None]
        seen = [i for i in idx if bufs[i] is not None]
        for i in fresh:
            # Zero-filled: the kernel copies g in, or leaves zeros on a skipped step.
            bufs[i] = torch.zeros_like(params[i])
        for first, sub in ((True, fresh), (False, seen)):
            if sub:
                torch._fused_sgd_(
                    [params[i] for i in sub],
                    [grads[i] for i in sub],
                    [bufs[i] for i in sub],
                    is_first_step=first,
                    **kw,
                )


_PATHS = {"single": _single_tensor, "foreach": _multi_tensor, "fused": _fused}


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
        weight_decay: ``lambda``, decoupled and scaled by ``a_t`` only.
        momentum: ``mu``.
        dampening: ``tau``.
        nesterov: Nesterov momentum.
        maximize: Ascend instead of descend (``g <- -grad``).
        impl: ``"single"``, ``"foreach"`` or ``"fused"``.
        buckets: ``params``' indices by (device, dtype), if the caller has them already.
    """
    if impl not in _PATHS:
        raise ValueError(f"impl must be one of {sorted(_PATHS)}, got {impl!r}")
    if not params:
        return
    if isinstance(ok, bool) and impl != "fused":
        # Scalars already on the host (see host_scalars): plain in-place ops, per bucket.
        for idx in (buckets or _buckets(params)).values():
            _inplace(
                [params[i] for i in idx],
                [grads[i] for i in idx],
                momentum_buffers,
                idx,
                ok=ok,
                a=float(lr),
                s=float(lr) * float(eta),
                weight_decay=weight_decay,
                momentum=momentum,
                dampening=dampening,
                nesterov=nesterov,
                maximize=maximize,
                foreach=impl == "foreach",
            )
        return
    if isinstance(ok, bool):
        # The fused kernel takes device tensors.
        home = params[0].device
        lr, eta, ok = (torch.tensor(v, device=home) for v in (float(lr), float(eta), ok))
    _PATHS[impl](
        params,
        grads,
        momentum_buffers,
        lr=lr,
        eta=eta,
        ok=ok,
        weight_decay=weight_decay,
        momentum=momentum,
        dampening=dampening,
        nesterov=nesterov,
        maximize=maximize,
        buckets=buckets,
    )
