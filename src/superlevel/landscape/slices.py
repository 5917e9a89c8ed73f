"""1-D and 2-D slices of a loss through parameter space.

A slice evaluates ``L(theta_0 + alpha * d_x + beta * d_y)`` on a grid of ``(alpha, beta)``.
Directions are either

- *filter-normalised* random directions (Li et al., 2018): draw ``d ~ N(0, I)`` shaped like
  the parameters, then rescale each filter ``d_i`` (a slice along the first dimension of a
  weight ``W``) to the norm of the matching filter of ``W``: ``d_i <- d_i * |W_i| / |d_i|``,
  so that the slice's scale follows the network's own scale invariances; or
- the top principal directions of a trajectory ``theta_0 .. theta_T`` (of the differences
  ``theta_t - theta_T``), where the trajectory actually moves.

A 2-D slice is returned as a :class:`~superlevel.landscape.components.Grid`, so level-set
components and plots work on it directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from superlevel.landscape.barriers import flat_params, model_loss_fn
from superlevel.landscape.components import Grid

__all__ = [
    "filter_normalize",
    "filter_normalized_direction",
    "pca_directions",
    "Slice1D",
    "slice_1d",
    "slice_2d",
    "model_slice_2d",
]

ONE_D_MODES = ("zero", "filter")


def filter_normalize(
    direction: Sequence[torch.Tensor], weights: Sequence[torch.Tensor], one_d: str = "zero"
) -> list[torch.Tensor]:
    """Rescale each filter of ``direction`` to the norm of the matching filter of ``weights``.

    For a weight ``W`` with ``W.ndim >= 2`` the filters are ``W[i]`` (rows of a linear
    layer, output channels of a convolution): ``d[i] <- d[i] * |W[i]| / |d[i]|``. For 1-D
    tensors (biases, normalisation scales) ``one_d="zero"`` sets ``d = 0`` (the slice does
    not move them) and ``one_d="filter"`` treats the tensor as one filter.

    Args:
        direction: tensors shaped like ``weights``.
        weights: the reference weights.
        one_d: ``"zero"`` or ``"filter"``.

    Returns:
        The new direction tensors (the inputs are not modified). A filter whose random
        draw is zero stays zero.
    """
    if one_d not in ONE_D_MODES:
        raise ValueError(f"one_d must be one of {', '.join(ONE_D_MODES)}; got {one_d!r}")
    if len(direction) != len(weights):
        raise ValueError(f"{len(direction)} direction tensors for {len(weights)} weights")
    out = []
    for d, w in zip(direction, weights, strict=True):
        if d.shape != w.shape:
            raise ValueError(f"direction shape {tuple(d.shape)} != weight {tuple(w.shape)}")
        if w.ndim <= 1:
            if one_d == "zero":
                out.append(torch.zeros_like(d))
                continue
            d2, w2 = d.reshape(1, -1), w.reshape(1, -1)
        else:
            d2, w2 = d.reshape(d.shape[0], -1), w.reshape(w.shape[0], -1)
        dn = d2.norm(dim=1, keepdim=True)
        # Zero draws stay zero instead of dividing by zero.
        scale = torch.where(dn > 0, w2.norm(dim=1, keepdim=True) / dn.clamp_min(1e-30), 0.0)
        out.append((d2 * scale).reshape(d.shape))
    return out


def filter_normalized_direction(
    model: nn.Module, seed: int = 0, *, one_d: str = "zero"
) -> torch.Tensor:
    """A seeded random filter-normalised direction for ``model``, as a flat vector.

    The Gaussian draw uses a CPU generator seeded with ``seed`` (so the direction does not
    depend on the device or the global RNG) and is moved to the parameters' device; the
    flat order is that of :func:`~superlevel.landscape.barriers.flat_params`.
    """
    weights = [p.detach() for p in model.parameters()]
    if not weights:
        raise ValueError(f"{type(model).__name__} has no parameters")
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    draws = [
        torch.randn(w.shape, generator=gen, dtype=torch.float64).to(w.device, w.dtype)
        for w in weights
    ]
    return torch.cat([d.reshape(-1) for d in filter_normalize(draws, weights, one_d)])


def pca_directions(
    trajectory: torch.Tensor | Sequence[torch.Tensor], k: int = 2
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-``k`` principal directions of a trajectory, relative to its last point.

    With ``M = [theta_t - theta_T]_t`` (``(T + 1, P)``) and ``M = U S V^T``, the directions
    are the first ``k`` rows of ``V^T`` (orthonormal), each signed so its largest-magnitude
    entry is positive. The explained-variance ratios are ``S_i^2 / sum_j S_j^2``.

    Args:
        trajectory: ``(T + 1, P)`` tensor or a list of flat parameter vectors.
        k: number of directions, ``1 <= k <= T``.

    Returns:
        ``(directions (k, P), ratios (k,), coords (T + 1, k))``, where ``coords`` are the
        trajectory's coordinates ``(theta_t - theta_T) . v_i`` in the slice.
    """
    traj = torch.stack(list(trajectory)) if not isinstance(trajectory, torch.Tensor) else trajectory
    traj = traj.detach()
    if traj.ndim != 2 or traj.shape[0] < 2:
        raise ValueError(f"trajectory must have shape (T + 1, P) with T >= 1, got {traj.shape}")
    if not isinstance(k, int) or not 1 <= k <= min(traj.shape[0] - 1, traj.shape[1]):
        raise ValueError(
            f"k must be an int in 1..{min(traj.shape[0] - 1, traj.shape[1])}, got {k!r}"
        )
    m = (traj - traj[-1]).to(torch.float64)
    _, s, vh = torch.linalg.svd(m, full_matrices=False)
    dirs = vh[:k]
    idx = dirs.abs().argmax(dim=1)
    signs = torch.sign(dirs[torch.arange(k), idx])
    dirs = dirs * torch.where(signs == 0, 1.0, signs)[:, None]
    ratios = (s[:k] ** 2) / (s**2).sum().clamp_min(1e-300)
    coords = m @ dirs.T
    return dirs.to(traj.dtype), ratios, coords


@dataclass(frozen=True)
class Slice1D:
    """Losses ``L(theta_0 + alpha * d)`` at ``alphas`` (float64 tensors)."""

    alphas: torch.Tensor
    losses: torch.Tensor


def _flat(x: torch.Tensor, name: str) -> torch.Tensor:
    x = torch.as_tensor(x).detach()
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    return x.reshape(-1)


def _evaluate(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    points: Callable[[torch.Tensor], torch.Tensor],
    coeffs: torch.Tensor,
    batch_size: int | None,
) -> np.ndarray:
    """Loss at ``points(coeffs[i:j])`` for chunks of coefficients, as float64 numpy."""
    out = []
    with torch.no_grad():
        if batch_size is None:
            for c in coeffs:
                out.append(float(loss_fn(points(c[None])[0])))
        else:
            for start in range(0, coeffs.shape[0], batch_size):
                chunk = coeffs[start : start + batch_size]
                vals = loss_fn(points(chunk)).detach().reshape(-1)
                if vals.numel() != chunk.shape[0]:
                    raise ValueError(f"loss_fn returned {vals.numel()} values for {len(chunk)}")
                out.extend(vals.cpu().to(torch.float64).tolist())
    return np.asarray(out, dtype=np.float64)


def _check_span(span: tuple[float, float], name: str) -> tuple[float, float]:
    lo, hi = map(float, span)
    if not lo < hi:
        raise ValueError(f"{name} must be (low, high) with low < high, got {span}")
    return lo, hi


def slice_1d(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    origin: torch.Tensor,
    direction: torch.Tensor,
    steps: int = 51,
    span: tuple[float, float] = (-1.0, 1.0),
    *,
    batch_size: int | None = None,
) -> Slice1D:
    """Losses along ``theta(alpha) = origin + alpha * direction`` for ``alpha`` in ``span``.

    For the segment between two states use ``direction = theta_b - theta_a`` and e.g.
    ``span=(-0.25, 1.25)``; for a random direction use :func:`filter_normalized_direction`.

    Args:
        loss_fn: loss at one flat parameter vector (or at a ``(m, P)`` stack when
            ``batch_size`` is given).
        origin: ``theta_0``.
        direction: ``d``, same number of elements.
        steps: number of ``alpha`` values (>= 2).
        span: ``(alpha_min, alpha_max)``.
        batch_size: evaluate ``batch_size`` points per call (``loss_fn`` must broadcast).
    """
    o, d = _flat(origin, "origin"), _flat(direction, "direction")
    if o.numel() != d.numel():
        raise ValueError(f"origin and direction differ in size: {o.numel()} vs {d.numel()}")
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an int >= 2, got {steps!r}")
    lo, hi = _check_span(span, "span")
    alphas = torch.linspace(lo, hi, steps, dtype=torch.float64)
    d = d.to(o)
    losses = _evaluate(loss_fn, lambda c: o + c.to(o)[:, :1] * d, alphas[:, None], batch_size)
    return Slice1D(alphas, torch.from_numpy(losses))


def slice_2d(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    origin: torch.Tensor,
    dir_x: torch.Tensor,
    dir_y: torch.Tensor,
    steps: int | tuple[int, int] = 25,
    span_x: tuple[float, float] = (-1.0, 1.0),
    span_y: tuple[float, float] = (-1.0, 1.0),
    *,
    batch_size: int | None = None,
) -> Grid:
    """Losses on the plane ``origin + alpha * dir_x + beta * dir_y``.

    Args:
        loss_fn: loss at one flat parameter vector (or a ``(m, P)`` stack with
            ``batch_size``).
        origin: ``theta_0``.
        dir_x: first direction ``d_x``.
        dir_y: second direction ``d_y``.
        steps: points per axis, one int or ``(n_alpha, n_beta)``, each >= 2.
        span_x: range of ``alpha``.
        span_y: range of ``beta``.
        batch_size: evaluate ``batch_size`` points per call (``loss_fn`` must broadcast).

    Returns:
        A :class:`Grid` with ``axes = (alphas, betas)`` and ``values[i, j]`` the loss at
        ``(alphas[i], betas[j])``.
    """
    o = _flat(origin, "origin")
    dx, dy = _flat(dir_x, "dir_x").to(o), _flat(dir_y, "dir_y").to(o)
    if not o.numel() == dx.numel() == dy.numel():
        raise ValueError(
            f"origin, dir_x, dir_y differ in size: {o.numel()}, {dx.numel()}, {dy.numel()}"
        )
    nx, ny = (steps, steps) if isinstance(steps, int) else tuple(steps)
    if not all(isinstance(n, int) and n >= 2 for n in (nx, ny)):
        raise ValueError(f"steps must be int(s) >= 2, got {steps!r}")
    ax = np.linspace(*_check_span(span_x, "span_x"), nx)
    ay = np.linspace(*_check_span(span_y, "span_y"), ny)
    coeffs = torch.as_tensor(np.stack(np.meshgrid(ax, ay, indexing="ij"), -1).reshape(-1, 2))

    def points(c: torch.Tensor) -> torch.Tensor:
        c = c.to(o)
        return o + c[:, :1] * dx + c[:, 1:] * dy

    losses = _evaluate(loss_fn, points, coeffs, batch_size)
    return Grid((ax, ay), losses.reshape(nx, ny))


def model_slice_2d(
    model: nn.Module,
    data: Any,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    trajectory: torch.Tensor | Sequence[torch.Tensor] | None = None,
    seed: int = 0,
    steps: int | tuple[int, int] = 25,
    span: float = 1.0,
    margin: float = 0.25,
    bn: str = "eval",
    one_d: str = "zero",
) -> tuple[Grid, torch.Tensor | None]:
    """A 2-D slice of a model's loss, around its weights or along a trajectory.

    Without ``trajectory``: the plane through :func:`flat_params` spanned by two seeded
    filter-normalised directions (seeds ``seed`` and ``seed + 1``), ``alpha, beta`` in
    ``[-span, span]``. With ``trajectory`` (``(T + 1, P)`` flat parameter vectors, e.g.
    saved during training): the plane through its last point spanned by its top-2 PCA
    directions, covering the trajectory's coordinates plus ``margin`` of their range on
    each side.

    Args:
        model: the network (structure and buffers; its weights are the origin without
            a trajectory).
        data: a batch or iterable of batches, see :func:`model_loss_fn`.
        loss: ``loss(output, target)``, a batch mean.
        trajectory: optional iterates to slice along.
        seed: seed of the random directions.
        steps: points per axis.
        span: half-width of the random-direction slice.
        margin: extra room around a trajectory, as a fraction of its extent.
        bn: BatchNorm mode, see :func:`model_loss_fn`.
        one_d: how random directions treat 1-D parameters, see :func:`filter_normalize`.

    Returns:
        ``(grid, coords)``: the slice, and the trajectory's ``(T + 1, 2)`` coordinates in
        it (``None`` without a trajectory).
    """
    if not span > 0 or not margin >= 0:
        raise ValueError(f"span must be > 0 and margin >= 0, got {span}, {margin}")
    fn = model_loss_fn(model, data, loss, bn=bn)
    if trajectory is None:
        theta = flat_params(model)
        dx = filter_normalized_direction(model, seed, one_d=one_d)
        dy = filter_normalized_direction(model, seed + 1, one_d=one_d)
        grid = slice_2d(fn, theta, dx, dy, steps, (-span, span), (-span, span))
        return grid, None
    dirs, _, coords = pca_directions(trajectory, k=2)
    traj = trajectory if isinstance(trajectory, torch.Tensor) else torch.stack(list(trajectory))
    lo, hi = coords.min(0).values, coords.max(0).values
    pad = margin * (hi - lo).clamp_min(1e-12)
    spans = [(float(lo[i] - pad[i]), float(hi[i] + pad[i])) for i in range(2)]
    grid = slice_2d(fn, traj[-1], dirs[0], dirs[1], steps, spans[0], spans[1])
    return grid, coords
