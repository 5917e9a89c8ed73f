"""Synthetic tasks: ``quadratic``, ``rosenbrock``, ``multiwell``.

The model holds the parameter vector ``theta``; a training "example" is a noise vector
``xi`` and the per-example loss is ``f(theta) - f* + <xi, theta>``, so a mini-batch
gradient is ``grad f(theta)`` plus the batch-mean noise (unbiased, shrinking like
``1/sqrt(B)``). The noise set is centred, so the full training set gives the exact
gradient. The metric is the suboptimality ``f(theta) - f*`` (``higher_is_better=False``),
evaluated without noise on every split.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch

from superlevel.bench import models
from superlevel.bench.task import Batch, Budget, TaskInstance
from superlevel.bench.tasks.assembly import SPLIT_SEED, Builder, assemble, init_model
from superlevel.bench.tasks.registry import TaskSpec, register


class _Landscape(NamedTuple):
    """What a synthetic task differs in: the function, its minimum, the start, extra info."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    f_star: float
    theta0: torch.Tensor
    info: dict[str, Any]


def _gap_mean(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (out - target).mean()


def _gap_sum(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (out - target).detach().sum()


def _synthetic(landscape: Callable[[int, dict[str, Any]], _Landscape]) -> Builder:
    """A builder for a noisy synthetic task on ``landscape(seed, opts)`` (module docstring)."""

    def build(
        spec: TaskSpec,
        seed: int,
        device: torch.device,
        budget: Budget,
        data_dir: str | None,
        opts: dict[str, Any],
    ) -> TaskInstance:
        fn, fstar, theta0, info = landscape(seed, opts)
        noise = opts["noise"]
        dim = theta0.numel()
        n_train = budget.max_train_examples or 1024
        g = torch.Generator().manual_seed(SPLIT_SEED + 17)
        xi = torch.randn(n_train, dim, generator=g)
        xi = noise * (xi - xi.mean(0))  # centred: the full training set gives the exact gradient
        xi = xi.to(device)
        ystar = torch.full((n_train,), float(fstar), device=device)
        exact = (torch.zeros(1, dim, device=device), torch.full((1,), float(fstar), device=device))
        model = init_model(seed, device, lambda: models.LandscapeModel(fn, theta0))

        def eval_batches(split: str) -> Iterator[Batch]:
            if split not in ("train", "val", "test"):
                raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
            return iter([exact])

        info = {**info, "n_train": n_train, "noise": noise, "f_star": float(fstar), "dim": dim}
        return assemble(
            spec,
            seed,
            device,
            budget,
            model=model,
            train=(xi, ystar),
            eval_batches=eval_batches,
            loss_fn=_gap_mean,
            metric_fn=_gap_sum,
            info=info,
        )

    return build


def _seeded_normal(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed + 12_345))


def _quadratic(seed: int, opts: dict[str, Any]) -> _Landscape:
    from superlevel.landscape.synthetic import Quadratic

    dim, cond = opts["dim"], float(opts["condition"])
    # Eigenvalues log-spaced from 1 down to 1/condition: lambda_max / lambda_min = condition.
    eig = torch.logspace(0.0, -math.log10(cond), dim, dtype=torch.float64)
    theta0 = _seeded_normal(seed, (dim,))
    info = {"condition": cond, "eigenvalues": "logspace(1, 1/condition)"}
    return _Landscape(Quadratic(eig), 0.0, theta0, info)


def _rosenbrock(seed: int, opts: dict[str, Any]) -> _Landscape:
    from superlevel.landscape.synthetic import Rosenbrock

    # The classical start (-1.2, 1) jittered by the seed.
    theta0 = torch.tensor([-1.2, 1.0]) + 0.1 * _seeded_normal(seed, (2,))
    return _Landscape(Rosenbrock(), 0.0, theta0, {"a": 1.0, "b": 100.0})


def _multiwell(seed: int, opts: dict[str, Any]) -> _Landscape:
    from superlevel.landscape.synthetic import MultiWell

    fn = MultiWell.default(n_wells=opts["n_wells"], seed=0)
    # Start inside the basin of a seeded well, 1.5 widths from its centre in a seeded
    # direction: the gradient there is sizeable (far from all wells f is flat), and a
    # large step can still jump to another well.
    g = torch.Generator().manual_seed(seed + 54_321)
    k = int(torch.randint(fn.centers.shape[0], (1,), generator=g))
    angle = float(torch.rand(1, generator=g)) * 2 * math.pi
    offset = 1.5 * float(fn.widths[k]) * torch.tensor([math.cos(angle), math.sin(angle)])
    theta0 = fn.centers[k].float() + offset
    info = {"n_wells": opts["n_wells"], "minima": fn.minima.tolist(), "start_well": k}
    return _Landscape(fn, fn.min_value, theta0, info)


for _spec in [
    TaskSpec(
        "quadratic",
        "ill-conditioned quadratic (condition 1e3, dim 50) with additive gradient noise",
        {"quick": Budget(32, 20, target=5e-2), "full": Budget(32, 200, target=1e-3)},
        {"dim": 50, "condition": 1000.0, "noise": 1.0},
        None,
        _synthetic(_quadratic),
        metric_name="suboptimality",
        higher_is_better=False,
    ),
    TaskSpec(
        "rosenbrock",
        "2-D Rosenbrock valley from (-1.2, 1) with additive gradient noise",
        {"quick": Budget(16, 30, target=1e-2), "full": Budget(16, 300, target=1e-4)},
        {"noise": 1.0},
        None,
        _synthetic(_rosenbrock),
        metric_name="suboptimality",
        higher_is_better=False,
    ),
    TaskSpec(
        "multiwell",
        "2-D sum of Gaussian wells with disconnected sub-level sets, noisy gradients",
        {"quick": Budget(16, 20, target=1e-2), "full": Budget(16, 200, target=1e-4)},
        {"n_wells": 3, "noise": 0.1},
        None,
        _synthetic(_multiwell),
        metric_name="suboptimality",
        higher_is_better=False,
    ),
]:
    register(_spec)
del _spec
