"""SuperLevelSGD: the thin ``torch.optim.Optimizer`` around :mod:`.functional`."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from . import functional as F
from ._torch_api import Buckets, capture_health_check, group_by_device_and_dtype
from .backward_norm import attached
from .norm import global_grad_norm, has_dtensor, host_grad_norm, is_dtensor, local
from .settings import (
    GLOBAL_KEYS,
    GROUP_DEFAULTS,
    OPTIONAL_FLAGS,
    Hyper,
    check_global,
    group_hyper,
    settings_key,
)
from .sharding import check_shards

__all__ = ["SuperLevelSGD"]

# Keys a SuperLevelSGD param group must have; a state dict without them is another
# optimizer's (torch.optim.SGD's lacks decay, min_lr, norm_scale, nonfinite). The
# optional flags may be missing (an older checkpoint): loading fills their defaults.
_REQUIRED = ("lr", *(k for k in GROUP_DEFAULTS if k not in OPTIONAL_FLAGS))
_COUNTERS = ("step", "skipped")


@dataclass
class _Group:
    """One param group's share of a step: what to update and how."""

    group: dict[str, Any]
    hyper: Hyper
    impl: F.Impl
    params: list[Tensor]  # as registered (DTensors for FSDP2)
    local_params: list[Tensor]
    local_grads: list[Tensor]
    bufs: list[Tensor | None]  # local shards, None where not created yet
    buckets: Buckets
    sharded: bool  # DTensor params (FSDP2)


class SuperLevelSGD(Optimizer):
    r"""SGD with an exponentially decaying, gradient-norm-modulated step (arXiv 2409.16769).

    At each step, with ``t`` the number of completed (non-skipped) steps::

        a_t   = max(lr * exp(-decay * t), min_lr)          (per param group)
        n_t   = one L2 norm over the gradients of all groups (after the maximize sign)
        eta_t = 1 / (1 + n_t / norm_scale)
        p    <- p - a_t * weight_decay * p                  (decoupled)
        buf  <- momentum * buf + (1 - dampening) * g        (buf = g when created)
        d     = g + momentum * buf if nesterov else buf     (d = g without momentum)
        p    <- p - a_t * eta_t * d

    With ``momentum = weight_decay = 0`` this is the paper's
    ``theta - a0 * exp(-beta t) * grad / (1 + ||grad||)``: exponential decay times a
    smooth global-norm clip; the step length ``a_t * eta_t * ||g||`` stays below
    ``a_t * norm_scale``, i.e. below ``a_t`` with the default ``norm_scale = 1``.
    **With momentum that bound does not hold**: the step is ``a_t eta_t ||buf||`` and the
    buffer sums up to ``1 / (1 - momentum)`` past gradients (a Rosenbrock run at lr 0.01,
    momentum 0.9 took one step of length 28.6); only each step's *contribution* to the
    buffer is bounded.

    Args:
        params: Parameters or param-group dicts. Groups may set every argument below
            except ``shard_group``; ``norm_scale`` and ``nonfinite`` must agree across
            groups (the norm is global).
        lr: ``a_0``. ``group["lr"]`` stays ``a_0``, so an lr scheduler that changes it
            rescales the decayed rate from then on. A 0-dim tensor is accepted (for CUDA
            graphs, update it in place).
        decay: ``beta >= 0`` of ``exp(-beta t)``.
        min_lr: Floor of ``a_t``.
        norm_scale: ``s > 0``: the global gradient norm at which the step is halved.
        momentum: Heavy-ball factor as in ``torch.optim.SGD``.
        dampening: Dampening of the momentum, in ``[0, 1]``.
        nesterov: Nesterov momentum (needs momentum > 0 and dampening 0).
        weight_decay: Decoupled decay, scaled by ``a_t`` (not by ``eta_t``);
            ``max(lr, min_lr) * weight_decay <= 1``.
        maximize: Maximize the objective.
        nonfinite: ``"skip"``: a non-finite norm leaves params, buffers and ``t`` unchanged
            and counts the skip (no host sync). ``"raise"``: raise ``FloatingPointError``
            before anything changes (reads the flag on the host: one sync per step).
        foreach: Multi-tensor path. ``foreach=False`` (and ``fused`` not set) selects the
            per-tensor path. Per group.
        fused: Torch's fused SGD kernel with a tensor lr ``a_t * eta_t`` (CPU, CUDA, ...;
            float dtypes). Default (both ``None``): fused on accelerators (float16/bfloat16/
            float32), foreach otherwise. Under ``torch.compile`` the foreach path is used.
            Per group; the norm is global either way.
        capturable: Allow CUDA-graph capture of ``step()`` (torch refuses it otherwise) and
            check its preconditions (params on an accelerator, ``nonfinite="skip"``) when
            the group is added.
            Every path is already free of host syncs; a float ``lr`` is baked into a
            captured graph.
        shard_group: A ``torch.distributed`` process group whose ranks each own a disjoint
            shard of the parameters (``ZeroRedundancyOptimizer``, FSDP1): the squared
            norm is summed over it with one all-reduce (no host sync), so every rank uses
            the norm of the full gradient. ``None`` for DDP, FSDP2 (DTensors are reduced
            over their mesh automatically) and one process. A runtime handle: not part
            of ``state_dict()``; pass it again when rebuilding the optimizer. Without
            it, params that are a shard (built by ZeRO over several ranks, FSDP1 flat
            parameters holding part of the whole) are refused with ``ValueError``.

    Example:
        >>> opt = SuperLevelSGD(model.parameters(), lr=0.1, decay=1e-3)  # doctest: +SKIP
        >>> loss_fn(model(x), y).backward(); opt.step(); opt.zero_grad()  # doctest: +SKIP
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float | Tensor = 0.1,
        decay: float = 0.0,
        *,
        min_lr: float = 0.0,
        norm_scale: float = 1.0,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        maximize: bool = False,
        nonfinite: str = "skip",
        foreach: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        shard_group: Any = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            decay=decay,
            min_lr=min_lr,
            momentum=momentum,
            dampening=dampening,
            nesterov=nesterov,
            weight_decay=weight_decay,
            maximize=maximize,
            norm_scale=norm_scale,
            nonfinite=nonfinite,
            foreach=foreach,
            fused=fused,
            capturable=capturable,
        )
        group_hyper(defaults, read_tensors=True)  # bad arguments fail here, named
        # Mutated in place by step(): torch.compile cannot trace a new attribute binding.
        self._last: dict[str, Any] = _no_last_step()
        self._layouts: dict[int, Any] = {}  # group -> (param ids, buckets) buffers match
        self._checked: dict[int, Any] = {}  # group -> (settings_key, Hyper) last checked
        self.shard_group = shard_group
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_last", _no_last_step())
        self.__dict__.setdefault("_layouts", {})
        self.__dict__.setdefault("_checked", {})
        self.__dict__.setdefault("shard_group", None)
        for group in self.param_groups:
            for key, value in GROUP_DEFAULTS.items():
                group.setdefault(key, value)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        if self.shard_group is not None:
            # A process group does not pickle: copying must fail loudly, not drop it.
            state["shard_group"] = self.shard_group
        return state

    # ------------------------------------------------------------ groups and state
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (checked); its ``t`` starts at the optimizer's current ``t``.

        Refused (``ValueError``) besides bad settings: params that are a shard of the
        model (ZeRO, FSDP1 flat parameters) without ``shard_group`` (:mod:`.sharding`).
        """
        if self.param_groups:
            first = self.param_groups[0]
            for key in GLOBAL_KEYS:
                if key in param_group and param_group[key] != first[key]:
                    raise ValueError(
                        f"{key} is one setting for the whole optimizer (the norm is global);"
                        f" got {key}={param_group[key]!r} in a group, {first[key]!r} in group 0"
                    )
        candidate = {**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}}
        group_hyper(candidate, read_tensors=True)
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            _check_capturable(len(self.param_groups) - 1, group)
            check_shards(group["params"], self.shard_group)
        except ValueError:
            self.param_groups.pop()  # refused: the optimizer stays as it was
            raise
        if len(self.param_groups) > 1 and "step" in self.param_groups[0]:
            # t is global: a late group joins at the current count.
            for key in _COUNTERS:
                group[key] = self.param_groups[0][key].clone()
        else:
            # Counters exist before the first step: a compiled first step that created
            # them would change the groups' layout (a recompile) and make dynamo write
            # its traced view of the groups back (capturable=True on CPU groups).
            device = local(group["params"][0]).device if group["params"] else None
            device = None if device is not None and device.type == "meta" else device
            for key in _COUNTERS:
                group[key] = torch.zeros((), dtype=torch.int64, device=device)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a SuperLevelSGD state dict, checked in full before anything changes.

        Settings (``norm_scale``, ``nonfinite``, ``foreach``, ``fused``, ``capturable``
        and the per-group hyperparameters) are restored with the groups. Refused with
        ``ValueError``: another optimizer's state dict, a value outside its domain, a
        step count that is not a finite integer >= 0, a momentum buffer whose shape is
        not its param's. A group that lacks only optional flags (``maximize``,
        ``foreach``, ``fused``, ``capturable``: a checkpoint from an older version) gets
        their defaults, as torch's optimizers do; one that lacks the rule's own keys
        (``decay``, ``min_lr``, ``norm_scale``, ...) is another optimizer's and refused.
        """
        _check_state_dict(state_dict, self.param_groups)
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            if "step" in group:
                device = local(group["params"][0]).device if group["params"] else None
                for key in _COUNTERS:
                    group[key] = _counter(group[key], device)
        self._last.update(_no_last_step())
        self._layouts.clear()
        self._checked.clear()

    def stats(self) -> dict[str, Tensor]:
        """The last step's numbers as detached 0-dim tensor copies (no host sync).

        Keys: ``step`` (t), ``grad_norm`` (n_t), ``scale`` (eta_t, 0 when skipped), ``lr``
        (a_t of group 0), ``effective_lr`` (a_t * eta_t of group 0), ``skipped`` (count).
        Before any step since construction or ``load_state_dict``: ``step`` and
        ``skipped`` as stored, ``lr`` the a_t the next step will use, the others 0.
        """
        group = self.param_groups[0]
        device = local(group["params"][0]).device if group["params"] else torch.device("cpu")
        zero = torch.zeros((), dtype=torch.int64, device=device)
        step = group.get("step", zero)
        last = self._last
        if last["grad_norm"] is not None:
            norm, scale, lr = last["grad_norm"], last["scale"], last["lr"]
        else:
            h = group_hyper(group)
            norm = scale = torch.zeros((), dtype=torch.float64, device=device)
            lr = F.decayed_lr(step, h.lr, h.decay, h.min_lr)
        norm = torch.as_tensor(norm, dtype=torch.float64)
        scale, lr = (torch.as_tensor(v, dtype=norm.dtype, device=norm.device) for v in (scale, lr))
        out = {
            "step": step,
            "grad_norm": norm,
            "scale": scale,
            "lr": lr,
            "effective_lr": lr * scale,
            "skipped": group.get("skipped", zero),
        }
        return {k: v.detach().clone() for k, v in out.items()}

    # ------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step: collect and check, norm and flag, update each group, count.

        Returns ``closure()``'s loss (``None`` without closure). Params without a
        gradient are left untouched; a step where no param has a gradient changes
        nothing and is not counted. Every check runs before the first change, so a step
        that raises has changed nothing.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = self._collect()
        if groups is None:
            return loss
        home = _home(groups)
        host = F.host_scalars(
            [dev for g in groups for dev, _ in g.buckets], [g.hyper.lr for g in groups]
        )
        norm, eta, ok = self._norm_and_flag(groups, host)
        self._ensure_counters(home)
        lrs = [self._update_group(g, eta, ok, host) for g in groups]
        self._count(ok)
        # Host steps keep Python floats; stats() makes tensors (and the product) when asked.
        self._last.update(grad_norm=norm, scale=eta, lr=lrs[0])
        return loss

    def _collect(self) -> list[_Group] | None:
        """Every group's params with a gradient, checked; ``None`` if there is nothing."""
        first = self.param_groups[0]
        for key in GLOBAL_KEYS:
            check_global(key, first[key])
            for gi, group in enumerate(self.param_groups[1:], 1):
                if group[key] != first[key]:
                    raise ValueError(
                        f"{key} is one setting for the whole optimizer; group {gi} has "
                        f"{group[key]!r}, group 0 {first[key]!r}: set it in every group"
                    )
        out = [self._collect_group(gi, group) for gi, group in enumerate(self.param_groups)]
        if not any(g.params for g in out) and self.shard_group is None:
            return None
        capture_health_check(self)
        for gi, g in enumerate(out):
            if g.bufs:
                self._match_buffers(gi, g)
        return out

    def _match_buffers(self, gi: int, g: _Group) -> None:
        """Momentum buffers follow their params' dtype and device (after ``.half()``...).

        Buffers match their params' layout as of the last step; only a change of the
        params or of their (device, dtype) grouping can make one stale, so the per-buffer
        check runs only then.
        """
        if torch.compiler.is_compiling():
            _fix_buffer_layouts(self.state, g)
            return
        key = (tuple(map(id, g.params)), g.buckets)
        if self._layouts.get(gi) != key:
            _fix_buffer_layouts(self.state, g)
            self._layouts[gi] = key

    def _hyper(self, gi: int, group: dict[str, Any]) -> Hyper:
        """The group's checked settings; checked again only when one of them changed."""
        if torch.compiler.is_compiling():
            return group_hyper(group)
        key = settings_key(group)
        cached = self._checked.get(gi)
        if cached is None or cached[0] != key:
            cached = self._checked[gi] = (key, group_hyper(group))
        return cached[1]

    def _collect_group(self, gi: int, group: dict[str, Any]) -> _Group:
        hyper = self._hyper(gi, group)
        params, grads = [], []
        for pi, p in enumerate(group["params"]):
            g = p.grad
            if g is None:
                continue
            if g.is_sparse:
                raise RuntimeError(
                    f"SuperLevelSGD does not support sparse gradients (group {gi}, param "
                    f"{pi}, shape {tuple(p.shape)}); use a dense embedding "
                    f"(sparse=False) or a sparse-aware optimizer for that parameter"
                )
            params.append(p)
            grads.append(g)
        sharded = has_dtensor(params)
        lp = [local(p) for p in params] if sharded else params
        lg = [local(g) for g in grads] if sharded else grads
        bufs: list[Tensor | None] = []
        if hyper.momentum != 0.0:
            bufs = [self.state[p].get("momentum_buffer") for p in params]
            bufs = [None if b is None else local(b) for b in bufs] if sharded else bufs
        buckets = group_by_device_and_dtype(lp)
        _check_buckets(gi, buckets)
        impl = F.resolve_impl(foreach=group["foreach"], fused=group["fused"], buckets=buckets)
        if impl == "fused":
            F.check_fused(buckets)
        return _Group(group, hyper, impl, params, lp, lg, bufs, buckets, sharded)

    def _norm_and_flag(self, groups: list[_Group], host: bool) -> tuple[Any, Any, Any]:
        """``n_t``, ``eta_t`` and the finite flag; raises first under ``nonfinite="raise"``."""
        scale = self.param_groups[0]["norm_scale"]
        dense = not any(item.sharded for item in groups)
        all_local = [g for item in groups for g in item.local_grads]
        # DTensor grads (FSDP2) go whole to the norm: it reduces them over their mesh.
        grads = all_local if dense else [p.grad for item in groups for p in item.params]
        buckets = _merge([g.buckets for g in groups], [len(g.params) for g in groups])
        in_backward = attached(self)  # norm_in_backward(self): the shares its hooks took
        norm: Any = None if in_backward is None else in_backward.cached_norm(
            [p for item in groups for p in item.params], all_local, buckets,
            host=host, dense=dense, shard_group=self.shard_group,
        )  # fmt: skip
        if norm is None and host and dense:
            norm = host_grad_norm(all_local, buckets=buckets, shard_group=self.shard_group)
        elif norm is None:
            norm = global_grad_norm(
                grads,
                buckets=buckets if dense else None,
                shard_group=self.shard_group,
            )
            norm = float(norm) if host else norm
        eta, ok = F.modulation_host(norm, scale) if host else F.modulation(norm, scale)
        if self.param_groups[0]["nonfinite"] == "raise" and not bool(ok):
            raise FloatingPointError(
                f"SuperLevelSGD: non-finite gradient norm {float(norm)} (nonfinite='raise'); "
                f"nothing was changed"
            )
        return norm, eta, ok

    def _update_group(self, g: _Group, eta: Any, ok: Any, host: bool) -> Any:
        """Update one group's params (and buffers); returns its ``a_t``."""
        h, step = g.hyper, g.group["step"]
        if host:
            a: Any = F.decayed_lr_host(float(step), h.lr, h.decay, h.min_lr)
        else:
            a = F.decayed_lr(step, h.lr, h.decay, h.min_lr)
        if not g.params:
            return a
        bufs = list(g.bufs)
        F.superlevel_update_(
            g.local_params, g.local_grads, bufs, lr=a, eta=eta, ok=ok,
            impl=g.impl, buckets=g.buckets, hyper=h,
        )  # fmt: skip
        if h.momentum != 0.0:
            for p, old, new in zip(g.params, g.bufs, bufs, strict=True):
                if old is None:
                    self.state[p]["momentum_buffer"] = _like_param(new, p)
        return a

    def _ensure_counters(self, device: torch.device) -> None:
        for group in self.param_groups:
            for key in _COUNTERS:
                if key not in group:
                    group[key] = torch.zeros((), dtype=torch.int64, device=device)
                elif group[key].device != device:
                    group[key] = group[key].to(device)

    def _count(self, ok: Any) -> None:
        if isinstance(ok, bool):
            counter = "step" if ok else "skipped"
            for group in self.param_groups:
                group[counter].add_(1)
            return
        bad = torch.logical_not(ok)
        for group in self.param_groups:
            group["step"].add_(ok)
            group["skipped"].add_(bad)


def _no_last_step() -> dict[str, Any]:
    """The record of the last step before any: fixed keys, so a compiled step that fills
    it in place guards on the same dict shape at the first step and every later one."""
    return dict.fromkeys(("grad_norm", "scale", "lr"))


def _check_buckets(gi: int, buckets: Buckets) -> None:
    """Refuse params the rule cannot update (before anything changes)."""
    for dev, dt in buckets:
        if not (dt.is_floating_point or dt.is_complex):
            raise TypeError(
                f"SuperLevelSGD updates floating-point and complex params; group {gi} "
                f"has a {dt} param with a gradient (on {dev})"
            )


def _check_capturable(gi: int, group: dict[str, Any]) -> None:
    """``capturable=True`` needs params on an accelerator: checked where the user sets it.

    Not in ``step()``: dynamo traces every group with ``capturable=True`` and writes that
    back into the real groups when a compiled function changes them (``group["lr"] =
    ...`` in a compiled train step), so a later eager step would be refused for a flag
    the user never set. On CPU the flag has no effect on the step.
    """
    if not group["capturable"]:
        return
    on_cpu = [pi for pi, p in enumerate(group["params"]) if local(p).device.type == "cpu"]
    if on_cpu:
        raise ValueError(
            f"capturable=True needs params on an accelerator, got param {on_cpu[0]} of "
            f"group {gi} on cpu"
        )


def _home(groups: list[_Group]) -> torch.device:
    """Where the scalars live: the first gradient's device (first param's without one)."""
    for g in groups:
        if g.local_grads:
            return g.local_grads[0].device
    for g in groups:
        if g.group["params"]:
            return local(g.group["params"][0]).device
    return torch.device("cpu")


def _counter(value: Any, device: torch.device | None) -> Tensor:
    """A loaded step count as an int64 tensor (exact to 2**63; float32 stops at 2**24)."""
    t = torch.as_tensor(value)
    return t.to(device=device or t.device, dtype=torch.int64).clone()


def _check_state_dict(state_dict: Any, groups: list[dict[str, Any]]) -> None:
    """Refuse (``ValueError``) a state dict this optimizer cannot load exactly."""
    if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(state_dict):
        raise ValueError("not an optimizer state dict (needs 'state' and 'param_groups')")
    saved = state_dict["param_groups"]
    if len(saved) != len(groups):
        raise ValueError(f"state dict has {len(saved)} param groups, optimizer {len(groups)}")
    owner: dict[Any, Tensor] = {}
    for gi, (sg, g) in enumerate(zip(saved, groups, strict=True)):
        _check_saved_group(gi, sg, g)
        owner.update(zip(sg["params"], g["params"], strict=True))
    for key, entry in state_dict["state"].items():
        p = owner.get(key)
        buf = entry.get("momentum_buffer") if isinstance(entry, dict) else None
        if p is not None and buf is not None and tuple(buf.shape) != tuple(p.shape):
            raise ValueError(
                f"state dict: momentum buffer of param {key} has shape {tuple(buf.shape)}, "
                f"the param {tuple(p.shape)}"
            )


def _check_saved_group(gi: int, sg: dict[str, Any], g: dict[str, Any]) -> None:
    """One saved param group: SuperLevelSGD's keys, valid values, integer counters."""
    lacking = [k for k in _REQUIRED if k not in sg]
    if lacking:
        raise ValueError(
            f"not a SuperLevelSGD state dict: param group {gi} lacks {lacking} "
            f"(a state dict of another optimizer?)"
        )
    if len(sg["params"]) != len(g["params"]):
        raise ValueError(
            f"param group {gi}: state dict has {len(sg['params'])} params, "
            f"optimizer {len(g['params'])}"
        )
    try:
        group_hyper({**GROUP_DEFAULTS, **sg}, read_tensors=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"state dict param group {gi}: {exc}") from exc
    for key in _COUNTERS:
        v = sg.get(key, 0)
        number = isinstance(v, (Tensor, int, float)) and not isinstance(v, bool)
        x = float(v) if number else math.nan
        if not (math.isfinite(x) and x >= 0 and x == int(x)):
            raise ValueError(
                f"state dict param group {gi}: {key} must be a finite integer count >= 0, got {v!r}"
            )


def _fix_buffer_layouts(state: Any, g: _Group) -> None:
    """Buffers follow their params' dtype and device (after ``.half()``, ``.to(...)``)."""
    for j, (p, b) in enumerate(zip(g.local_params, g.bufs, strict=False)):
        if b is not None and (b.dtype != p.dtype or b.device != p.device):
            g.bufs[j] = b.to(device=p.device, dtype=p.dtype)
            state[g.params[j]]["momentum_buffer"] = _like_param(g.bufs[j], g.params[j])


def _merge(buckets: list[Buckets], sizes: list[int]) -> Buckets:
    """Buckets of the concatenation of lists whose own buckets are given."""
    nonempty = [b for b, n in zip(buckets, sizes, strict=True) if n]
    if len(nonempty) == 1:  # the groups before it are empty: its indices hold as they are
        return nonempty[0]
    out: Buckets = {}
    offset = 0
    for b, n in zip(buckets, sizes, strict=True):
        for key, idx in b.items():
            out.setdefault(key, []).extend(i + offset for i in idx)
        offset += n
    return out


def _like_param(buf: Tensor, p: Tensor) -> Tensor:
    """Wrap a buffer built from a DTensor's local shard back into a DTensor like ``p``."""
    if not is_dtensor(p):
        return buf
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(
        buf, p.device_mesh, p.placements, run_check=False, shape=p.shape, stride=p.stride()
    )
