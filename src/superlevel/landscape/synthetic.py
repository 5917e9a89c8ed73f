"""Synthetic loss landscapes with known structure.

Every landscape is a plain callable object (not an ``nn.Module``): ``f(x)`` takes ``x`` of
shape ``(..., dim)`` and returns the values, shape ``(...)``, differentiably. Each knows

- ``dim``: the number of coordinates;
- ``minima``: a float64 tensor ``(k, dim)`` of its (global or listed) minimisers;
- ``saddle_values``: the sorted values of its index-1 saddles where known, else ``None``;
- ``bounds``: a default plotting / grid box, one ``(low, high)`` pair per coordinate.

The saddle values of :class:`Himmelblau` were found by Newton's method on the gradient
(float64) and are checked again in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

__all__ = [
    "Landscape",
    "Quadratic",
    "Rosenbrock",
    "Himmelblau",
    "Rastrigin",
    "MultiWell",
    "newton_critical_point",
    "LANDSCAPES",
    "make_landscape",
]


def _as_f64(x: Sequence[Sequence[float]] | torch.Tensor, name: str) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.float64).clone()
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, got {t.tolist()}")
    return t


class Landscape:
    """Base class: shape checking and the shared attributes.

    Subclasses implement :meth:`_value` on a tensor whose last dimension is ``dim``.
    """

    dim: int
    minima: torch.Tensor
    saddle_values: list[float] | None
    bounds: list[tuple[float, float]]
    name: str = "landscape"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{self.name}: x must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(
                f"{self.name}: x must have shape (..., {self.dim}), got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            x = x.to(torch.get_default_dtype())
        return self._value(x)

    def _value(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def min_value(self) -> float:
        """The smallest value over :attr:`minima` (float64)."""
        return float(self(self.minima).min())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim})"


class Quadratic(Landscape):
    """Axis-aligned quadratic ``f(x) = 0.5 * sum_i lambda_i * x_i**2``.

    The Hessian is ``diag(lambda)``, so gradient descent with step ``lr`` is stable iff
    ``lr < 2 / max(lambda)``. With all ``lambda_i >= 0`` the origin is the minimum; with
    mixed signs it is a saddle of value 0 and there is no minimum.

    Args:
        eigenvalues: the Hessian eigenvalues ``lambda`` (one per coordinate, finite).
    """

    name = "quadratic"

    def __init__(self, eigenvalues: Sequence[float] | torch.Tensor) -> None:
        lam = _as_f64(eigenvalues, "eigenvalues").reshape(-1)
        if lam.numel() == 0:
            raise ValueError("eigenvalues must be non-empty")
        self.eigenvalues = lam
        self.dim = lam.numel()
        if bool((lam >= 0).all()):
            self.minima = torch.zeros(1, self.dim, dtype=torch.float64)
            self.saddle_values = None
        else:
            self.minima = torch.zeros(0, self.dim, dtype=torch.float64)
            self.saddle_values = [0.0] if bool((lam > 0).any()) else None
        self.bounds = [(-2.0, 2.0)] * self.dim

    def _value(self, x: torch.Tensor) -> torch.Tensor:
        lam = self.eigenvalues.to(dtype=x.dtype, device=x.device)
        return 0.5 * (lam * x * x).sum(-1)


class Rosenbrock(Landscape):
    """Rosenbrock's banana ``f(x, y) = (a - x)**2 + b * (y - x**2)**2``.

    One minimum at ``(a, a**2)`` with value 0; no other critical points (``b > 0``).

    Args:
        a: position of the minimum along ``x``.
        b: steepness of the valley walls, must be positive.
    """

    name = "rosenbrock"

    def __init__(self, a: float = 1.0, b: float = 100.0) -> None:
        if not (math.isfinite(a) and math.isfinite(b)) or b <= 0:
            raise ValueError(f"Rosenbrock needs finite a and b > 0, got a={a}, b={b}")
        self.a, self.b = float(a), float(b)
        self.dim = 2
        self.minima = torch.tensor([[self.a, self.a**2]], dtype=torch.float64)
        self.saddle_values = None
        self.bounds = [(self.a - 3.0, self.a + 1.0), (self.a**2 - 2.0, self.a**2 + 2.0)]

    def _value(self, x: torch.Tensor) -> torch.Tensor:
        u, v = x[..., 0], x[..., 1]
        return (self.a - u) ** 2 + self.b * (v - u * u) ** 2


class Himmelblau(Landscape):
    """Himmelblau's function ``f(x, y) = (x**2 + y - 11)**2 + (x + y**2 - 7)**2``.

    Four global minima of value 0, four index-1 saddles and one local maximum
    (value 181.6165 at ``(-0.2708, -0.9230)``). The sub-level set ``{f <= c}`` has 4
    components for ``0 < c < 13.3119`` (the lowest saddle, at ``(3.3852, 0.0739)``), and
    fewer above it.
    """

    name = "himmelblau"

    #: minimisers, verified by Newton's method (float64).
    MINIMA = (
        (3.0, 2.0),
        (-2.805118086952745, 3.131312518250573),
        (-3.779310253377747, -3.283185991286170),
        (3.584428340330492, -1.848126526964404),
    )
    #: index-1 saddles as ``(x, y, value)``, verified by Newton's method, sorted by value.
    SADDLES = (
        (3.385154183607021, 0.073851879837749, 13.311926270405587),
        (0.086677504555396, 2.884254701174776, 67.719150087526130),
        (-3.073025750764390, -0.081353044287968, 104.015162917558110),
        (-0.127961346730680, -1.953714980244576, 178.337239201927450),
    )
    #: the local maximum ``(x, y, value)``.
    MAXIMUM = (-0.270844590667348, -0.923038556479981, 181.616521522582700)

    def __init__(self) -> None:
        self.dim = 2
        self.minima = torch.tensor(self.MINIMA, dtype=torch.float64)
        self.saddle_values = [s[2] for s in self.SADDLES]
        self.saddles = torch.tensor([s[:2] for s in self.SADDLES], dtype=torch.float64)
        self.bounds = [(-5.0, 5.0), (-5.0, 5.0)]

    def _value(self, x: torch.Tensor) -> torch.Tensor:
        u, v = x[..., 0], x[..., 1]
        return (u * u + v - 11.0) ** 2 + (u + v * v - 7.0) ** 2


class Rastrigin(Landscape):
    """Rastrigin's function ``f(x) = A * n + sum_i (x_i**2 - A * cos(2 * pi * x_i))``.

    Global minimum 0 at the origin (the only one listed in :attr:`minima`) surrounded by
    a lattice of local minima near the integer points; its saddle values have no closed
    form, so ``saddle_values`` is ``None``.

    Args:
        dim: number of coordinates (>= 1).
        A: amplitude of the cosine ripples (> 0).
    """

    name = "rastrigin"

    def __init__(self, dim: int = 2, A: float = 10.0) -> None:
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"Rastrigin dim must be a positive int, got {dim!r}")
        if not math.isfinite(A) or A <= 0:
            raise ValueError(f"Rastrigin A must be positive and finite, got {A}")
        self.dim, self.A = dim, float(A)
        self.minima = torch.zeros(1, dim, dtype=torch.float64)
        self.saddle_values = None
        self.bounds = [(-5.12, 5.12)] * dim

    def _value(self, x: torch.Tensor) -> torch.Tensor:
        return self.A * self.dim + (x * x - self.A * torch.cos(2.0 * math.pi * x)).sum(-1)


class MultiWell(Landscape):
    """A sum of Gaussian wells ``f(x) = -sum_i d_i * exp(-|x - c_i|**2 / (2 * w_i**2))``.

    Far from the centres ``f`` tends to 0 from below. For wells farther apart than a few
    widths, the sub-level set ``{f <= c}`` with ``-min_i d_i < c < s`` (``s`` the lowest
    saddle value, close to 0 for separated wells) has one component per well. The
    minimisers are the centres refined by Newton's method (neighbouring wells shift
    them slightly); saddle values have no closed form, so ``saddle_values`` is ``None``.

    Args:
        centers: ``(k, dim)`` well centres.
        depths: ``k`` positive depths ``d_i``.
        widths: ``k`` positive widths ``w_i``.
    """

    name = "multiwell"

    def __init__(
        self,
        centers: Sequence[Sequence[float]] | torch.Tensor,
        depths: Sequence[float] | torch.Tensor,
        widths: Sequence[float] | torch.Tensor,
    ) -> None:
        c = _as_f64(centers, "centers")
        d = _as_f64(depths, "depths").reshape(-1)
        w = _as_f64(widths, "widths").reshape(-1)
        if c.ndim != 2 or c.shape[0] == 0 or c.shape[1] == 0:
            raise ValueError(f"centers must have shape (k, dim), k, dim >= 1; got {tuple(c.shape)}")
        k = c.shape[0]
        if d.numel() != k or w.numel() != k:
            raise ValueError(f"need {k} depths and widths, got {d.numel()} and {w.numel()}")
        if (d <= 0).any() or (w <= 0).any():
            raise ValueError(f"depths and widths must be positive, got {d.tolist()}, {w.tolist()}")
        self.centers, self.depths, self.widths = c, d, w
        self.dim = c.shape[1]
        self.saddle_values = None
        lo = (c - 4.0 * w[:, None]).min(0).values
        hi = (c + 4.0 * w[:, None]).max(0).values
        self.bounds = [(float(a), float(b)) for a, b in zip(lo, hi, strict=True)]
        self.minima = torch.stack([newton_critical_point(self, ci) for ci in c])

    @classmethod
    def default(cls, n_wells: int = 3, seed: int = 0) -> MultiWell:
        """A standard 2-D instance: ``n_wells`` wells on a circle, seeded depths and widths.

        Centres sit on a circle whose radius keeps neighbours at least 4 apart (with
        widths in ``[0.4, 0.6]``, at least ~7 widths), angles jittered by the seed; depths
        are drawn from ``[1, 2]``. So ``{f <= -0.05}`` has exactly ``n_wells`` components.
        """
        if not isinstance(n_wells, int) or n_wells < 1:
            raise ValueError(f"n_wells must be a positive int, got {n_wells!r}")
        rng = np.random.default_rng(seed)
        if n_wells == 1:
            centers = np.zeros((1, 2))
        else:
            radius = max(2.0, 2.0 / math.sin(math.pi / n_wells))
            step = 2 * math.pi / n_wells
            angles = np.arange(n_wells) * step + rng.uniform(-0.1, 0.1, n_wells) * step
            centers = radius * np.stack([np.cos(angles), np.sin(angles)], 1)
        depths = rng.uniform(1.0, 2.0, n_wells)
        widths = rng.uniform(0.4, 0.6, n_wells)
        return cls(centers, depths, widths)

    def _value(self, x: torch.Tensor) -> torch.Tensor:
        c = self.centers.to(dtype=x.dtype, device=x.device)
        d = self.depths.to(dtype=x.dtype, device=x.device)
        w = self.widths.to(dtype=x.dtype, device=x.device)
        sq = ((x[..., None, :] - c) ** 2).sum(-1)  # (..., k)
        return -(d * torch.exp(-sq / (2.0 * w * w))).sum(-1)

    def __repr__(self) -> str:
        return f"MultiWell(k={self.centers.shape[0]}, dim={self.dim})"


def newton_critical_point(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x0: Sequence[float] | torch.Tensor,
    *,
    iters: int = 100,
    tol: float = 1e-12,
) -> torch.Tensor:
    """Find a critical point of ``fn`` near ``x0`` by Newton's method on the gradient.

    Iterates ``x <- x - H(x)^{-1} g(x)`` in float64 until ``|g| < tol``. Newton converges
    to whichever critical point (minimum, saddle, maximum) is nearest in its basin; the
    caller checks which one it got from the Hessian's eigenvalues.

    Args:
        fn: a scalar function of a ``(dim,)`` tensor (e.g. a :class:`Landscape`).
        x0: the starting point.
        iters: maximum number of Newton steps.
        tol: stop when the gradient norm is below this.

    Returns:
        The critical point, float64 of shape ``(dim,)``.

    Raises:
        ValueError: if ``x0`` is not finite or the iteration does not converge.
    """
    x = _as_f64(x0, "x0").reshape(-1)
    grad_fn = torch.func.grad(fn)
    # Reverse-over-reverse: forward-mode AD (torch.func.hessian) is not needed here.
    hess_fn = torch.func.jacrev(grad_fn)
    g = grad_fn(x)
    for _ in range(iters):
        if float(g.norm()) < tol:
            return x
        x = x - torch.linalg.lstsq(hess_fn(x), g[:, None]).solution[:, 0]
        g = grad_fn(x)
    if float(g.norm()) < max(tol, 1e-8):
        return x
    raise ValueError(f"Newton did not converge from {x0}: |grad| = {float(g.norm()):.3g}")


#: names the CLI and helpers accept, with a zero-argument constructor each.
LANDSCAPES: dict[str, Callable[[], Landscape]] = {
    "himmelblau": Himmelblau,
    "multiwell": MultiWell.default,
    "rosenbrock": Rosenbrock,
    "rastrigin": Rastrigin,
    "quadratic": lambda: Quadratic([1.0, 10.0]),
}


def make_landscape(name: str) -> Landscape:
    """Build a standard landscape by name (one of :data:`LANDSCAPES`)."""
    try:
        return LANDSCAPES[name]()
    except KeyError:
        raise ValueError(
            f"unknown landscape {name!r}; valid: {', '.join(sorted(LANDSCAPES))}"
        ) from None
