"""The one module that calls torch's private APIs, each behind a feature check.

SuperLevelSGD leans on five private pieces of torch, because they are what torch's own
optimizers use and nothing public does the same job:

* ``torch._C._group_tensors_by_device_and_dtype``: (device, dtype) grouping in C++
  (~0.2 us per tensor against ~1 us for a Python loop);
* ``torch._foreach_powsum``: sum of ``|g|^2`` per tensor without a sqrt-then-square;
* ``torch._fused_sgd_``: the fused SGD kernel, with a tensor lr and ``found_inf``;
* ``torch.utils._foreach_utils._get_fused_kernels_supported_devices``;
* ``Optimizer._accelerator_graph_capture_health_check`` (older torch:
  ``_cuda_graph_capture_health_check``): refuses a captured step without ``capturable``.

Every other module goes through the functions here. Each has a public fallback, so a
torch that drops one still runs (slower); ``missing()`` names what is gone, and
``tests/optim/test_torch_api.py`` fails loudly when that list is not empty or a
signature changed.

Two more private details say whether the params are a shard of the model (so the norm
needs ``shard_group``): FSDP1 marks its flat parameters ``_fsdp_flattened`` and records
their unsharded size (:func:`fsdp1_flat_param_numel`), and a ``ZeroRedundancyOptimizer``
builds its local optimizer inside its own methods (:func:`zero_building`).

A private kernel can also be present and wrong: :func:`fused_sgd_updates_all` probes the
fused SGD kernel once per (device type, dtype) with a tiny step and says whether it
updated every element (torch 2.13's CPU kernel does not, for float16 and bfloat16).
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "Buckets",
    "capture_health_check",
    "foreach_sum_of_squares",
    "fsdp1_flat_param_numel",
    "fused_devices",
    "fused_sgd_",
    "fused_sgd_updates_all",
    "group_by_device_and_dtype",
    "missing",
    "zero_building",
]

Buckets = dict[tuple[torch.device, torch.dtype], list[int]]

_GROUP = getattr(torch._C, "_group_tensors_by_device_and_dtype", None)
_POWSUM = getattr(torch, "_foreach_powsum", None)
_FUSED_SGD = getattr(torch, "_fused_sgd_", None)
_HEALTH_CHECKS = ("_accelerator_graph_capture_health_check", "_cuda_graph_capture_health_check")


def _fused_devices_fn() -> Any:
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:
        return None
    return _get_fused_kernels_supported_devices


_FUSED_DEVICES = _fused_devices_fn()


def missing() -> list[str]:
    """Names of the private torch APIs this torch lacks (each then uses its fallback)."""
    found = {
        "torch._C._group_tensors_by_device_and_dtype": _GROUP is not None,
        "torch._foreach_powsum": _POWSUM is not None,
        "torch._fused_sgd_": _FUSED_SGD is not None,
        "torch.utils._foreach_utils._get_fused_kernels_supported_devices": (
            _FUSED_DEVICES is not None
        ),
        "Optimizer graph-capture health check": any(
            hasattr(torch.optim.Optimizer, n) for n in _HEALTH_CHECKS
        ),
    }
    return [name for name, ok in found.items() if not ok]


def group_by_device_and_dtype(tensors: Sequence[Tensor]) -> Buckets:
    """Indices of ``tensors`` grouped by (device, dtype), in order of first appearance."""
    if len(tensors) == 0:
        return {}
    if _GROUP is None or torch.compiler.is_compiling():
        # Traced once at compile time; the C++ grouping is opaque to dynamo.
        out: Buckets = defaultdict(list)
        for i, t in enumerate(tensors):
            out[(t.device, t.dtype)].append(i)
        return dict(out)
    grouped = _GROUP([list(tensors)], True)
    return {key: idx for key, (_, idx) in grouped.items()}


def foreach_sum_of_squares(tensors: list[Tensor], dtype: torch.dtype | None) -> list[Tensor]:
    """``sum |t|^2`` of each tensor as 0-dim tensors (accumulated in ``dtype``).

    ``torch._foreach_powsum`` where it exists and is implemented (CPU, eager), else the
    square of ``torch._foreach_norm`` (one sqrt and one square more per tensor).
    """
    if _POWSUM is not None and not torch.compiler.is_compiling():
        try:
            return list(_POWSUM(tensors, 2, dtype=dtype))
        except (RuntimeError, NotImplementedError) as exc:
            if "not implemented" not in str(exc).lower():
                raise  # e.g. a sync flagged by set_sync_debug_mode: do not hide it
    return list(torch._foreach_pow(torch._foreach_norm(tensors, 2, dtype=dtype), 2))


def fused_devices() -> tuple[str, ...]:
    """Device types with torch's fused optimizer kernels (empty without ``_fused_sgd_``)."""
    if _FUSED_SGD is None:
        return ()
    if _FUSED_DEVICES is None:
        return ("cuda", "cpu")
    return tuple(_FUSED_DEVICES())


def fused_sgd_(
    params: list[Tensor],
    grads: list[Tensor],
    bufs: list[Tensor],
    *,
    lr: Tensor,
    found_inf: Tensor,
    momentum: float,
    dampening: float,
    nesterov: bool,
    maximize: bool,
    is_first_step: bool,
) -> None:
    """torch's fused SGD kernel (no weight decay) with a tensor lr and ``found_inf``."""
    if _FUSED_SGD is None:
        raise RuntimeError("this torch has no torch._fused_sgd_; use foreach=True")
    _FUSED_SGD(
        params,
        grads,
        bufs,
        weight_decay=0.0,
        momentum=momentum,
        lr=lr,
        dampening=dampening,
        nesterov=nesterov,
        maximize=maximize,
        is_first_step=is_first_step,
        found_inf=found_inf,
    )


# Longer than every vector width (AVX-512: 32 half floats) plus a tail that is not.
_PROBE_NUMEL = 67


@functools.cache
def fused_sgd_updates_all(device_type: str, dtype: torch.dtype) -> bool:
    """Whether torch's fused SGD kernel updates every element of ``dtype`` tensors.

    A probe step, once per process and key: ``p = 0``, ``g = 1``, ``lr = 0.5`` on a
    67-element tensor, without momentum and with a fresh momentum buffer (the kernel's
    two branches); it must give ``p = -0.5`` everywhere (exact in every float dtype).
    torch 2.13's CPU kernel for float16 and bfloat16 leaves the elements of its
    vectorised chunks unchanged (n = 16, 32, 64: none updated; n = 31: the 15-element
    tail only), so the probe fails there and those tensors take the foreach path.

    Probed on CPU only, where reading the result is free; on an accelerator the probe
    would be a device sync inside the first step, so its kernels are trusted (``True``).
    ``False`` without the kernel, or when the probe step raises.
    """
    if _FUSED_SGD is None:
        return False
    if device_type != "cpu":
        return True
    lr = torch.tensor(0.5, dtype=torch.float64)  # the CPU kernel reads a double
    found_inf = torch.zeros((), dtype=torch.float32)
    want = torch.full((_PROBE_NUMEL,), -0.5, dtype=dtype)
    for momentum in (0.0, 0.5):
        p = torch.zeros(_PROBE_NUMEL, dtype=dtype)
        g = torch.ones(_PROBE_NUMEL, dtype=dtype)
        bufs = [torch.zeros_like(p)] if momentum else []
        try:
            fused_sgd_(
                [p], [g], bufs, lr=lr, found_inf=found_inf, momentum=momentum,
                dampening=0.0, nesterov=False, maximize=False, is_first_step=True,
            )  # fmt: skip
        except RuntimeError:
            return False
        if not torch.equal(p, want):
            return False
    return True


def capture_health_check(optimizer: torch.optim.Optimizer) -> None:
    """torch's check that a step captured in a graph has ``capturable`` in every group.

    Skipped under ``torch.compile`` (dynamo cannot trace it; inductor checks itself).
    """
    if torch.compiler.is_compiling():
        return
    for name in _HEALTH_CHECKS:
        check = getattr(optimizer, name, None)
        if check is not None:
            check()
            return


def fsdp1_flat_param_numel(p: Tensor) -> tuple[int, int] | None:
    """``(numel here, numel of the whole flat parameter)`` for an FSDP1 flat parameter.

    ``None`` for any other tensor. A shard holds fewer elements than the whole (FSDP1
    shards at wrapping time, before an optimizer can be built); ``NO_SHARD`` and a
    world of one hold all of them. An original parameter under ``use_orig_params=True``
    is marked ``_fsdp_flattened`` too but carries no size: ``(numel, -1)``.
    """
    if not getattr(p, "_fsdp_flattened", False):
        return None
    whole = getattr(p, "_unpadded_unsharded_size", None)
    return p.numel(), (-1 if whole is None else int(torch.Size(whole).numel()))


def zero_building(max_depth: int = 8) -> Any:
    """The ``ZeroRedundancyOptimizer`` whose method is on the call stack, or ``None``.

    ZeRO builds its local optimizer (``optimizer_class(...)``) in ``_init_local_optimizer``
    and adds groups to it from its own ``add_param_group``: a frame within ``max_depth``
    whose ``self`` is one. ``None`` when ZeRO was never imported (nothing is imported here).
    """
    module = sys.modules.get("torch.distributed.optim.zero_redundancy_optimizer")
    cls = getattr(module, "ZeroRedundancyOptimizer", None)
    if cls is None:
        return None
    frame = inspect.currentframe()
    try:
        for _ in range(max_depth):
            frame = frame.f_back if frame is not None else None
            if frame is None:
                return None
            owner = frame.f_locals.get("self")
            if isinstance(owner, cls):
                return owner
        return None
    finally:
        del frame  # no reference cycle through the frames
