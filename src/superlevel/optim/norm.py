r"""The global gradient norm: one L2 norm over every gradient, local, sharded or both.

.. math:: n = \sqrt{\textstyle\sum_i \lVert g_i \rVert_2^2}

over every gradient of every param group, and over the ranks of a process group when the
params are sharded (``shard_group``: ZeRO, FSDP1) or DTensors (FSDP2). Two flavours:

* :func:`global_grad_norm` returns a 0-dim tensor and never reads a value on the host
  (accelerators, ``torch.compile``, CUDA graphs). Squares of float16/bfloat16/float32
  gradients are accumulated in float64, so no finite gradient can overflow the sum
  (``finfo(float32).max ** 2`` is ~1e77); float64 gradients (or a device without
  float64) get a scaled fallback ``m * ||g / m||`` with ``m = max |g|``, selected with
  ``torch.where`` when the plain sum is not finite.
* :func:`host_grad_norm` returns a Python float, for CPU steps in eager mode where the
  partial sums are in host memory already: ``_foreach_powsum`` in the gradients' own
  float32 at full speed, and the scaled fallback is computed only when the plain sum came
  out non-finite (an ``if``, free on the host).

Both are exact for every finite gradient the dtype can hold, and non-finite (inf or
nan) exactly when some gradient is.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ._torch_api import Buckets, foreach_sum_of_squares, group_by_device_and_dtype

__all__ = [
    "global_grad_norm",
    "gradient_share",
    "has_dtensor",
    "host_grad_norm",
    "is_dtensor",
    "local",
]


def is_dtensor(t: Tensor) -> bool:
    """Whether ``t`` is a DTensor (torch.distributed is imported only when it may be)."""
    if type(t).__name__ != "DTensor":
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def has_dtensor(tensors: Sequence[Tensor]) -> bool:
    """Whether any of ``tensors`` is a DTensor (one type check per distinct type)."""
    return any(tp.__name__ == "DTensor" for tp in {type(t) for t in tensors})


def local(t: Tensor) -> Tensor:
    """The local shard of a DTensor (same storage), or ``t`` itself.

    Every update is elementwise, so updating each rank's shard in place updates the
    sharded parameter; only the norm needs the other ranks.
    """
    return t.to_local() if is_dtensor(t) else t


def wide_dtype(device: torch.device) -> torch.dtype:
    """The accumulation dtype of the sync-free norm on ``device`` (MPS has no float64)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _can_overflow(dtype: torch.dtype, device: torch.device) -> bool:
    # float64 squares overflow above |g| ~ 1.3e154; without float64 so do float32's.
    return dtype in (torch.float64, torch.complex128) or device.type == "mps"


def _wide_norms(gs: list[Tensor], dtype: torch.dtype, device: torch.device) -> list[Tensor]:
    """``||g||`` of each gradient of one (device, dtype) bucket, accumulated wide."""
    acc = wide_dtype(device)
    if dtype.is_complex:
        return [torch.linalg.vector_norm(g, 2).to(acc) for g in gs]
    if dtype == acc:
        return list(torch._foreach_norm(gs, 2))
    # One multi-tensor launch with a float64 output (torch's fast CUDA route takes it).
    return list(torch._foreach_norm(gs, 2, dtype=acc))


def _sum_of_squared_norms(norms: list[Tensor]) -> Tensor:
    """``sum n_i^2`` of per-tensor norms (one bucket), as a 0-dim tensor."""
    stacked = torch.stack(norms) if len(norms) > 1 else norms[0].reshape(1)
    # Square after stacking: a foreach pow would allocate one output per gradient.
    return torch.dot(stacked, stacked)


def _wide_partial(gs: list[Tensor], dtype: torch.dtype, device: torch.device) -> Tensor:
    """``sum ||g||^2`` of one (device, dtype) bucket, accumulated wide, no host read."""
    return _sum_of_squared_norms(_wide_norms(gs, dtype, device))


def _host_squares(gs: list[Tensor], dtype: torch.dtype) -> list[Tensor]:
    """``||g||^2`` of each CPU gradient of one bucket at full speed (may overflow).

    One ``_foreach_powsum`` over the bucket (squares summed directly, no sqrt-then-square;
    half precision accumulated in float32). Chosen over a BLAS ``dot`` per tensor by
    interleaved measurements on a shared 2-core machine (8e6 floats in 64 tensors, 2
    threads): in the fastest steps the two were within ~25% of each other, either way
    round; in the median ``powsum`` was 8-11x faster, because BLAS threads stall when the
    cores are oversubscribed.
    """
    if dtype.is_complex:
        return [torch.linalg.vector_norm(g).double().square() for g in gs]
    acc = None if dtype in (torch.float32, torch.float64) else torch.float32
    return foreach_sum_of_squares(gs, acc)


def _host_sum(squares: list[Tensor]) -> Tensor:
    """``sum ||g||^2`` of one bucket's per-tensor squares, in float64."""
    return torch.stack(squares).sum(dtype=torch.float64)


def _host_partial(gs: list[Tensor], dtype: torch.dtype) -> Tensor:
    """``sum ||g||^2`` of one CPU bucket at full speed (may overflow; see the fallback)."""
    return _host_sum(_host_squares(gs, dtype))


def gradient_share(g: Tensor, *, host: bool) -> Tensor | None:
    r"""One gradient's share of the global norm, in the form the norm functions combine.

    What :func:`host_grad_norm` (``host``: :math:`\lVert g \rVert^2`, as its
    ``_foreach_powsum`` takes it) or :func:`global_grad_norm` (device scalars:
    :math:`\lVert g \rVert` accumulated in float64) computes for ``g`` inside its bucket,
    so a norm combined from shares taken earlier (during backward) is the norm they take.
    ``None`` where the sync-free overflow-free norm needs the gradient itself (float64
    gradients with device scalars, and every dtype on MPS): there the fallback
    ``m * ||g / m||`` is selected with ``torch.where`` and so always computed.
    """
    if host:
        return _host_squares([g], g.dtype)[0]
    if _can_overflow(g.dtype, g.device):
        return None
    return _wide_norms([g], g.dtype, g.device)[0]


def _all_reduce(t: Tensor, group: Any, op: str = "sum") -> Tensor:
    if group is not None:
        import torch.distributed as dist

        dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX, group=group)
    return t


def _scaled_norm(grads: Sequence[Tensor], home: torch.device, shard_group: Any) -> Tensor:
    r"""Overflow-free norm: :math:`m \sqrt{\sum (g / m)^2}` with :math:`m = \max |g|`.

    ``m`` is reduced with MAX over ``shard_group``, so every rank scales alike; non-finite
    ``m`` (an inf or nan in some gradient) is returned as it is.
    """
    acc = wide_dtype(home)
    maxes = [torch.linalg.vector_norm(g, math.inf).to(home, acc) for g in grads]
    m = _all_reduce(torch.stack(maxes).amax() if maxes else torch.zeros((), dtype=acc,
                    device=home), shard_group, "max")  # fmt: skip
    scale = torch.where(torch.isfinite(m) & (m > 0), m, 1.0)
    sq = torch.zeros((), dtype=acc, device=home)
    for g in grads:
        x = g.abs() if g.is_complex() else g
        x = x / scale.to(x.device, x.dtype)  # |x| <= 1: no square overflows
        sq = sq + torch.linalg.vector_norm(x, 2, dtype=wide_dtype(x.device)).to(home, acc) ** 2
    sq = _all_reduce(sq, shard_group)
    return torch.where(torch.isfinite(m), scale * sq.sqrt(), m)


def _dtensor_partial(grads: Sequence[Tensor]) -> Tensor:
    """``sum ||g||^2`` of DTensors (FSDP2): local shards, one all-reduce per sharded dim.

    Shards of a ``Shard`` mesh dimension hold disjoint pieces, so their local sums of
    squares add up (FSDP2's padding is zeros); ``Replicate`` dimensions hold copies and
    are not summed (HSDP). Other placements (``Partial``) go through DTensor ops.
    """
    layouts: dict[tuple, list[Tensor]] = defaultdict(list)
    for g in grads:
        layouts[(g.device_mesh, tuple(g.placements))].append(g)
    out = []
    for (mesh, placements), gs in layouts.items():
        home = gs[0].to_local().device
        if all(p.is_shard() or p.is_replicate() for p in placements):
            sq = _local_sum(
                [g.to_local() for g in gs], group_by_device_and_dtype([g.to_local() for g in gs])
            )
            for dim, placement in enumerate(placements):
                if placement.is_shard():
                    _all_reduce(sq, mesh.get_group(dim))
            out.append(sq)
        else:
            acc = wide_dtype(home)
            norms = [torch.linalg.vector_norm(g, 2, dtype=acc) for g in gs]
            full = torch.linalg.vector_norm(torch.stack(norms), 2).full_tensor()
            out.append(full.square())
    return torch.stack(out).sum()


def _local_sum(
    grads: Sequence[Tensor], buckets: Buckets, shares: Sequence[Tensor] | None = None
) -> Tensor:
    home = grads[0].device
    acc = wide_dtype(home)
    parts = [
        (
            _wide_partial([grads[i] for i in idx], dtype, device)
            if shares is None
            else _sum_of_squared_norms([shares[i] for i in idx])
        ).to(home, acc)
        for (device, dtype), idx in buckets.items()
    ]
    # One bucket (the usual case): no stack/sum kernels, each a launch on an accelerator.
    return parts[0] if len(parts) == 1 else torch.stack(parts).sum()


def global_grad_norm(
    grads: Sequence[Tensor],
    *,
    foreach: bool = True,
    buckets: Buckets | None = None,
    shard_group: Any = None,
    shares: Sequence[Tensor] | None = None,
) -> Tensor:
    r"""One L2 norm over all gradients (and ranks), without reading it on the host.

    .. math:: n = \sqrt{\textstyle\sum_i \lVert g_i \rVert_2^2}

    Args:
        grads: The gradients (dense tensors or DTensors); may be empty.
        foreach: Kept for callers; every path takes multi-tensor norms where torch has them.
        buckets: ``grads``' indices by (device, dtype), if the caller has them already.
        shard_group: A ``torch.distributed`` process group whose ranks each hold a
            disjoint shard of the gradients (ZeRO, FSDP1): the sum of squares is
            all-reduced over it (one collective, no host sync). ``None``: local.
            DTensor gradients (FSDP2) are reduced over their mesh instead.
        shares: ``gradient_share(g, host=False)`` of each of ``grads`` (dense only),
            taken earlier (during backward): combined instead of reading the gradients,
            except by the overflow-free fallback of float64 buckets.

    Returns:
        A 0-dim float64 tensor (float32 on MPS) on the first gradient's device; ``0.``
        on CPU for an empty list (after joining the all-reduce).
    """
    del foreach  # one multi-tensor norm per bucket on every device
    dense = [g for g in grads if not is_dtensor(g)] if has_dtensor(grads) else list(grads)
    if shares is not None and (len(dense) < len(grads) or len(shares) != len(grads)):
        raise ValueError(
            f"shares: one per dense gradient, got {len(shares)} for {len(grads)} gradients "
            f"({len(grads) - len(dense)} of them DTensors)"
        )
    if len(dense) < len(grads):
        if shard_group is not None:
            raise ValueError(
                "shard_group with DTensor gradients: FSDP2 norms are reduced over their "
                "device mesh already; pass shard_group=None"
            )
        sharded = _dtensor_partial([g for g in grads if is_dtensor(g)])
        home = sharded.device
        total = sharded if not dense else sharded + _local_sum(
            dense, group_by_device_and_dtype(dense)
        ).to(home)  # fmt: skip
        return total.sqrt()
    if not dense:
        zero = torch.zeros((), dtype=torch.float64)
        return _all_reduce(zero, shard_group).sqrt()
    buckets = buckets or group_by_device_and_dtype(dense)
    home = dense[0].device
    total = _all_reduce(_local_sum(dense, buckets, shares), shard_group)
    plain = total.sqrt()
    if not any(_can_overflow(dt, dev) for dev, dt in buckets):
        return plain
    # Selected, not branched on: the fallback runs every step for float64 gradients.
    return torch.where(torch.isfinite(plain), plain, _scaled_norm(dense, home, shard_group))


def host_grad_norm(
    grads: Sequence[Tensor],
    *,
    buckets: Buckets | None = None,
    shard_group: Any = None,
    shares: Sequence[Tensor] | None = None,
) -> float:
    """:func:`global_grad_norm` as a Python float, for CPU gradients in eager mode.

    The partial sums are in host memory, so reading them costs no device sync; the
    overflow-free fallback runs only when the plain sum is not finite. ``shares``:
    ``gradient_share(g, host=True)`` of each of ``grads``, taken earlier (during
    backward), summed instead of reading the gradients (the fallback still reads them).
    """
    if shares is not None and len(shares) != len(grads):
        raise ValueError(f"shares: one per gradient, got {len(shares)} for {len(grads)}")
    if not grads:
        return float(_all_reduce(torch.zeros((), dtype=torch.float64), shard_group).sqrt())
    buckets = buckets or group_by_device_and_dtype(grads)
    parts = [
        _host_partial([grads[i] for i in idx], dt)
        if shares is None
        else _host_sum([shares[i] for i in idx])
        for (_, dt), idx in buckets.items()
    ]
    total = parts[0] if len(parts) == 1 else torch.stack(parts).sum()
    n = math.sqrt(float(_all_reduce(total, shard_group)))
    if math.isfinite(n):
        return n
    return float(_scaled_norm(list(grads), grads[0].device, shard_group))
