"""Mode connectivity: low-loss curves between two parameter vectors.

A curve ``phi_w: [0, 1] -> R^P`` with fixed ends ``w_0 = theta_a``, ``w_{k+1} = theta_b``
and ``k`` trainable *bends* ``w_1 .. w_k`` (Garipov et al., 2018):

- Bezier: ``phi(t) = sum_{i=0}^{n} C(n, i) * t^i * (1 - t)^(n - i) * w_i`` with ``n = k + 1``;
- polygonal chain: linear between ``w_j`` and ``w_{j+1}`` for ``t`` in
  ``[j / n, (j + 1) / n]``.

The bends start on the straight segment and minimise ``E_{t ~ U(0, 1)} L(phi(t))``: each
step draws one ``t`` per batch and follows the gradient of ``L(phi(t))`` with respect to
the bends. The result reports the curve's barrier next to the straight line's.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from superlevel.landscape.barriers import (
    BarrierResult,
    Batch,
    _as_batches,
    check_kind,
    flat_params,
    model_loss_fn,
    path_barrier,
    segment_barrier,
)

__all__ = ["CURVES", "curve_point", "ConnectResult", "train_curve", "connect", "connect_fn"]

CURVES = ("bezier", "polychain")


def _check_curve(curve: str, bends: int) -> None:
    if curve not in CURVES:
        raise ValueError(f"curve must be one of {', '.join(CURVES)}; got {curve!r}")
    if not isinstance(bends, int) or not 1 <= bends <= 3:
        raise ValueError(f"bends must be 1, 2 or 3, got {bends!r}")


def curve_point(
    control: torch.Tensor, t: float | torch.Tensor, curve: str = "bezier"
) -> torch.Tensor:
    """The point ``phi(t)`` of a curve given its control points ``(n + 1, P)`` (ends included).

    Differentiable in ``control``; ``t`` is clamped to ``[0, 1]``.
    """
    if curve not in CURVES:
        raise ValueError(f"curve must be one of {', '.join(CURVES)}; got {curve!r}")
    n = control.shape[0] - 1
    if n < 1:
        raise ValueError(f"need at least 2 control points, got {control.shape[0]}")
    t = float(min(max(float(t), 0.0), 1.0))
    if curve == "bezier":
        coef = torch.tensor(
            [math.comb(n, i) * t**i * (1.0 - t) ** (n - i) for i in range(n + 1)],
            dtype=control.dtype,
            device=control.device,
        )
        return coef @ control
    j = min(int(t * n), n - 1)  # segment index; t = 1 falls in the last one
    s = t * n - j
    return (1.0 - s) * control[j] + s * control[j + 1]


@dataclass
class ConnectResult:
    """A trained curve and the barriers along it and along the straight line.

    ``curve_barrier.barrier < line_barrier.barrier`` means the curve found a lower path.

    Attributes:
        control: control points ``(bends + 2, P)`` (ends included), detached.
        curve: ``"bezier"`` or ``"polychain"``.
        curve_barrier: losses and barrier along the curve.
        line_barrier: losses and barrier along the straight segment.
        train_losses: ``L(phi(t))`` at each training step (at its random ``t``).
    """

    control: torch.Tensor
    curve: str
    curve_barrier: BarrierResult
    line_barrier: BarrierResult
    train_losses: list[float]

    def point(self, t: float) -> torch.Tensor:
        """``phi(t)`` of the trained curve."""
        return curve_point(self.control, t, self.curve)


def _curve_barrier(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    control: torch.Tensor,
    curve: str,
    points: int,
    kind: str,
) -> BarrierResult:
    ts = torch.linspace(0.0, 1.0, points, dtype=torch.float64)
    with torch.no_grad():
        losses = (
            torch.stack(
                [loss_fn(curve_point(control, float(t), curve)).detach().reshape(()) for t in ts]
            )
            .to(torch.float64)
            .cpu()
        )
    return BarrierResult(path_barrier(losses, kind), losses, ts, kind)


def train_curve(
    loss_at: Callable[[torch.Tensor, Batch | None], torch.Tensor],
    theta_a: torch.Tensor,
    theta_b: torch.Tensor,
    batches: Iterable[Batch] | None = None,
    *,
    curve: str = "bezier",
    bends: int = 1,
    steps: int = 200,
    lr: float = 0.01,
    optimizer: str = "adam",
    seed: int = 0,
    maximize: bool = False,
) -> tuple[torch.Tensor, list[float]]:
    """Train the bends of a curve between ``theta_a`` and ``theta_b`` (functional core).

    Args:
        loss_at: ``loss_at(theta, batch)``, differentiable in ``theta``; ``batch`` is
            ``None`` when ``batches`` is ``None`` (a deterministic function).
        theta_a: fixed start ``w_0`` (flat).
        theta_b: fixed end ``w_{k+1}`` (flat).
        batches: re-iterable batches, cycled through for ``steps`` steps; or ``None``.
        curve: ``"bezier"`` or ``"polychain"``.
        bends: number of trainable bends ``k`` (1..3).
        steps: optimisation steps, one ``t ~ U(0, 1)`` each.
        lr: learning rate for the bends.
        optimizer: ``"adam"`` or ``"sgd"``.
        seed: seeds the draws of ``t`` (a private generator).
        maximize: keep the curve *high* instead (for super-level connectivity).

    Returns:
        ``(control, losses)``: the control points ``(bends + 2, P)`` and the training losses.
    """
    _check_curve(curve, bends)
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    a, b = theta_a.detach().reshape(-1), theta_b.detach().reshape(-1).to(theta_a)
    if a.numel() != b.numel():
        raise ValueError(f"theta_a and theta_b differ in size: {a.numel()} vs {b.numel()}")
    fracs = torch.arange(1, bends + 1, dtype=a.dtype, device=a.device) / (bends + 1)
    inner = (a + fracs[:, None] * (b - a)).clone().requires_grad_(True)
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam([inner], lr=lr)
    elif optimizer == "sgd":
        opt = torch.optim.SGD([inner], lr=lr, momentum=0.9)
    else:
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    stream = itertools.cycle(batches) if batches is not None else itertools.repeat(None)
    losses = []
    for batch in itertools.islice(stream, steps):
        t = float(torch.rand((), generator=gen, dtype=torch.float64))
        control = torch.cat([a[None], inner, b[None]])
        loss = loss_at(curve_point(control, t, curve), batch)
        opt.zero_grad(set_to_none=True)
        (-loss if maximize else loss).backward()
        opt.step()
        losses.append(float(loss.detach()))
    return torch.cat([a[None], inner.detach(), b[None]]), losses


def _flat_state(model: nn.Module, state: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
    if isinstance(state, torch.Tensor):
        return state.detach().reshape(-1)
    missing = [n for n, _ in model.named_parameters() if n not in state]
    if missing:
        raise ValueError(f"state is missing parameters: {', '.join(missing)}")
    return torch.cat([state[n].detach().reshape(-1) for n, _ in model.named_parameters()])


def _train_and_measure(
    loss_at: Callable[[torch.Tensor, Batch | None], torch.Tensor],
    make_eval_fn: Callable[[], Callable[[torch.Tensor], torch.Tensor]],
    a: torch.Tensor,
    b: torch.Tensor,
    batches: Iterable[Batch] | None,
    *,
    curve: str,
    bends: int,
    steps: int,
    lr: float,
    optimizer: str,
    points: int,
    kind: str,
    seed: int,
) -> ConnectResult:
    """Train the bends with ``loss_at``, then measure both barriers with ``make_eval_fn()``.

    The shared tail of :func:`connect` and :func:`connect_fn`: the bends descend for
    ``kind="sub"`` and ascend for ``kind="super"``. The evaluation function is built only
    once training is done (building it may check arguments and read data).
    """
    control, train_losses = train_curve(
        loss_at,
        a,
        b,
        batches,
        curve=curve,
        bends=bends,
        steps=steps,
        lr=lr,
        optimizer=optimizer,
        seed=seed,
        maximize=kind == "super",
    )
    eval_fn = make_eval_fn()
    return ConnectResult(
        control=control,
        curve=curve,
        curve_barrier=_curve_barrier(eval_fn, control, curve, points, kind),
        line_barrier=segment_barrier(eval_fn, a, b, points, kind),
        train_losses=train_losses,
    )


def connect(
    model: nn.Module,
    state_a: torch.Tensor | Mapping[str, torch.Tensor],
    state_b: torch.Tensor | Mapping[str, torch.Tensor],
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    data: Batch | Iterable[Batch],
    curve: str = "bezier",
    bends: int = 1,
    *,
    steps: int = 200,
    lr: float = 0.01,
    optimizer: str = "adam",
    points: int = 61,
    kind: str = "sub",
    bn: str = "eval",
    eval_data: Batch | Iterable[Batch] | None = None,
    seed: int = 0,
) -> ConnectResult:
    """Find a low-loss curve between two trained states of ``model``.

    Training draws one ``t ~ U(0, 1)`` per batch of ``data`` (BatchNorm layers normalise
    by batch statistics while training, as in the original recipe). The barrier along
    the curve and along the straight line are then measured on ``eval_data`` (default:
    ``data``) at ``points`` values of ``t`` with :func:`model_loss_fn` and ``bn``
    (use ``bn="recompute"`` for networks with BatchNorm). The model is not modified.

    Args:
        model: the network (its structure and buffers).
        state_a: flat parameter vector or state dict of the first end.
        state_b: the second end.
        loss: ``loss(output, target)``, a batch mean.
        data: a batch or an iterable of batches for training the bends.
        curve: ``"bezier"`` or ``"polychain"``.
        bends: 1, 2 or 3.
        steps: training steps.
        lr: learning rate of the bends.
        optimizer: ``"adam"`` or ``"sgd"``.
        points: values of ``t`` for the barriers.
        kind: ``"sub"`` or ``"super"``.
        bn: BatchNorm mode for the evaluation, see :func:`model_loss_fn`.
        eval_data: data for the barriers (default ``data``).
        seed: seeds the draws of ``t``.

    Returns:
        A :class:`ConnectResult`.
    """
    _check_curve(curve, bends)
    check_kind(kind)
    ref = flat_params(model)
    a = _flat_state(model, state_a).to(ref)
    b = _flat_state(model, state_b).to(ref)
    if a.numel() != ref.numel() or b.numel() != ref.numel():
        raise ValueError(f"states must hold {ref.numel()} parameters, got {a.numel()}, {b.numel()}")
    batches = _as_batches(data)

    def loss_at(theta: torch.Tensor, batch: Batch | None) -> torch.Tensor:
        return model_loss_fn(model, batch, loss, bn="train")(theta)

    return _train_and_measure(
        loss_at,
        lambda: model_loss_fn(model, data if eval_data is None else eval_data, loss, bn=bn),
        a,
        b,
        batches,
        curve=curve,
        bends=bends,
        steps=steps,
        lr=lr,
        optimizer=optimizer,
        points=points,
        kind=kind,
        seed=seed,
    )


def connect_fn(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    theta_a: torch.Tensor,
    theta_b: torch.Tensor,
    curve: str = "bezier",
    bends: int = 1,
    *,
    steps: int = 200,
    lr: float = 0.01,
    optimizer: str = "adam",
    points: int = 61,
    kind: str = "sub",
    seed: int = 0,
) -> ConnectResult:
    """:func:`connect` for a deterministic function of a flat vector (e.g. a landscape).

    ``loss_fn`` must be differentiable; the bends minimise (``kind="sub"``) or maximise
    (``kind="super"``) ``E_t loss_fn(phi(t))``.
    """
    _check_curve(curve, bends)
    check_kind(kind)
    a = torch.as_tensor(theta_a).detach().reshape(-1)
    if not a.is_floating_point():
        a = a.to(torch.get_default_dtype())
    b = torch.as_tensor(theta_b).detach().reshape(-1).to(a)
    return _train_and_measure(
        lambda theta, _batch: loss_fn(theta),
        lambda: loss_fn,
        a,
        b,
        None,
        curve=curve,
        bends=bends,
        steps=steps,
        lr=lr,
        optimizer=optimizer,
        points=points,
        kind=kind,
        seed=seed,
    )
