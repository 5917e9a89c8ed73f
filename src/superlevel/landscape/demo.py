"""The paper's experiment 2 in miniature: do trajectories stay in one level-set component?

On a 2-D landscape with known disconnected sub-level components (Himmelblau below its
lowest saddle, or separated Gaussian wells), run several optimizers from the same
seeded start and, for each step, ask whether it *jumped* a barrier (its ends lie in
different components of ``{f <= max(f(a), f(b))}``) and whether the iterate switched
component at a fixed reference level. Plain gradient descent runs at a *large* step:
by default a factor (1.05 on Himmelblau, 2.5 on the wells) times the largest
``2 / lambda_max`` over the minima, so GD is unstable at every minimum.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from superlevel.landscape.components import (
    Grid,
    TrajectoryConnectivity,
    grid_values,
    trajectory_connectivity,
)
from superlevel.landscape.synthetic import Himmelblau, Landscape, MultiWell

__all__ = [
    "DEMO_FUNCTIONS",
    "OPTIMIZERS",
    "DemoResult",
    "gd_unstable_lr",
    "run_optimizer",
    "run_demo",
    "format_report",
    "plot_demo",
    "parse_lrs",
]

OPTIMIZERS = ("gd", "momentum", "adam", "superlevel")


@dataclass(frozen=True)
class _FunctionSpec:
    make: Callable[[], Landscape]
    ref_level: Callable[[Landscape], float]
    #: default lr per optimizer; ``None`` means ``gd_unstable_lr(f, gd_factor)``
    lrs: dict[str, float | None]
    gd_factor: float


DEMO_FUNCTIONS: dict[str, _FunctionSpec] = {
    # 0.9 x the lowest saddle: the four minima's components are still apart.
    "himmelblau": _FunctionSpec(
        Himmelblau,
        lambda f: 0.9 * f.saddle_values[0],
        {"gd": None, "momentum": None, "adam": 0.1, "superlevel": 0.5},
        1.05,
    ),
    # 5% of the shallowest depth: one component per (well separated) well. Gaussian wells
    # flatten away from the centre, so GD just above 2 / lambda_max only rocks inside its
    # well; 2.5x that is needed to throw it out.
    "multiwell": _FunctionSpec(
        MultiWell.default,
        lambda f: -0.05 * float(f.depths.min()),
        {"gd": None, "momentum": None, "adam": 0.1, "superlevel": 1.0},
        2.5,
    ),
}


def gd_unstable_lr(fn: Landscape, factor: float = 1.05) -> float:
    """``factor * max_i 2 / lambda_max(H(m_i))`` over the minima ``m_i`` of ``fn``.

    Gradient descent with ``lr > 2 / lambda_max`` cannot converge to that minimum, so
    with ``factor > 1`` plain GD is unstable at every listed minimum.
    """
    lam = [
        float(torch.linalg.eigvalsh(torch.func.jacrev(torch.func.grad(fn))(m)).max())
        for m in fn.minima
    ]
    return factor * max(2.0 / v for v in lam)


def _known_names(names: Sequence[str]) -> list[str]:
    """The stripped, non-empty ``names``; ``ValueError`` if one is unknown or none is left."""
    names = [n.strip() for n in names if n.strip()]
    bad = [n for n in names if n not in OPTIMIZERS]
    if bad or not names:
        raise ValueError(
            f"unknown optimizer(s) {', '.join(map(repr, bad)) or '(none given)'}; "
            f"valid: {', '.join(OPTIMIZERS)}"
        )
    return names


def _check_names(names: Sequence[str]) -> list[str]:
    names = _known_names(names)
    if len(set(names)) != len(names):
        raise ValueError(f"optimizers repeated: {names}")
    return names


def _make_optimizer(name: str, params: list[torch.Tensor], lr: float, decay: float):
    if name == "gd":
        return torch.optim.SGD(params, lr=lr)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    from superlevel.optim import SuperLevelSGD

    return SuperLevelSGD(params, lr=lr, decay=decay)


def run_optimizer(
    fn: Landscape,
    start: torch.Tensor,
    name: str,
    lr: float,
    steps: int,
    *,
    decay: float = 0.0,
    escape: float = 1e6,
) -> tuple[torch.Tensor, bool]:
    """Minimise ``fn`` from ``start`` with optimizer ``name``; returns the iterates.

    Stops early when an iterate is not finite or leaves the ball of radius ``escape``
    (divergence). ``decay`` is ``beta`` of SuperLevelSGD's ``exp(-beta t)``.

    Returns:
        ``(points, diverged)``: float64 iterates ``(steps_run + 1, dim)`` (finite ones
        only) and whether the run diverged.
    """
    _check_names([name])
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr} for {name}")
    x = start.detach().to(torch.float64).clone().requires_grad_(True)
    opt = _make_optimizer(name, [x], lr, decay)
    points = [x.detach().clone()]
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        fn(x).backward()
        opt.step()
        new = x.detach().clone()
        if not torch.isfinite(new).all() or float(new.abs().max()) > escape:
            return torch.stack(points), True
        points.append(new)
    return torch.stack(points), False


@dataclass
class DemoResult:
    """Everything the demo computed (see :func:`run_demo`)."""

    function: str
    landscape: Landscape
    start: torch.Tensor
    grid: Grid
    ref_level: float
    lrs: dict[str, float]
    decay: float
    trajectories: dict[str, torch.Tensor] = field(default_factory=dict)
    reports: dict[str, TrajectoryConnectivity] = field(default_factory=dict)
    diverged: dict[str, bool] = field(default_factory=dict)


def parse_lrs(spec: str | float | None, names: Sequence[str]) -> dict[str, float | None]:
    """Parse ``"0.03"`` (all optimizers) or ``"gd=0.03,superlevel=0.5"`` (per optimizer)."""
    out: dict[str, float | None] = dict.fromkeys(names)
    if spec is None or spec == "":
        return out
    if isinstance(spec, (int, float)):
        return dict.fromkeys(names, float(spec))
    for part in str(spec).split(","):
        key, sep, value = part.partition("=")
        try:
            if sep:
                _check_names([key])
                if key.strip() not in out:
                    raise ValueError(f"lr given for {key.strip()!r}, which is not being run")
                out[key.strip()] = float(value)
            else:
                out = dict.fromkeys(names, float(key))
        except ValueError as exc:
            raise ValueError(f"bad lr spec {spec!r}: {exc}") from None
    for k, v in out.items():
        if v is not None and not (v > 0 and math.isfinite(v)):
            raise ValueError(f"lr for {k} must be positive and finite, got {v}")
    return out


def run_demo(
    function: str = "himmelblau",
    optimizers: Sequence[str] = ("gd", "superlevel"),
    *,
    steps: int = 100,
    lr: str | float | None = None,
    decay: float = 0.02,
    seed: int = 0,
    start: Sequence[float] | None = None,
    resolution: int = 301,
) -> DemoResult:
    """Run the optimizers from one start and measure each trajectory's connectivity.

    Args:
        function: one of :data:`DEMO_FUNCTIONS`.
        optimizers: names from :data:`OPTIMIZERS`.
        steps: steps per optimizer.
        lr: one lr for all, ``"name=lr,..."``, or ``None`` for the defaults (GD and
            momentum: :func:`gd_unstable_lr`; see ``DEMO_FUNCTIONS`` for the others).
        decay: ``beta`` of SuperLevelSGD.
        seed: draws the start uniformly from the middle 70% of the function's box.
        start: an explicit start instead.
        resolution: grid points per axis for the components.

    Returns:
        A :class:`DemoResult`.
    """
    if function not in DEMO_FUNCTIONS:
        raise ValueError(f"unknown function {function!r}; valid: {', '.join(DEMO_FUNCTIONS)}")
    names = _check_names(list(optimizers))
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not (decay >= 0 and math.isfinite(decay)):
        raise ValueError(f"decay must be >= 0 and finite, got {decay}")
    spec = DEMO_FUNCTIONS[function]
    fn = spec.make()
    lo = torch.tensor([b[0] for b in fn.bounds], dtype=torch.float64)
    hi = torch.tensor([b[1] for b in fn.bounds], dtype=torch.float64)
    if start is None:
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        x0 = lo + (hi - lo) * (0.15 + 0.7 * torch.rand(fn.dim, generator=gen, dtype=torch.float64))
    else:
        x0 = torch.as_tensor(start, dtype=torch.float64).reshape(-1)
        if x0.numel() != fn.dim or not torch.isfinite(x0).all():
            raise ValueError(f"start must be {fn.dim} finite numbers, got {list(start)}")
    given = parse_lrs(lr, names)
    unstable = None
    lrs: dict[str, float] = {}
    for name in names:
        value = given[name] if given[name] is not None else spec.lrs[name]
        if value is None:
            unstable = gd_unstable_lr(fn, spec.gd_factor) if unstable is None else unstable
            value = unstable
        lrs[name] = float(value)
    grid = grid_values(fn, fn.bounds, resolution)
    ref = float(spec.ref_level(fn))
    result = DemoResult(function, fn, x0, grid, ref, lrs, decay)
    for name in names:
        pts, div = run_optimizer(fn, x0, name, lrs[name], steps, decay=decay)
        result.trajectories[name] = pts
        result.diverged[name] = div
        result.reports[name] = trajectory_connectivity(pts, fn, "sub", grid, ref_level=ref)
    return result


def format_report(result: DemoResult) -> str:
    """A plain-text table: per optimizer, jumps, switches, final loss."""
    x0 = ", ".join(f"{v:.3f}" for v in result.start.tolist())
    lines = [
        f"function {result.function}: start ({x0}), components at f <= {result.ref_level:.4g}",
        f"{'optimizer':<11}{'lr':>9}{'steps':>7}{'jumps':>7}{'uphill':>8}{'switches':>10}"
        f"{'outside':>9}{'final loss':>14}  final point",
    ]
    for name, rep in result.reports.items():
        s = rep.summary()
        end = ", ".join(f"{v:.4f}" for v in result.trajectories[name][-1].tolist())
        note = "  DIVERGED" if result.diverged[name] else ""
        lines.append(
            f"{name:<11}{result.lrs[name]:>9.4g}{s['steps']:>7}{s['jumps']:>7}"
            f"{s['uphill_segments']:>8}{s['component_switches']:>10}{s['unknown']:>9}"
            f"{s['final_loss']:>14.4g}  ({end}){note}"
        )
    lines.append(
        "jumps: steps whose ends lie in different components of {f <= max(f(a), f(b))}; "
        "uphill: straight segment rises above both ends; switches: changes of component "
        "at the reference level; outside: steps with an end outside the grid."
    )
    return "\n".join(lines)


def plot_demo(result: DemoResult, path: str | Path | None = None):
    """The components picture with every trajectory; saved to ``path`` when given."""
    from superlevel.landscape.plots import plot_components, save_figure

    title = (
        f"{result.function}: components of {{f <= {result.ref_level:.3g}}}, "
        f"{len(next(iter(result.trajectories.values()))) - 1} steps"
    )
    labels = {f"{n} (lr {result.lrs[n]:.3g})": t for n, t in result.trajectories.items()}
    reports = {f"{n} (lr {result.lrs[n]:.3g})": r for n, r in result.reports.items()}
    fig = plot_components(
        result.grid,
        result.ref_level,
        trajectories=labels,
        reports=reports,
        minima=result.landscape.minima,
        title=title,
        contours=12,
        figsize=(5.4, 4.6),
    )
    if path is not None:
        save_figure(fig, path, dpi=80)
    return fig
