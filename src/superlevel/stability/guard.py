"""Lyapunov guard: enforce ``dV = L(theta_{t+1}) - L(theta_t) <= tol`` on every step.

The loss on the current batch is used as the Lyapunov function ``V``. A step of *any*
``torch.optim`` optimizer is tried; when it raises the loss on the same batch, the
parameters, the optimizer state and the groups' hyperparameters are restored bit-exactly
and the step is retried with every group's ``lr`` scaled by ``shrink**k``
(a backtracking line search on the optimizer's own direction).

The snapshot/restore machinery is a small functional core (:class:`Snapshot`) so that it
can be tested on its own; :class:`LyapunovGuard` is the thin loop around it. The guard is
a ``torch.optim.Optimizer`` itself (the inner optimizer's groups and state, its own
``step(closure)``), so frameworks that take an optimizer take it; written here rather than
taken from a library because no maintained PyTorch package offers a same-batch
accept/reject step around an arbitrary optimizer (optax's backtracking line search is the
nearest relative, in JAX).
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["GuardRecord", "LyapunovGuard", "Snapshot"]

_ON_FAILURE = ("skip", "accept")
_COUNTERS = ("steps", "violations", "retries", "skips", "forced")
_STATE_KEY = "lyapunov_guard"  # the guard's entry in its state_dict


def _copy_into(dst: list[Tensor], src: list[Tensor]) -> None:
    """``dst[i] <- src[i]`` for all i, in one foreach call where possible."""
    if dst:
        torch._foreach_copy_(dst, src)


class Snapshot:
    """Reusable bit-exact snapshot of parameters, gradients and optimizer state.

    Buffers are allocated on the first :meth:`take` and reused by later calls whenever
    shapes, dtypes and devices still match, so steady-state snapshots cost one
    ``_foreach_copy_`` over the parameters (and the state tensors) and no allocation.

    What is captured:
        * every parameter in ``optimizer.param_groups`` (values);
        * their ``.grad`` when ``grads=True`` (``None`` grads are remembered as ``None``);
        * ``optimizer.state``: which params have state, which keys, tensor values
          (copied into buffers) and non-tensor values (deep-copied);
        * every group's entries except ``params`` (tensors cloned: a tensor ``lr``, or
          step counters kept in the group as ``SuperLevelSGD`` does).

    Restoring writes tensors back *in place* when the live tensor is still the same
    shape, so references held elsewhere (e.g. a captured CUDA graph) stay valid; state
    and group entries created during the trial are deleted.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.params: list[Tensor] = [p for g in optimizer.param_groups for p in g["params"]]
        self._param_buf: list[Tensor] = []
        self._grad_buf: dict[int, Tensor] = {}
        self._grad_none: set[int] = set()
        self._has_grads = False
        # state: param index -> {key: buffer tensor | ("value", python object)}
        self._state_buf: dict[int, dict[str, Tensor]] = {}
        self._state_obj: dict[int, dict[str, Any]] = {}
        self._state_keys: dict[int, tuple[str, ...]] = {}
        self._state_extra: list[tuple[Any, dict[str, Any]]] = []
        self._groups: list[dict[str, Any]] = []

    def saved_group(self, index: int) -> dict[str, Any]:
        """The hyperparameters of group ``index`` as captured by the last :meth:`take`."""
        return self._groups[index]

    # -- take ---------------------------------------------------------------------------
    def take(self, *, grads: bool) -> None:
        """Capture the current params (and grads when ``grads``), state and groups."""
        # groups may have been added since the last call
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        if len(self._param_buf) != len(self.params) or any(
            not _same_layout(b, p) for b, p in zip(self._param_buf, self.params, strict=True)
        ):
            self._param_buf = [
                torch.empty_like(p, memory_format=torch.preserve_format) for p in self.params
            ]
        _copy_into(self._param_buf, [p.detach() for p in self.params])

        self._has_grads = grads
        self._grad_none = set()
        if grads:
            dst, src = [], []
            for i, p in enumerate(self.params):
                if p.grad is None:
                    self._grad_none.add(i)
                    continue
                buf = self._grad_buf.get(i)
                if buf is None or not _same_layout(buf, p.grad):
                    buf = self._grad_buf[i] = torch.empty_like(p.grad)
                dst.append(buf)
                src.append(p.grad)
            _copy_into(dst, src)

        self._take_state()
        self._groups = [
            {
                k: (v.detach().clone() if isinstance(v, Tensor) else copy.deepcopy(v))
                for k, v in g.items()
                if k != "params"
            }
            for g in self.optimizer.param_groups
        ]

    def _take_state(self) -> None:
        state = self.optimizer.state
        index = {id(p): i for i, p in enumerate(self.params)}
        dst, src = [], []
        keys: dict[int, tuple[str, ...]] = {}
        objs: dict[int, dict[str, Any]] = {}
        extra: list[tuple[Any, dict[str, Any]]] = []
        for owner, entry in state.items():
            i = index.get(id(owner))
            if i is None:  # state keyed by something that is not a param: copy it whole
                extra.append((owner, copy.deepcopy(entry)))
                continue
            keys[i] = tuple(entry)
            bufs = self._state_buf.setdefault(i, {})
            objs[i] = {}
            for k, v in entry.items():
                if isinstance(v, Tensor):
                    buf = bufs.get(k)
                    if buf is None or not _same_layout(buf, v):
                        buf = bufs[k] = torch.empty_like(v)
                    dst.append(buf)
                    src.append(v.detach())
                else:
                    objs[i][k] = copy.deepcopy(v)
        _copy_into(dst, src)
        self._state_keys, self._state_obj, self._state_extra = keys, objs, extra

    # -- restore ------------------------------------------------------------------------
    def restore(self) -> None:
        """Put params, grads (if taken), state and group hyperparameters back bit-exactly."""
        _copy_into([p.detach() for p in self.params], self._param_buf)
        if self._has_grads:
            dst, src = [], []
            for i, p in enumerate(self.params):
                if i in self._grad_none:
                    p.grad = None
                elif p.grad is None or not _same_layout(p.grad, self._grad_buf[i]):
                    p.grad = self._grad_buf[i].clone()
                else:
                    dst.append(p.grad)
                    src.append(self._grad_buf[i])
            _copy_into(dst, src)
        self._restore_state()
        self.restore_groups()

    def restore_groups(self, keys: tuple[str, ...] | None = None) -> None:
        """Restore the groups' hyperparameters (only ``keys`` when given)."""
        for group, saved in zip(self.optimizer.param_groups, self._groups, strict=True):
            if keys is None:  # entries created during the trial (e.g. lazy step counters)
                for k in [k for k in group if k != "params" and k not in saved]:
                    del group[k]
            for k, v in saved.items():
                if keys is not None and k not in keys:
                    continue
                live = group.get(k)
                if isinstance(v, Tensor):
                    if isinstance(live, Tensor) and _same_layout(live, v):
                        live.copy_(v)  # in place: keeps tensor identity for the optimizer
                    else:
                        group[k] = v.clone()
                else:
                    group[k] = copy.deepcopy(v)

    def _restore_state(self) -> None:
        state = self.optimizer.state
        dst, src = [], []
        for i, p in enumerate(self.params):
            if i not in self._state_keys:
                state.pop(p, None)  # created during the trial
                continue
            entry = state[p]
            for k in [k for k in entry if k not in self._state_keys[i]]:
                del entry[k]
            bufs = self._state_buf[i]
            for k in self._state_keys[i]:
                if k in self._state_obj[i]:
                    entry[k] = copy.deepcopy(self._state_obj[i][k])
                    continue
                live = entry.get(k)
                if isinstance(live, Tensor) and _same_layout(live, bufs[k]):
                    dst.append(live)
                    src.append(bufs[k])
                else:
                    # never hand our reusable buffer to the optimizer: it would mutate it
                    entry[k] = bufs[k].clone()
        _copy_into(dst, src)
        for owner, entry in self._state_extra:
            state[owner] = copy.deepcopy(entry)


class _TensorCopy:
    """Reusable bit-exact copy of a list of tensors (module buffers): take, restore."""

    def __init__(self) -> None:
        self._live: list[Tensor] = []
        self._buf: list[Tensor] = []

    def take(self, tensors: list[Tensor]) -> None:
        """Copy ``tensors`` into buffers, reused while the layouts stay the same."""
        if len(self._buf) != len(tensors) or any(
            not _same_layout(b, t) for b, t in zip(self._buf, tensors, strict=True)
        ):
            self._buf = [torch.empty_like(t) for t in tensors]
        self._live = list(tensors)
        _copy_into(self._buf, [t.detach() for t in tensors])

    def restore(self) -> None:
        """Write the copies back in place into the tensors of the last :meth:`take`."""
        _copy_into([t.detach() for t in self._live], self._buf)


def _same_layout(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device


@dataclass(frozen=True)
class GuardRecord:
    """What happened in one :meth:`LyapunovGuard.step` call.

    Attributes:
        accepted: a trial satisfied ``L1 <= L0 + tol`` (and ``L1`` was finite).
        applied: the parameters changed (accepted, or ``on_failure="accept"``).
        retries: trials after the first (``0`` when the first trial was accepted).
        loss_before: ``L0``, the closure's loss at the starting point.
        loss_after: ``L1`` of the last trial (the kept one when applied).
        scale: the lr factor ``shrink**k`` of the last trial.
    """

    accepted: bool
    applied: bool
    retries: int
    loss_before: float
    loss_after: float
    scale: float


_NEEDS_CLOSURE = (
    "LyapunovGuard.step needs a closure: it re-evaluates the loss on the same batch after "
    "each trial step, so it must be able to recompute it. Call guard.step(closure) with a "
    "closure that zeroes the grads, computes the loss, calls backward() and returns the loss "
    "(Lightning's automatic optimization passes one). Loops that call optimizer.step() with no "
    "argument (the Hugging Face Trainer, a GradScaler under 16-bit mixed precision) cannot "
    "drive the guard: give them the inner optimizer instead."
)


class LyapunovGuard(torch.optim.Optimizer):
    """Wrap any optimizer so that every step satisfies ``L(theta_new) <= L(theta) + tol``.

    Per call of :meth:`step`: evaluate ``L0 = closure()`` (forward + backward), snapshot,
    then for ``k = 0 .. max_retries``: scale every group's ``lr`` by ``shrink**k``, call
    ``optimizer.step()``, evaluate ``L1`` on the same batch, accept when ``L1`` is finite
    and ``L1 <= L0 + tol`` (a NaN on either side rejects); else restore everything
    bit-exactly and retry. The original ``lr`` is put back after the call in every case:
    the shrink is per call, not permanent.

    The guard is itself a ``torch.optim.Optimizer``: ``param_groups``, ``state`` and
    ``defaults`` *are* the wrapped optimizer's (shared, not copied, so an lr scheduler
    built on the guard drives the inner optimizer), ``zero_grad`` and ``add_param_group``
    forward to it, and ``state_dict()`` is the inner optimizer's with the guard's
    counters under the key ``"lyapunov_guard"``. So it can be returned from Lightning's
    ``configure_optimizers``: Lightning passes a closure to ``step``, and one call is one
    ``global_step`` whatever the number of trials. ``step()`` without a closure raises.

    Module buffers (BatchNorm running statistics) change whenever the closure runs in
    train mode. Pass ``model=`` (or ``buffers=``) so that they are part of "as before":
    a skipped step leaves them exactly as before the call, and an accepted step leaves
    them as the first closure call left them (the re-evaluations do not count twice).
    Without it buffers are not touched by the guard.

    Exceptions: if anything inside :meth:`step` raises (the closure, the inner step), the
    params, grads (as after the first closure call; if that call itself raised, as it
    left them), optimizer state, the groups' hyperparameters, the buffers and the
    counters are restored to their values before the call, then the exception propagates.

    Cost:
        * per call: one closure (forward + backward), one snapshot copy of the params,
          their grads and the optimizer state (and two of the buffers when given),
          reusing preallocated buffers;
        * per trial: one ``optimizer.step()``, one re-evaluation — a forward pass with
          ``evaluate`` or a forward + backward with the closure — and **one host sync**
          (the accept/reject decision reads ``L0`` and ``L1`` together with one
          ``tolist()``);
        * per rejected trial: one restore copy (params, state, grads).

        An accepted first trial therefore costs ``1 + (forward | forward+backward)``
        instead of ``1`` closure call.

    After a rejection the gradients left on the params are those at the restored point
    (the ``L0`` closure's gradients). After an accepted trial they are whatever the
    re-evaluation left: unchanged with ``evaluate``, the gradients at the new point with
    the closure.

    Args:
        optimizer: any ``torch.optim.Optimizer`` (``SGD``, ``Adam``, ``SuperLevelSGD``...)
            whose ``step()`` works without a closure (not ``LBFGS``). State kept outside
            ``optimizer.state`` and ``param_groups`` (e.g. ``SuperLevelSGD.stats()``'s
            last values, which describe the last trial) is not restored.
        tol: accept when ``L1 <= L0 + tol``; a negative ``tol`` demands a strict decrease.
        shrink: lr factor per retry, in ``(0, 1)``.
        max_retries: trials after the first, ``>= 0``.
        on_failure: ``"skip"`` leaves params, state, grads (and buffers) exactly as
            before the call; ``"accept"`` keeps the last trial.
        evaluate: optional forward-only callable returning the loss at the current params
            on the same batch as the closure (it is run under ``torch.no_grad()``).
        model: a module whose buffers (``model.buffers()``, read at every call) are
            snapshot and restored with the params.
        buffers: the tensors to snapshot instead of a model's buffers (fixed list).

    Attributes:
        optimizer: the wrapped optimizer.
        last: the :class:`GuardRecord` of the latest call (``None`` before the first).
        counters: totals over the run: ``steps`` (calls), ``violations`` (rejected
            trials), ``retries`` (trials after the first), ``skips`` (calls that left the
            params unchanged), ``forced`` (calls that kept a violating trial). Accepted
            steps are ``steps - skips - forced``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        tol: float = 0.0,
        shrink: float = 0.5,
        max_retries: int = 4,
        on_failure: str = "skip",
        evaluate: Callable[[], Tensor | float] | None = None,
        *,
        model: nn.Module | None = None,
        buffers: Iterable[Tensor] | None = None,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(f"optimizer must be a torch.optim.Optimizer, got {optimizer!r}")
        if not isinstance(tol, (int, float)) or not math.isfinite(tol):
            raise ValueError(f"tol must be a finite number, got {tol!r}")
        if not isinstance(shrink, (int, float)) or not 0.0 < shrink < 1.0:
            raise ValueError(f"shrink must be in (0, 1), got {shrink!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
        if on_failure not in _ON_FAILURE:
            raise ValueError(f"on_failure must be one of {_ON_FAILURE}, got {on_failure!r}")
        if evaluate is not None and not callable(evaluate):
            raise ValueError(f"evaluate must be callable or None, got {evaluate!r}")
        if model is not None and not isinstance(model, nn.Module):
            raise ValueError(f"model must be an nn.Module or None, got {model!r}")
        if model is not None and buffers is not None:
            raise ValueError("pass model= or buffers=, not both")
        fixed: list[Tensor] | None = None
        if buffers is not None:
            fixed = list(buffers)
            bad = [b for b in fixed if not isinstance(b, Tensor)]
            if bad:
                raise ValueError(f"buffers must be tensors, got {type(bad[0]).__name__}")
        # Optimizer.__init__ is not called: groups, state and defaults are the inner
        # optimizer's (properties below); only the hook registries are the guard's own.
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        self._patch_step_function()
        self.optimizer = optimizer
        self.tol = float(tol)
        self.shrink = float(shrink)
        self.max_retries = max_retries
        self.on_failure = on_failure
        self.evaluate = evaluate
        self.model = model
        self._fixed_buffers = fixed
        self.last: GuardRecord | None = None
        self.counters: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._snapshot = Snapshot(optimizer)
        self._buffers_before = _TensorCopy()  # before the call: skip and exceptions
        self._buffers_l0 = _TensorCopy()  # after the L0 closure: accepted steps

    # -- the torch.optim.Optimizer surface, forwarded to the inner optimizer ----------
    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        """The inner optimizer's groups (the same list)."""
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups = value

    @property
    def state(self) -> Any:  # type: ignore[override]
        """The inner optimizer's state (the same mapping)."""
        return self.optimizer.state

    @state.setter
    def state(self, value: Any) -> None:
        self.optimizer.state = value

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        """The inner optimizer's defaults."""
        return self.optimizer.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self.optimizer.defaults = value

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return (
            f"LyapunovGuard(tol={self.tol}, shrink={self.shrink}, max_retries="
            f"{self.max_retries}, on_failure={self.on_failure!r},\n  {self.optimizer!r})"
        )

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The inner optimizer's ``zero_grad``."""
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the inner optimizer (the guard snapshots it from the next call)."""
        self.optimizer.add_param_group(param_group)

    def state_dict(self) -> dict[str, Any]:
        """The inner optimizer's ``state_dict()`` plus ``"lyapunov_guard": {"counters"}``."""
        out = dict(self.optimizer.state_dict())
        out[_STATE_KEY] = {"counters": dict(self.counters)}
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a :meth:`state_dict` (or a plain inner one: the counters then stay)."""
        state_dict = dict(state_dict)
        saved = state_dict.pop(_STATE_KEY, None)
        counters = None
        if saved is not None:
            counters = saved.get("counters") if isinstance(saved, dict) else None
            if not isinstance(counters, dict) or set(counters) != set(_COUNTERS):
                raise ValueError(
                    f"state_dict[{_STATE_KEY!r}] must hold counters with keys {_COUNTERS}, "
                    f"got {saved!r}"
                )
        self.optimizer.load_state_dict(state_dict)
        if counters is not None:
            self.counters.update({k: int(v) for k, v in counters.items()})

    # -- the guarded step ---------------------------------------------------------------
    def _buffer_list(self) -> list[Tensor]:
        if self._fixed_buffers is not None:
            return self._fixed_buffers
        return list(self.model.buffers()) if self.model is not None else []

    def _reevaluate(self, closure: Callable[[], Tensor]) -> Tensor:
        if self.evaluate is not None:
            with torch.no_grad():
                out = self.evaluate()
            return _scalar_loss(torch.as_tensor(out), "evaluate")
        with torch.enable_grad():
            out = closure()
        return _scalar_loss(out, "closure")

    def _scale_lr(self, scale: float) -> None:
        for i, group in enumerate(self.optimizer.param_groups):
            lr = self._snapshot.saved_group(i)["lr"]
            if isinstance(lr, Tensor):
                group["lr"].copy_(lr * scale)  # restore_groups kept the tensor identity
            else:
                group["lr"] = lr * scale

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:  # type: ignore[override]
        """Take one guarded step; returns ``L0``, the closure's loss before the step.

        Args:
            closure: zeroes the grads, computes the loss on a fixed batch, calls
                ``backward()`` and returns the loss (as for ``torch.optim`` closures).
                It must be deterministic for a fixed batch (no dropout in train mode),
                or the comparison ``L1 <= L0`` is between different functions.

        Raises:
            ValueError: no closure (the guard cannot work without one), a closure that
                is not callable, or a loss that is not a one-element tensor.
        """
        if closure is None:
            raise ValueError(_NEEDS_CLOSURE)
        if not callable(closure):
            raise ValueError(f"closure must be callable, got {closure!r}")
        counters = dict(self.counters)
        buffers = self._buffer_list()
        self._buffers_before.take(buffers)
        taken = False
        try:
            with torch.enable_grad():
                loss0 = closure()
            l0 = _scalar_loss(loss0, "closure")
            self._buffers_l0.take(buffers)
            # grads too, even with `evaluate`: an optimizer may modify them in its step
            self._snapshot.take(grads=True)
            taken = True
            self.counters["steps"] += 1
            self.last = self._search(closure, l0)
        except BaseException:
            if taken:
                self._snapshot.restore()
            self._buffers_before.restore()
            self.counters.update(counters)
            raise
        return loss0

    def _search(self, closure: Callable[[], Tensor], l0: Tensor) -> GuardRecord:
        """The trials of one call: backtrack on the lr until ``L1 <= L0 + tol``."""
        snap = self._snapshot
        # compare in at least float32, in the loss's own precision when higher (float64)
        dtype = torch.promote_types(l0.dtype, torch.float32)
        l0 = l0.to(dtype)
        scale, before, after, accepted = 1.0, math.nan, math.nan, False
        for k in range(self.max_retries + 1):
            scale = self.shrink**k
            if k:
                self._scale_lr(scale)
            self.optimizer.step()
            l1 = self._reevaluate(closure).to(device=l0.device, dtype=dtype)
            # the one host sync of this trial: both losses at once
            before, after = torch.stack([l0, l1]).tolist()
            # NaN on either side compares False; inf <= inf does not: L1 must be finite
            if math.isfinite(after) and after <= before + self.tol:
                accepted = True
                break
            self.counters["violations"] += 1
            if k < self.max_retries:
                self.counters["retries"] += 1
                snap.restore()
                self._buffers_l0.restore()
            elif self.on_failure == "skip":
                snap.restore()

        applied = accepted or self.on_failure == "accept"
        if applied:
            snap.restore_groups(("lr",))  # the shrink is per call
            self._buffers_l0.restore()  # the re-evaluations do not count in the buffers
            self.counters["forced"] += int(not accepted)
        else:
            self._buffers_before.restore()
            self.counters["skips"] += 1
        return GuardRecord(
            accepted=accepted,
            applied=applied,
            retries=k,
            loss_before=before,
            loss_after=after,
            scale=scale,
        )


def _scalar_loss(loss: Any, source: str) -> Tensor:
    """The detached 0-dim loss, or a ``ValueError`` naming what ``source`` returned."""
    if not isinstance(loss, Tensor):
        raise ValueError(f"{source} must return a loss tensor, got {type(loss).__name__}")
    if loss.numel() != 1:
        raise ValueError(
            f"{source} must return a scalar loss (one element), got a tensor of shape "
            f"{tuple(loss.shape)}: reduce it first (e.g. loss.mean())"
        )
    return loss.detach().reshape(())
