r"""The global gradient norm taken during backward: :func:`norm_in_backward`.

SuperLevelSGD's step reads every gradient twice: once for the global norm
:math:`n = \sqrt{\sum_i \lVert g_i \rVert^2}`, once for the update. The one moment a
gradient is in cache at no extra cost is when backward writes it. ``norm_in_backward(opt)``
registers a ``Tensor.register_post_accumulate_grad_hook`` on each of the optimizer's params;
the hook stores that gradient's share of the norm (:func:`.norm.gradient_share`:
:math:`\lVert g \rVert^2` as the CPU host norm takes it, :math:`\lVert g \rVert`
accumulated in float64 with device scalars) in the param's slot, overwritten on every
accumulation, so the slot holds the share of the accumulated gradient. ``step()`` combines
the shares (one small reduction, no host sync, the arithmetic of the norm it replaces)
and reads each gradient only for the update.

**Always correct, fast when it can be.** The shares are used only when every gradient the
step uses is the tensor its hook saw, unchanged since: the same Python object (a weak
reference, so a freed gradient is not kept alive), the same version counter (every
in-place op bumps it: ``clip_grad_norm_``, ``mul_``, ``zero_()``, an accumulation) and the
same storage (``data_ptr``: ``module.half()`` swaps a gradient's data without a version
change). These are host-side integers: checking them is no device sync. Writes that
bypass the version counter are ruled out by context instead: ``GradScaler.unscale_``
(``torch._amp_foreach_non_finite_check_and_unscale_`` leaves the version alone, so a step
called from an enabled ``GradScaler.step`` falls back), ``torch.distributed`` collectives
(every multi-process run falls back: DDP, FSDP and a hand-written ``all_reduce`` write the
reduced gradients after the hooks), gradients that are views of a larger buffer (DDP's
``gradient_as_bucket_view``), DTensors, a CUDA graph capture (a replay would reuse the
captured shares). Anything else falls back for that step, and the handle counts how often
and why (:attr:`NormInBackward.reasons`). Not seen: edits through ``grad.data`` (torch
gives ``.data`` its own version counter) and raw writes by extensions; and a
``scaler.unscale_(opt)`` followed by ``opt.step()`` without ``scaler.step``.

**Why a function returning a handle, not a constructor flag.** It registers hooks on the
params, a side effect on tensors the optimizer does not own, and torch's way to do that is
a call that returns a removable handle (``register_*_hook``,
``Optimizer.register_step_pre_hook``). It is a runtime attachment, not a setting of the
rule: it has no place in ``param_groups`` or ``state_dict()``, and it can be added to an
optimizer someone else built (Lightning's ``configure_optimizers``, the Hugging Face
Trainer, accelerate) and removed without rebuilding it. The hooks go when the handle's
:meth:`~NormInBackward.remove` is called, on leaving a ``with`` block, or when the
optimizer is garbage collected.

No library we know of takes a global norm this way (torch's "optimizer in backward" steps
each parameter from its own hook, which a global norm rules out), so it is written here.
"""

from __future__ import annotations

import sys
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor

from . import functional as F
from ._torch_api import Buckets
from .norm import global_grad_norm, gradient_share, host_grad_norm, is_dtensor

__all__ = ["REASONS", "NormInBackward", "attached", "norm_in_backward"]

# Why a step fell back to reading the gradients (the keys of NormInBackward.reasons).
NO_HOOK = "no hook saw the gradient"
REPLACED = "gradient replaced after its hook"
EDITED = "gradient changed in place after its hook"
MOVED = "gradient cast or moved after its hook"
VIEW = "gradient is a view of a larger buffer"
WIDE = "float64 gradient with device scalars"
FORM = "share taken for the other scalar mode"
DTENSOR = "DTensor gradients (FSDP2)"
DISTRIBUTED = "multi-process run"
GRAD_SCALER = "called from GradScaler.step"
CAPTURE = "CUDA graph capture"
REASONS = (NO_HOOK, REPLACED, EDITED, MOVED, VIEW, WIDE, FORM, DTENSOR, DISTRIBUTED,
           GRAD_SCALER, CAPTURE)  # fmt: skip

# Optimizer -> its handle; weak, so the registry never keeps an optimizer alive.
_ATTACHED: weakref.WeakKeyDictionary[Any, NormInBackward] = weakref.WeakKeyDictionary()


class _Seen(NamedTuple):
    """What a hook saw of one gradient."""

    grad: weakref.ReferenceType[Tensor]
    version: int
    storage: int  # data_ptr()
    share: Tensor | None  # gradient_share(g), None where none could be taken
    host: bool  # the scalar mode the share was taken for
    why: str  # why share is None ("" when there is one)


def norm_in_backward(optimizer: torch.optim.Optimizer) -> NormInBackward:
    """Take ``optimizer``'s global gradient norm during backward, one share per param.

    Registers a post-accumulate-grad hook on every param of ``optimizer`` that requires a
    gradient (params added or unfrozen later are hooked at the next step, and used from
    the backward after it). From then on ``optimizer.step()`` combines the shares the
    hooks took instead of reading the gradients for the norm, whenever every gradient is
    the one its hook saw, unchanged; otherwise it takes the norm as before for that step
    and counts why (see the module docstring).

    Args:
        optimizer: A :class:`~superlevel.optim.SuperLevelSGD` without hooks attached.

    Returns:
        The handle: counters ``cached``, ``fallbacks``, ``reasons``, ``last``, and
        :meth:`~NormInBackward.remove` (also on leaving a ``with`` block).

    Raises:
        TypeError: ``optimizer`` is not a SuperLevelSGD.
        ValueError: hooks are attached to it already.

    Example:
        >>> handle = norm_in_backward(opt)  # doctest: +SKIP
        >>> loss.backward(); opt.step(); opt.zero_grad()  # doctest: +SKIP
        >>> handle.cached, handle.fallbacks, handle.reasons  # doctest: +SKIP
    """
    from .optimizer import SuperLevelSGD  # the optimizer module imports this one

    if not isinstance(optimizer, SuperLevelSGD):
        raise TypeError(
            f"norm_in_backward needs a SuperLevelSGD, got {type(optimizer).__name__} "
            f"(for a wrapper, pass the SuperLevelSGD it wraps)"
        )
    if optimizer in _ATTACHED:
        raise ValueError(
            "norm_in_backward: hooks are attached to this optimizer already; call remove() "
            "on the handle the first call returned before attaching again"
        )
    return NormInBackward(optimizer)


def attached(optimizer: torch.optim.Optimizer) -> NormInBackward | None:
    """The handle attached to ``optimizer`` by :func:`norm_in_backward`, or ``None``."""
    if torch.compiler.is_compiling() or not _ATTACHED:
        return None
    return _ATTACHED.get(optimizer)


def _make_hook(owner: weakref.ReferenceType[NormInBackward], slot: int) -> Callable:
    # Holds the handle weakly: the hooks never keep an optimizer's records alive.
    def hook(p: Tensor) -> None:
        handle = owner()
        if handle is not None:
            handle._record(slot, p.grad)

    return hook


class NormInBackward:
    """The hooks of :func:`norm_in_backward` on one optimizer, and what they achieved.

    Attributes:
        cached: Steps whose norm was combined from the hooks' shares.
        fallbacks: Steps that read the gradients for the norm instead.
        reasons: ``Counter`` of why steps fell back (the strings in :data:`REASONS`).
        last: Why the last step fell back; ``None`` when it used the shares (or before
            any step).

    Steps under ``torch.compile`` take the norm themselves and are not counted.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.cached = 0
        self.fallbacks = 0
        self.reasons: Counter[str] = Counter()
        self.last: str | None = None
        self._optimizer = weakref.ref(optimizer)
        self._slot: dict[int, int] = {}  # id(param) -> slot (params are held: ids stay)
        self._params: list[Tensor] = []
        self._seen: list[_Seen | None] = []
        self._hooks: list[Any] = []
        # The scalar mode CPU gradients' shares are taken for (the step's, as of now;
        # accelerators always use device scalars). Kept, not asked per hook: ~1.5 us.
        self._host_cpu = F.host_scalars([torch.device("cpu")])
        for group in optimizer.param_groups:
            for p in group["params"]:
                self._hook(p)
        _ATTACHED[optimizer] = self
        # Hooks go with the optimizer, even while someone still holds this handle.
        self._finalizer = weakref.finalize(optimizer, self._remove_hooks)

    # ------------------------------------------------------------ attaching
    @property
    def attached(self) -> bool:
        """Whether the hooks are still registered."""
        return self._finalizer.alive

    def remove(self) -> None:
        """Remove every hook; the optimizer takes the norm from the gradients again."""
        optimizer = self._optimizer()
        if optimizer is not None and _ATTACHED.get(optimizer) is self:
            del _ATTACHED[optimizer]
        self._finalizer()  # runs _remove_hooks once, then is dead

    def __enter__(self) -> NormInBackward:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "attached" if self.attached else "removed"
        return (
            f"NormInBackward({state}, {len(self._params)} params, cached={self.cached}, "
            f"fallbacks={self.fallbacks}, reasons={dict(self.reasons)})"
        )

    def _remove_hooks(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        self._seen = [None] * len(self._params)  # the shares go with the hooks

    def _hook(self, p: Tensor) -> None:
        """Hook ``p`` (a leaf that requires grad, not a DTensor); others get no slot."""
        if not (p.requires_grad and p.is_leaf) or is_dtensor(p) or id(p) in self._slot:
            return
        slot = len(self._params)
        self._slot[id(p)] = slot
        self._params.append(p)
        self._seen.append(None)
        self._hooks.append(
            p.register_post_accumulate_grad_hook(_make_hook(weakref.ref(self), slot))
        )

    # ------------------------------------------------------------ during backward
    def _record(self, slot: int, g: Tensor | None) -> None:
        """The hook's work: ``g``'s share of the norm, and what ``g`` is now."""
        if g is None or g.layout != torch.strided:
            self._seen[slot] = None  # sparse: step() refuses it anyway
            return
        host = self._host_cpu and g.is_cpu
        share, why = None, VIEW
        if g._base is None:  # a view's buffer may be written behind its version (DDP)
            if torch.is_grad_enabled():  # a create_graph=True backward runs hooks so
                with torch.no_grad():
                    share = gradient_share(g, host=host)
            else:
                share = gradient_share(g, host=host)
            why = "" if share is not None else WIDE
        self._seen[slot] = _Seen(weakref.ref(g), g._version, g.data_ptr(), share, host, why)

    # ------------------------------------------------------------ in step()
    def cached_norm(
        self,
        params: Sequence[Tensor],
        grads: Sequence[Tensor],
        buckets: Buckets,
        *,
        host: bool,
        dense: bool,
        shard_group: Any = None,
    ) -> float | Tensor | None:
        r"""The step's norm :math:`\sqrt{\sum_i s_i}` from the hooks' shares, or ``None``.

        ``None`` (counted, with the reason) when any gradient is not the one its hook
        saw, unchanged, or the context rules the shares out; the caller then takes the
        norm from the gradients. Checks host-side integers only: no device sync.

        Args:
            params: The params with a gradient, in the step's order.
            grads: Their (local) gradients.
            buckets: ``grads``' indices by (device, dtype).
            host: Whether the step reads its scalars on the host (a float is returned).
            dense: False when some gradient is a DTensor.
            shard_group: As in :func:`~superlevel.optim.norm.global_grad_norm`.
        """
        if torch.compiler.is_compiling():
            return None
        why = _ruled_out(buckets, dense)
        shares = None
        if not why:
            shares, why = self._shares(params, grads, host)
        if any(dev.type == "cpu" for dev, _ in buckets):
            self._host_cpu = host  # the next backward takes its shares for this mode
        if shares is None:
            self.fallbacks += 1
            self.reasons[why] += 1
            self.last = why
            return None
        self.cached += 1
        self.last = None
        if host:
            return host_grad_norm(grads, buckets=buckets, shard_group=shard_group, shares=shares)
        return global_grad_norm(grads, buckets=buckets, shard_group=shard_group, shares=shares)

    def _shares(
        self, params: Sequence[Tensor], grads: Sequence[Tensor], host: bool
    ) -> tuple[list[Tensor] | None, str]:
        """Every gradient's share, or ``None`` and why the first one that has none."""
        slot_of, seen = self._slot, self._seen
        shares = []
        for p, g in zip(params, grads, strict=True):
            slot = slot_of.get(id(p))
            s = None if slot is None else seen[slot]
            if s is None:
                if slot is None and self.attached:
                    for q in params:  # added or unfrozen since: hooked from now on
                        self._hook(q)
                return None, NO_HOOK
            if s.grad() is not g:
                return None, REPLACED
            if g._version != s.version:
                return None, EDITED
            if g.data_ptr() != s.storage:
                return None, MOVED
            if s.share is None:
                return None, s.why
            if s.host != host:
                return None, FORM
            shares.append(s.share)
        return shares, ""


def _ruled_out(buckets: Buckets, dense: bool) -> str:
    """Why the context rules the shares out for this step ("" when it does not)."""
    if not dense:
        return DTENSOR
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return DISTRIBUTED
    if _called_from_grad_scaler():
        return GRAD_SCALER
    if any(dev.type == "cuda" for dev, _ in buckets) and torch.cuda.is_current_stream_capturing():
        return CAPTURE
    return ""


def _called_from_grad_scaler(depth: int = 16) -> bool:
    """Whether an enabled ``GradScaler`` (``torch.amp``, ``torch.cuda.amp``, FSDP's) is
    among the callers of this step.

    ``GradScaler.step`` unscales the gradients in place with
    ``torch._amp_foreach_non_finite_check_and_unscale_``, which does not bump their
    version counters (torch 2.13; ``tests/optim/test_backward_norm.py`` checks both this
    and that the scaled step falls back), then calls ``optimizer.step()`` a few frames
    down. The walk looks at ``depth`` frames: a few microseconds.
    """
    frame = sys._getframe(1)
    for _ in range(depth):
        if frame is None:
            return False
        if frame.f_globals.get("__name__", "").endswith("grad_scaler"):
            is_enabled = getattr(frame.f_locals.get("self"), "is_enabled", None)
            if is_enabled is None or is_enabled():
                return True
        frame = frame.f_back
    return False
