"""Lyapunov guard: enforce ``dV = L(theta_{t+1}) - L(theta_t) <= tol`` on every step.

The loss on the current batch is used as the Lyapunov function ``V``. A step of *any*
``torch.optim`` optimizer is tried; when it raises the loss on the same batch, the
parameters, the optimizer state and the groups' hyperparameters are restored bit-exactly
and the step is retried with every group's ``lr`` scaled by ``shrink**k``
(a backtracking line search on the optimizer's own direction).

The snapshot/restore machinery is a small functional core (:class:`Snapshot`) so that it
can be tested on its own; :class:`LyapunovGuard` is the thin loop around it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["GuardRecord", "LyapunovGuard", "Snapshot"]

_ON_FAILURE = ("skip", "accept")


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


class LyapunovGuard:
    """Wrap any optimizer so that every step satisfies ``L(theta_new) <= L(theta) + tol``.

    Per call of :meth:`step`: evaluate ``L0 = closure()`` (forward + backward), snapshot,
    then for ``k = 0 .. max_retries``: scale every group's ``lr`` by ``shrink**k``, call
    ``optimizer.step()``, evaluate ``L1`` on the same batch, accept when
    ``L1 <= L0 + tol`` and ``L1`` is finite; else restore everything bit-exactly and
    retry. The original ``lr`` is put back after the call in every case: the shrink is
    per call, not permanent.

    Cost:
        * per call: one closure (forward + backward), one snapshot copy of the params,
          their grads and the optimizer state, reusing preallocated buffers;
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
            last values) is not restored.
        tol: accept when ``L1 <= L0 + tol``; a negative ``tol`` demands a strict decrease.
        shrink: lr factor per retry, in ``(0, 1)``.
        max_retries: trials after the first, ``>= 0``.
        on_failure: ``"skip"`` leaves params, state and grads exactly as before the call;
            ``"accept"`` keeps the last trial.
        evaluate: optional forward-only callable returning the loss at the current params
            on the same batch as the closure (it is run under ``torch.no_grad()``).

    Attributes:
        last: the :class:`GuardRecord` of the latest call (``None`` before the first).
        counters: totals over the run: ``steps`` (calls), ``violations`` (rejected
            trials), ``retries`` (trials after the first), ``skips`` (calls that left the
            params unchanged), ``forced`` (calls that kept a violating trial).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        tol: float = 0.0,
        shrink: float = 0.5,
        max_retries: int = 4,
        on_failure: str = "skip",
        evaluate: Callable[[], Tensor | float] | None = None,
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
        self.optimizer = optimizer
        self.tol = float(tol)
        self.shrink = float(shrink)
        self.max_retries = max_retries
        self.on_failure = on_failure
        self.evaluate = evaluate
        self.last: GuardRecord | None = None
        self.counters: dict[str, int] = dict.fromkeys(
            ("steps", "violations", "retries", "skips", "forced"), 0
        )
        self._snapshot = Snapshot(optimizer)

    def _reevaluate(self, closure: Callable[[], Tensor]) -> Tensor:
        if self.evaluate is not None:
            with torch.no_grad():
                out = self.evaluate()
        else:
            with torch.enable_grad():
                out = closure()
        return torch.as_tensor(out).detach()

    def _scale_lr(self, scale: float) -> None:
        for i, group in enumerate(self.optimizer.param_groups):
            lr = self._snapshot.saved_group(i)["lr"]
            if isinstance(lr, Tensor):
                group["lr"].copy_(lr * scale)  # restore_groups kept the tensor identity
            else:
                group["lr"] = lr * scale

    def step(self, closure: Callable[[], Tensor]) -> Tensor:
        """Take one guarded step; returns ``L0``, the closure's loss before the step.

        Args:
            closure: zeroes the grads, computes the loss on a fixed batch, calls
                ``backward()`` and returns the loss (as for ``torch.optim`` closures).
                It must be deterministic for a fixed batch (no dropout in train mode),
                or the comparison ``L1 <= L0`` is between different functions.
        """
        if not callable(closure):
            raise ValueError(f"closure must be callable, got {closure!r}")
        with torch.enable_grad():
            loss0 = closure()
        if not isinstance(loss0, Tensor):
            raise ValueError(f"closure must return a loss tensor, got {type(loss0).__name__}")
        l0 = loss0.detach().reshape(())
        # compare in at least float32, in the loss's own precision when higher (float64)
        dtype = torch.promote_types(l0.dtype, torch.float32)
        l0 = l0.to(dtype)
        snap = self._snapshot
        # grads too, even with `evaluate`: an optimizer may modify them in its step
        snap.take(grads=True)
        self.counters["steps"] += 1

        scale, before, after, accepted = 1.0, math.nan, math.nan, False
        for k in range(self.max_retries + 1):
            scale = self.shrink**k
            if k:
                self._scale_lr(scale)
            self.optimizer.step()
            l1 = self._reevaluate(closure)
            # the one host sync of this trial: both losses at once
            l1 = l1.reshape(()).to(device=l0.device, dtype=dtype)
            before, after = torch.stack([l0, l1]).tolist()
            if after <= before + self.tol:  # False for NaN / inf-inf
                accepted = True
                break
            self.counters["violations"] += 1
            if k < self.max_retries:
                self.counters["retries"] += 1
                snap.restore()
            elif self.on_failure == "skip":
                snap.restore()

        applied = accepted or self.on_failure == "accept"
        if applied:
            snap.restore_groups(("lr",))  # the shrink is per call
        if not applied:
            self.counters["skips"] += 1
        elif not accepted:
            self.counters["forced"] += 1
        self.last = GuardRecord(
            accepted=accepted,
            applied=applied,
            retries=k,
            loss_before=before,
            loss_after=after,
            scale=scale,
        )
        return loss0
