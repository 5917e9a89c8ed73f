"""Hessian sharpness: the top ``|eigenvalue|`` of the Hessian of a loss.

Only Hessian-vector products are used (double backward, Pearlmutter's trick)::

    H v = d/dtheta ( grad L(theta) . v )

so the cost of one product is about two backward passes, and the Hessian is never formed.
Two solvers share the product:

* ``"power"``: power iteration ``v <- H v / ||H v||`` with the Rayleigh quotient
  ``lambda = v . H v`` as the estimate; it converges to the eigenvalue of largest
  magnitude at the rate ``|lambda_2 / lambda_1|`` per iteration (slow for clustered
  spectra).
* ``"lanczos"``: Lanczos with full re-orthogonalisation; after ``m`` products the
  extreme Ritz value of the tridiagonal ``T_m`` is a far better estimate for the same
  cost (``m`` vectors of memory).

Both stop when the relative change of the estimate is ``<= tol`` (one host sync per
iteration) or after ``iters`` products.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["SharpnessResult", "hessian_vector_product", "sharpness", "top_eigenvalue"]

_METHODS = ("power", "lanczos")


@dataclass(frozen=True)
class SharpnessResult:
    """The estimate of :func:`top_eigenvalue`.

    Attributes:
        value: ``|lambda|``, the sharpness.
        eigenvalue: ``lambda`` with its sign (negative: the dominant direction is concave).
        iters: Hessian-vector products used.
        converged: the relative change fell to ``tol`` before ``iters`` ran out (or the
            Krylov space became invariant, which makes the estimate exact).
    """

    value: float
    eigenvalue: float
    iters: int
    converged: bool


def hessian_vector_product(
    loss_fn: Callable[[], Tensor], params: list[Tensor]
) -> tuple[Callable[[Tensor], Tensor], int]:
    """Build ``v -> H v`` on the flat parameter space of ``params``.

    ``loss_fn`` is evaluated once; its graph is kept for all products.

    Returns:
        ``(hvp, n)`` where ``hvp`` maps a flat vector of length ``n`` to the flat ``H v``.
        Params the loss does not depend on (or only linearly) get zero rows.
    """
    with torch.enable_grad():
        loss = loss_fn()
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError(f"loss_fn must return a scalar tensor, got {loss!r}")
        value = float(loss.detach())  # one host sync: a NaN loss has no curvature to find
        if not math.isfinite(value):
            raise ValueError(
                f"loss_fn returned a non-finite loss ({value}): the sharpness is undefined "
                f"(an empty batch gives nan)"
            )
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    # only gradients that still depend on the params carry curvature
    live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    sizes = [p.numel() for p in params]
    n = sum(sizes)

    def hvp(v: Tensor) -> Tensor:
        if not live:
            return torch.zeros_like(v)
        chunks = torch.split(v, sizes)
        with torch.enable_grad():
            out = torch.autograd.grad(
                [grads[i] for i in live],
                params,
                grad_outputs=[chunks[i].view_as(params[i]) for i in live],
                retain_graph=True,
                allow_unused=True,
            )
        return torch.cat(
            [
                (o if o is not None else torch.zeros_like(p)).reshape(-1).to(v.dtype)
                for o, p in zip(out, params, strict=True)
            ]
        )

    return hvp, n


def _check_finite(i: int, *values: float) -> None:
    """Raise when a Hessian-vector product went non-finite (inf/nan curvature)."""
    if not all(math.isfinite(x) for x in values):
        raise ValueError(
            f"the Hessian-vector product is not finite at iteration {i} (got {values}): "
            f"the loss has an infinite or undefined second derivative at these params"
        )


def _power(hvp: Callable[[Tensor], Tensor], v: Tensor, iters: int, tol: float) -> SharpnessResult:
    v = v / v.norm()
    lam_prev = math.nan
    for i in range(1, iters + 1):
        hv = hvp(v)
        lam_t, norm_t = torch.stack([torch.dot(v, hv), hv.norm()]).tolist()  # one sync
        _check_finite(i, lam_t, norm_t)
        if norm_t == 0.0:  # v is in the null space: H v = 0 along the whole orbit
            return SharpnessResult(0.0, 0.0, i, True)
        v = hv / norm_t
        if abs(lam_t - lam_prev) <= tol * abs(lam_t):
            return SharpnessResult(abs(lam_t), lam_t, i, True)
        lam_prev = lam_t
    return SharpnessResult(abs(lam_prev), lam_prev, iters, False)


def _lanczos(hvp: Callable[[Tensor], Tensor], v: Tensor, iters: int, tol: float) -> SharpnessResult:
    basis = [v / v.norm()]
    alphas: list[float] = []
    betas: list[float] = []
    prev = math.nan
    top = math.nan
    for j in range(1, iters + 1):
        q = basis[-1]
        w = hvp(q)
        alpha = torch.dot(w, q)
        w = w - alpha * q
        if betas:
            w = w - betas[-1] * basis[-2]
        # full re-orthogonalisation, twice ("twice is enough"): keeps T's spectrum clean
        stacked = torch.stack(basis)
        for _ in range(2):
            w = w - stacked.T @ (stacked @ w)
        alpha_f, beta_f = torch.stack([alpha, w.norm()]).tolist()  # one sync
        _check_finite(j, alpha_f, beta_f)
        alphas.append(alpha_f)
        t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if betas:
            off = torch.tensor(betas, dtype=torch.float64)
            t = t + torch.diag(off, 1) + torch.diag(off, -1)
        ritz = torch.linalg.eigvalsh(t)
        top = float(ritz[ritz.abs().argmax()])
        # an invariant Krylov space makes the Ritz values exact eigenvalues
        invariant = beta_f <= 1e-10 * max(abs(top), 1e-30) or j == v.numel()
        if invariant or abs(top - prev) <= tol * abs(top):
            return SharpnessResult(abs(top), top, j, True)
        prev = top
        betas.append(beta_f)
        basis.append(w / beta_f)
    return SharpnessResult(abs(top), top, iters, False)


def _preconditioned(
    hvp: Callable[[Tensor], Tensor], params: list[Tensor], precondition: Sequence[Tensor]
) -> Callable[[Tensor], Tensor]:
    """``v -> P^{-1/2} H P^{-1/2} v`` for a positive diagonal ``P`` given per param."""
    if len(precondition) != len(params):
        raise ValueError(
            f"precondition needs one tensor per trainable param: got {len(precondition)} "
            f"for {len(params)}"
        )
    for i, (d, p) in enumerate(zip(precondition, params, strict=True)):
        if d.shape != p.shape:
            raise ValueError(
                f"precondition[{i}] has shape {tuple(d.shape)}, param {tuple(p.shape)}"
            )
    flat = torch.cat([d.detach().reshape(-1) for d in precondition]).to(params[0])
    if not bool((flat > 0).all()):
        raise ValueError("precondition must be positive everywhere")
    scale = flat.rsqrt()
    return lambda v: scale * hvp(scale * v)


def check_solver_args(iters: int, tol: float, method: str) -> None:
    """Raise ``ValueError`` naming the bad value among ``iters``, ``tol``, ``method``."""
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be an int >= 1, got {iters!r}")
    if not isinstance(tol, (int, float)) or not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")


def top_eigenvalue(
    loss_fn: Callable[[], Tensor],
    params: Iterable[Tensor] | nn.Module,
    iters: int = 20,
    tol: float = 1e-3,
    *,
    seed: int = 0,
    method: str = "power",
    model: nn.Module | None = None,
    precondition: Sequence[Tensor] | None = None,
) -> SharpnessResult:
    """Dominant Hessian eigenvalue of ``loss_fn()`` w.r.t. ``params``, with diagnostics.

    Args:
        loss_fn: ``loss_fn() -> scalar tensor``; evaluated once (mini-batch or full
            batch: whatever it computes).
        params: the tensors to differentiate w.r.t. (those with ``requires_grad``), or a
            module (its parameters).
        iters: at most this many Hessian-vector products.
        tol: stop when ``|lambda_i - lambda_{i-1}| <= tol * |lambda_i|``.
        seed: seeds the Gaussian start vector (drawn on the CPU, so results do not
            depend on the device's generator).
        method: ``"power"`` or ``"lanczos"``.
        model: when given, it is switched to ``eval()`` for the computation (BatchNorm
            uses its running statistics, dropout is off, so ``loss_fn`` is a fixed
            function) and every submodule's ``training`` flag is restored afterwards.
            Without ``model``, ``loss_fn`` runs in whatever mode the caller left.
        precondition: optional positive diagonal ``P`` (one tensor per trainable param,
            same shapes): then the dominant eigenvalue of ``P^{-1} H`` is returned
            (computed as ``P^{-1/2} H P^{-1/2}``, which is symmetric with the same
            spectrum). This is the sharpness that governs a preconditioned method such
            as Adam (``P = sqrt(v_hat) + eps``).

    Returns:
        A :class:`SharpnessResult`.
    """
    check_solver_args(iters, tol, method)
    if isinstance(params, nn.Module):
        params = params.parameters()
    plist = [p for p in params if p.requires_grad]
    if not plist:
        raise ValueError("params has no tensor with requires_grad=True")
    modes = [(m, m.training) for m in model.modules()] if model is not None else []
    if model is not None:
        model.eval()
    try:
        hvp, n = hessian_vector_product(loss_fn, plist)
        if precondition is not None:
            hvp = _preconditioned(hvp, plist, precondition)
        gen = torch.Generator().manual_seed(seed)
        v = torch.randn(n, generator=gen, dtype=torch.float64)
        v = v.to(device=plist[0].device, dtype=plist[0].dtype)
        solve = _power if method == "power" else _lanczos
        return solve(hvp, v, iters, tol)
    finally:
        for m, mode in modes:
            m.training = mode


def sharpness(
    loss_fn: Callable[[], Tensor],
    params: Iterable[Tensor] | nn.Module,
    iters: int = 20,
    tol: float = 1e-3,
    *,
    seed: int = 0,
    method: str = "power",
    model: nn.Module | None = None,
    precondition: Sequence[Tensor] | None = None,
) -> float:
    """Sharpness ``|lambda|_max`` of the Hessian of ``loss_fn()`` w.r.t. ``params``.

    Gradient descent with step ``eta`` on a quadratic of curvature ``lambda`` is stable
    iff ``eta * lambda < 2``; this is the ``lambda`` to compare against ``2 / eta``.
    See :func:`top_eigenvalue` for the arguments (and the signed value, iteration count
    and convergence flag).

    Example:
        >>> s = sharpness(lambda: loss_fn(model(x), y), model, model=model)
    """
    return top_eigenvalue(
        loss_fn,
        params,
        iters,
        tol,
        seed=seed,
        method=method,
        model=model,
        precondition=precondition,
    ).value
