"""Loss barriers along straight segments, and loss functions over flat parameter vectors.

The *barrier* of a path ``gamma: [0, 1] -> R^P`` with losses ``l(t) = L(gamma(t))``:

- sub-level (minimisation): ``B = max_t l(t) - max(l(0), l(1))``; ``B > 0`` means the two
  ends lie in different components of ``{L <= max(l(0), l(1))}`` *along this path* (a
  lower path may still connect them);
- super-level: ``B = min(l(0), l(1)) - min_t l(t)``, the same statement for
  ``{L >= min(l(0), l(1))}``.

Both are ``>= 0`` by construction and computed on a grid of ``points`` values of ``t``
(the path's true barrier can only be larger than the grid's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

__all__ = [
    "BarrierResult",
    "path_barrier",
    "segment_barrier",
    "flat_params",
    "unflatten_params",
    "model_loss_fn",
    "check_kind",
]

Kind = Literal["sub", "super"]
Batch = tuple[torch.Tensor, torch.Tensor]
BN_MODES = ("eval", "train", "recompute")


def check_kind(kind: str) -> str:
    """Return ``kind`` if it is ``"sub"`` or ``"super"``, else raise ``ValueError``."""
    if kind not in ("sub", "super"):
        raise ValueError(f"kind must be 'sub' or 'super', got {kind!r}")
    return kind


@dataclass(frozen=True)
class BarrierResult:
    """The losses along a path and its barrier.

    Attributes:
        barrier: the barrier (see the module docstring), ``>= 0`` unless a loss is NaN.
        losses: the losses at ``ts``, float64 of shape ``(points,)``.
        ts: the path parameters in ``[0, 1]``, float64 of shape ``(points,)``.
        kind: ``"sub"`` or ``"super"``.
    """

    barrier: float
    losses: torch.Tensor
    ts: torch.Tensor
    kind: str

    @property
    def t_peak(self) -> float:
        """Where the path is worst: ``argmax l`` (sub) or ``argmin l`` (super)."""
        i = self.losses.argmax() if self.kind == "sub" else self.losses.argmin()
        return float(self.ts[i])


def path_barrier(losses: torch.Tensor, kind: str = "sub") -> float:
    """Barrier of a sampled path from its losses ``l_0 .. l_{n-1}`` (ends first and last).

    ``sub``: ``max_i l_i - max(l_0, l_{n-1})``; ``super``: ``min(l_0, l_{n-1}) - min_i l_i``.
    A NaN loss gives a NaN barrier.
    """
    check_kind(kind)
    losses = torch.as_tensor(losses).reshape(-1)
    if losses.numel() < 2:
        raise ValueError(f"need at least 2 losses (the two ends), got {losses.numel()}")
    ends = losses[[0, -1]]
    if torch.isnan(losses).any():
        return float("nan")
    if kind == "sub":
        return float(losses.max() - ends.max())
    return float(ends.min() - losses.min())


def segment_barrier(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    theta_a: torch.Tensor,
    theta_b: torch.Tensor,
    points: int = 33,
    kind: str = "sub",
    *,
    batched: bool = False,
) -> BarrierResult:
    """Barrier of the straight segment ``theta(t) = (1 - t) * theta_a + t * theta_b``.

    Args:
        loss_fn: loss at one parameter vector (a scalar tensor), e.g. from
            :func:`model_loss_fn` or a synthetic landscape.
        theta_a: start, a tensor (any shape; flattened).
        theta_b: end, same number of elements.
        points: number of equally spaced ``t`` in ``[0, 1]``, ``>= 2`` (odd counts include
            the midpoint).
        kind: ``"sub"`` or ``"super"``.
        batched: call ``loss_fn`` once on the ``(points, P)`` stack instead of per point
            (for functions that broadcast, such as the synthetic landscapes).

    Returns:
        A :class:`BarrierResult`.
    """
    check_kind(kind)
    if not isinstance(points, int) or points < 2:
        raise ValueError(f"points must be an int >= 2, got {points!r}")
    a = torch.as_tensor(theta_a).detach().reshape(-1)
    b = torch.as_tensor(theta_b).detach().reshape(-1).to(a)
    if a.numel() != b.numel():
        raise ValueError(f"theta_a and theta_b differ in size: {a.numel()} vs {b.numel()}")
    dtype = a.dtype if a.is_floating_point() else torch.get_default_dtype()
    a, b = a.to(dtype), b.to(dtype)
    ts = torch.linspace(0.0, 1.0, points, dtype=torch.float64)
    with torch.no_grad():
        if batched:
            thetas = torch.lerp(a, b, ts.to(dtype=dtype, device=a.device)[:, None])
            losses = loss_fn(thetas).detach().reshape(-1).to(torch.float64).cpu()
        else:
            losses = torch.stack(
                [loss_fn(torch.lerp(a, b, float(t))).detach().reshape(()) for t in ts]
            )
            losses = losses.to(torch.float64).cpu()
    if losses.numel() != points:
        raise ValueError(f"loss_fn returned {losses.numel()} values for {points} points")
    return BarrierResult(path_barrier(losses, kind), losses, ts, kind)


def flat_params(model: nn.Module) -> torch.Tensor:
    """A detached flat copy of the model's parameters, in ``model.parameters()`` order."""
    params = [p.detach().reshape(-1) for p in model.parameters()]
    if not params:
        raise ValueError(f"{type(model).__name__} has no parameters")
    return torch.cat(params).clone()


def unflatten_params(model: nn.Module, theta: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split a flat vector into ``{name: tensor}`` shaped like the model's parameters.

    The pieces are views of ``theta`` (so gradients flow back to it), ready for
    :func:`torch.func.functional_call`.
    """
    named = list(model.named_parameters())
    total = sum(p.numel() for _, p in named)
    if theta.ndim != 1 or theta.numel() != total:
        raise ValueError(
            f"theta must be a flat vector of {total} parameters, got shape {tuple(theta.shape)}"
        )
    out: dict[str, torch.Tensor] = {}
    offset = 0
    for name, p in named:
        out[name] = theta[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
    return out


def _as_batches(data: Batch | Iterable[Batch]) -> Iterable[Batch]:
    if (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(t, torch.Tensor) for t in data)
    ):
        return [(data[0], data[1])]
    if iter(data) is data:  # a one-shot iterator: keep it so the loss can be re-evaluated
        data = list(data)
    return data


_BN = nn.modules.batchnorm._BatchNorm


def model_loss_fn(
    model: nn.Module,
    data: Batch | Iterable[Batch],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    bn: str = "eval",
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The mean loss of ``model`` on ``data`` as a function of a flat parameter vector.

    ``L(theta) = sum_b n_b * loss_fn(model_theta(x_b), y_b) / sum_b n_b`` (``loss_fn`` is a
    batch mean). The model is evaluated with :func:`torch.func.functional_call`, so its own
    parameters and buffers are never modified and ``L`` is differentiable in ``theta``.
    Dropout is always off. BatchNorm, whose running statistics belong to the model's
    *current* weights, not to ``theta``:

    - ``"eval"``: use the model's stored running statistics (cheap; wrong away from the
      model's own weights, which can inflate barriers);
    - ``"train"``: normalise each batch by its own statistics;
    - ``"recompute"``: one pass over ``data`` in train mode to recompute the running
      statistics at ``theta`` (cumulative average), then evaluate with them — the honest
      choice for paths between trained networks.

    Args:
        model: the network; only its structure and buffers are used.
        data: one ``(x, y)`` batch or an iterable of batches (re-iterated per call).
        loss_fn: ``loss_fn(output, target)`` returning the batch-mean loss.
        bn: ``"eval"``, ``"train"`` or ``"recompute"``.

    Returns:
        ``theta -> scalar tensor`` on the model's device.
    """
    if bn not in BN_MODES:
        raise ValueError(f"bn must be one of {', '.join(BN_MODES)}; got {bn!r}")
    batches = _as_batches(data)
    bn_modules = [m for m in model.modules() if isinstance(m, _BN)]
    device = next(model.parameters()).device

    def run(params: Mapping[str, torch.Tensor], buffers: dict[str, torch.Tensor]) -> torch.Tensor:
        state = {**params, **buffers}
        total, count = None, 0
        for x, y in batches:
            out = torch.func.functional_call(model, state, (x.to(device),))
            loss = loss_fn(out, y.to(device)) * len(x)
            total = loss if total is None else total + loss
            count += len(x)
        if count == 0:
            raise ValueError("data holds no samples")
        return total / count

    def fn(theta: torch.Tensor) -> torch.Tensor:
        params = unflatten_params(model, theta.to(device))
        # Clones, so running-stat updates never touch the model's own buffers.
        buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
        modes = {m: m.training for m in model.modules()}
        momenta = {m: m.momentum for m in bn_modules}
        try:
            model.eval()
            if bn == "recompute" and bn_modules:
                for name, buf in buffers.items():
                    if name.endswith("running_mean") or name.endswith("num_batches_tracked"):
                        buf.zero_()
                    elif name.endswith("running_var"):
                        buf.fill_(1.0)
                for m in bn_modules:
                    m.train()
                    m.momentum = None  # cumulative average over the pass
                with torch.no_grad():
                    run({k: v.detach() for k, v in params.items()}, buffers)
                for m in bn_modules:
                    m.eval()
            elif bn == "train":
                for m in bn_modules:
                    m.train()
            return run(params, buffers)
        finally:
            for m, training in modes.items():
                m.training = training
            for m, momentum in momenta.items():
                m.momentum = momentum

    return fn
