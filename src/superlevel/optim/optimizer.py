"""SuperLevelSGD: the thin ``torch.optim.Optimizer`` around :mod:`.functional`."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from .functional import (
    Buckets,
    _buckets,
    _is_dtensor,
    decayed_lr,
    decayed_lr_host,
    global_grad_norm,
    has_dtensor,
    host_scalars,
    local,
    modulation,
    modulation_host,
    resolve_impl,
    superlevel_update_,
)

__all__ = ["SuperLevelSGD"]

# Keys a param group may override; the rest are one value for the whole optimizer.
_GROUP_KEYS = (
    "lr",
    "decay",
    "min_lr",
    "momentum",
    "dampening",
    "nesterov",
    "weight_decay",
    "maximize",
)
_GLOBAL_KEYS = ("norm_scale", "nonfinite", "foreach", "fused", "capturable")
_NONFINITE = ("skip", "raise")


def _check_nonneg(name: str, value: Any) -> None:
    v = float(value.item() if isinstance(value, Tensor) else value)
    if not (v >= 0.0 and math.isfinite(v)):  # also rejects nan
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _validate_group(group: dict[str, Any]) -> None:
    lr = group["lr"]
    if isinstance(lr, Tensor) and lr.numel() != 1:
        raise ValueError(f"a tensor lr must have one element, got shape {tuple(lr.shape)}")
    for name in ("lr", "decay", "min_lr", "momentum", "dampening", "weight_decay"):
        _check_nonneg(name, group[name])
    if group["dampening"] > 1.0:
        raise ValueError(f"dampening must be in [0, 1], got {group['dampening']!r}")
    if group["nesterov"] and (group["momentum"] <= 0.0 or group["dampening"] != 0.0):
        raise ValueError(
            f"nesterov=True needs momentum > 0 and dampening = 0, got momentum="
            f"{group['momentum']!r}, dampening={group['dampening']!r}"
        )


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
    smooth global-norm clip (the step length ``a_t * eta_t * ||g||`` stays below
    ``a_t * norm_scale``, i.e. below ``a_t`` with the default ``norm_scale = 1``).

    Args:
        params: Parameters or param-group dicts. Groups may override ``lr``, ``decay``,
            ``min_lr``, ``momentum``, ``dampening``, ``nesterov``, ``weight_decay`` and
            ``maximize``.
        lr: ``a_0``. ``group["lr"]`` stays ``a_0``, so an lr scheduler that changes it
            rescales the decayed rate from then on. A 0-dim tensor is accepted (for CUDA
            graphs, update it in place).
        decay: ``beta >= 0`` of ``exp(-beta t)``.
        min_lr: Floor of ``a_t``.
        norm_scale: ``s > 0``: the global gradient norm at which the step is halved.
        momentum: Heavy-ball factor as in ``torch.optim.SGD``.
        dampening: Dampening of the momentum.
        nesterov: Nesterov momentum (needs momentum > 0 and dampening 0).
        weight_decay: Decoupled decay, scaled by ``a_t`` (not by ``eta_t``).
        maximize: Maximize the objective.
        nonfinite: ``"skip"``: a non-finite norm leaves params, buffers and ``t`` unchanged
            and counts the skip (no host sync). ``"raise"``: raise ``FloatingPointError``
            before anything changes (reads the flag on the host: one sync per step).
        foreach: Multi-tensor path. ``foreach=False`` (and ``fused`` not set) selects the
            per-tensor path.
        fused: Torch's fused SGD kernel with a tensor lr ``a_t * eta_t`` (CPU, CUDA, ...;
            float dtypes). Default (both ``None``): fused on accelerators (float16/bfloat16/
            float32), foreach otherwise. Under ``torch.compile`` the foreach path is used.
        capturable: Allow CUDA-graph capture of ``step()`` (torch refuses it otherwise) and
            check its preconditions (params on an accelerator, ``nonfinite="skip"``).
            Every path is already free of host syncs; a float ``lr`` is baked into a
            captured graph.

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
    ) -> None:
        if not (
            isinstance(norm_scale, (int, float)) and norm_scale > 0 and math.isfinite(norm_scale)
        ):
            raise ValueError(f"norm_scale must be a finite number > 0, got {norm_scale!r}")
        if nonfinite not in _NONFINITE:
            raise ValueError(f"nonfinite must be one of {_NONFINITE}, got {nonfinite!r}")
        if fused and foreach:
            raise ValueError(
                f"fused=True and foreach=True exclude each other, got "
                f"fused={fused!r}, foreach={foreach!r}"
            )
        if capturable and nonfinite == "raise":
            raise ValueError(
                "capturable=True needs nonfinite='skip' (nonfinite='raise' reads "
                "the norm on the host), got nonfinite='raise'"
            )
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
        # Mutated in place by step(): torch.compile cannot trace a new attribute binding.
        self._last: dict[str, Tensor] = {}
        self._bucket_cache: dict[int, tuple[tuple[int, ...], Buckets]] = {}
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_last", {})
        self.__dict__.setdefault("_bucket_cache", {})
        for group in self.param_groups:
            for key, value in (
                ("decay", 0.0),
                ("min_lr", 0.0),
                ("momentum", 0.0),
                ("dampening", 0.0),
                ("nesterov", False),
                ("weight_decay", 0.0),
                ("maximize", False),
                ("norm_scale", 1.0),
                ("nonfinite", "skip"),
                ("foreach", None),
                ("fused", None),
                ("capturable", False),
            ):
                group.setdefault(key, value)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; its ``t`` starts at the optimizer's current ``t``."""
        for key in _GLOBAL_KEYS:
            if key in param_group and param_group[key] != self.defaults[key]:
                raise ValueError(
                    f"{key} is one setting for the whole optimizer, not per group;"
                    f" got {key}={param_group[key]!r} in a group"
                )
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        _validate_group(group)
        if len(self.param_groups) > 1 and "step" in self.param_groups[0]:
            # t is global: a late group joins at the current count.
            group["step"] = self.param_groups[0]["step"].clone()
            group["skipped"] = self.param_groups[0]["skipped"].clone()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load state; the step counters are moved next to each group's params."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            if "step" in group and group["params"]:
                device = local(group["params"][0]).device
                group["step"] = group["step"].to(device, torch.float32).clone()
                group["skipped"] = group["skipped"].to(device, torch.float32).clone()

    def _ensure_counters(self, device: torch.device) -> None:
        for group in self.param_groups:
            for key in ("step", "skipped"):
                if key not in group:
                    group[key] = torch.zeros((), dtype=torch.float32, device=device)
                elif group[key].device != device:
                    group[key] = group[key].to(device)

    def _collect(
        self,
    ) -> list[tuple[dict[str, Any], list[Tensor], list[Tensor], list[Tensor | None]]]:
        out = []
        for gi, group in enumerate(self.param_groups):
            params, grads, bufs = [], [], []
            for pi, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(
                        f"SuperLevelSGD does not support sparse gradients (group {gi}, param "
                        f"{pi}, shape {tuple(p.shape)}); use a dense embedding "
                        f"(sparse=False) or a sparse-aware optimizer for that parameter"
                    )
                params.append(p)
                grads.append(p.grad)
                if group["momentum"] != 0.0:
                    bufs.append(self.state[p].get("momentum_buffer"))
            out.append((group, params, grads, bufs))
        return out

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step of the rule; returns ``closure()``'s loss (``None`` without closure).

        Params without a gradient are left untouched. A step where no param has a gradient
        changes nothing and is not counted.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        collected = self._collect()
        all_grads = [g for _, _, grads, _ in collected for g in grads]
        if not all_grads:
            return loss
        sharded = has_dtensor(all_grads)
        # DTensor (FSDP2) params and grads are updated through their local shards.
        loc = (lambda ts: [local(t) for t in ts]) if sharded else (lambda ts: ts)
        home = local(all_grads[0]).device
        # torch's check: capturing a step needs capturable=True (older torch: cuda name).
        # Skipped under torch.compile: dynamo cannot trace the check (a graph break).
        if not torch.compiler.is_compiling():
            check = getattr(self, "_accelerator_graph_capture_health_check", None)
            check = check or getattr(self, "_cuda_graph_capture_health_check", None)
            if check is not None:
                check()
        if self.defaults["capturable"]:
            bad = [p for _, ps, _, _ in collected for p in loc(ps) if p.device.type == "cpu"]
            if bad:
                raise ValueError(
                    f"capturable=True needs params on an accelerator, got a param on "
                    f"{bad[0].device}"
                )
        # (device, dtype) grouping, cached per group while its params with grads stay the same.
        group_buckets = [self._buckets(gi, loc(ps)) for gi, (_, ps, _, _) in enumerate(collected)]
        all_buckets = _merge(group_buckets, [len(ps) for _, ps, _, _ in collected])
        impl = resolve_impl(
            loc(all_grads),
            foreach=self.defaults["foreach"],
            fused=self.defaults["fused"],
            buckets=all_buckets,
        )
        norm = global_grad_norm(all_grads, foreach=impl != "single", buckets=all_buckets)
        # CPU, eager: norm, flag and t are in host memory; Python floats replace ~15 tiny
        # tensor ops per step (no device sync exists to avoid there).
        host = (
            impl != "fused"
            and all(dev.type == "cpu" for dev, _ in all_buckets)
            and all(_on_cpu(g["lr"]) for g in self.param_groups)
            and host_scalars(home)
        )
        if host:
            eta, ok = modulation_host(float(norm), self.defaults["norm_scale"])
        else:
            eta, ok = modulation(norm, self.defaults["norm_scale"])
        if self.defaults["nonfinite"] == "raise" and not bool(ok):
            raise FloatingPointError(
                f"SuperLevelSGD: non-finite gradient norm {float(norm)} (nonfinite='raise'); "
                f"nothing was changed"
            )
        self._ensure_counters(home)
        last_lr = None
        for (group, params, grads, bufs), buckets in zip(collected, group_buckets, strict=True):
            if host:
                a = decayed_lr_host(
                    float(group["step"]), group["lr"], group["decay"], group["min_lr"]
                )
            else:
                a = decayed_lr(
                    group["step"], group["lr"], group["decay"], group["min_lr"], dtype=norm.dtype
                )
            if last_lr is None:
                last_lr = a
            if not params:
                continue
            momentum = group["momentum"]
            local_bufs = loc(bufs) if sharded else list(bufs)
            superlevel_update_(
                loc(params),
                loc(grads),
                local_bufs,
                lr=a,
                eta=eta,
                ok=ok,
                weight_decay=group["weight_decay"],
                momentum=momentum,
                dampening=group["dampening"],
                nesterov=group["nesterov"],
                maximize=group["maximize"],
                impl=impl,
                buckets=buckets,
            )
            if momentum != 0.0:
                for p, old, new in zip(params, bufs, local_bufs, strict=True):
                    if old is None:
                        self.state[p]["momentum_buffer"] = _like_param(new, p)
        if host:
            counter = "step" if ok else "skipped"
            for group in self.param_groups:
                group[counter].add_(1.0)
        else:
            bad = torch.logical_not(ok)
            for group in self.param_groups:
                group["step"].add_(ok)
                group["skipped"].add_(bad)
        # Floats on the host path; stats() makes tensors (and the product) when asked.
        self._last.update(grad_norm=norm, scale=eta, lr=last_lr)
        return loss

    def _buckets(self, gi: int, params: list[Tensor]) -> Buckets:
        if torch.compiler.is_compiling():
            return _buckets(params)
        key = tuple(map(id, params))
        hit = self._bucket_cache.get(gi)
        if hit is None or hit[0] != key:
            hit = self._bucket_cache[gi] = (key, _buckets(params))
        return hit[1]

    def stats(self) -> dict[str, Tensor]:
        """Last step's numbers as 0-dim tensors (no host sync).

        Keys: ``step`` (t), ``grad_norm`` (n_t), ``scale`` (eta_t, 0 when skipped), ``lr``
        (a_t of group 0), ``effective_lr`` (a_t * eta_t of group 0), ``skipped`` (count).
        Zeros before the first step.
        """
        group = self.param_groups[0]
        zero = torch.zeros(())
        last = self._last or {}
        norm = last.get("grad_norm", zero)

        def tensor(key: str) -> Tensor:
            value = last.get(key, zero)
            # Host-path steps keep Python floats; same dtype/device as the norm then.
            return value if isinstance(value, Tensor) else norm.new_tensor(value)

        lr, scale = tensor("lr"), tensor("scale")
        return {
            "step": group.get("step", zero),
            "grad_norm": norm,
            "scale": scale,
            "lr": lr,
            "effective_lr": lr * scale,
            "skipped": group.get("skipped", zero),
        }


def _on_cpu(value: Any) -> bool:
    """A float, or a tensor in host memory (readable without a device sync)."""
    return not isinstance(value, Tensor) or value.device.type == "cpu"


def _merge(buckets: list[Buckets], sizes: list[int]) -> Buckets:
    """Buckets of the concatenation of lists whose own buckets are given."""
    nonempty = [(b, n) for b, n in zip(buckets, sizes, strict=True) if n]
    if len(nonempty) == 1 and nonempty[0][0] is buckets[0]:
        return buckets[0]
    out: Buckets = {}
    offset = 0
    for b, n in zip(buckets, sizes, strict=True):
        for key, idx in b.items():
            out.setdefault(key, []).extend(i + offset for i in idx)
        offset += n
    return out


def _like_param(buf: Tensor, p: Tensor) -> Tensor:
    """Wrap a buffer built from a DTensor's local shard back into a DTensor like ``p``."""
    if not _is_dtensor(p):
        return buf
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(
        buf, p.device_mesh, p.placements, run_check=False, shape=p.shape, stride=p.stride()
    )
