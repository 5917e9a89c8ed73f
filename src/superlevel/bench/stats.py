"""Statistics for the report: mean ± std, bootstrap confidence intervals, performance profiles.

All functions are pure (numpy in, numbers out) so they can be tested against hand
computations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def _finite_array(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    if arr.size == 0:
        raise ValueError("need at least one value")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"values must be finite, got {arr.tolist()}")
    return arr


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation ``sqrt(sum (x - mean)^2 / (n - 1))`` (0 for n = 1)."""
    arr = _finite_array(values)
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return float(arr.mean()), std


def bootstrap_ci(
    values: Sequence[float], *, level: float = 0.95, n_boot: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean.

    Draw ``n_boot`` resamples of size ``n`` with replacement, take each resample's mean
    ``m_b``, and return the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of
    ``{m_b}``. With one value the interval is that value. With few seeds the interval is
    narrow by construction (it cannot exceed the range of the data): read it together with
    the number of seeds.

    Args:
        values: per-seed results (finite).
        level: coverage, in (0, 1).
        n_boot: number of resamples (>= 1).
        seed: seed of the resampling generator (the report is reproducible).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    arr = _finite_array(values)
    if arr.size == 1:
        return float(arr[0]), float(arr[0])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, arr.size, size=(n_boot, arr.size))
    means = arr[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def performance_profile(
    costs: Mapping[str, Mapping[str, float]], taus: Sequence[float]
) -> dict[str, np.ndarray]:
    """AlgoPerf/Dolan-Moré performance profile.

    For task ``p`` and optimizer ``s`` with cost ``t[p, s]`` (e.g. steps to the target;
    ``inf`` when never reached), the ratio is ``r[p, s] = t[p, s] / min_s t[p, s]`` and the
    profile is ``rho_s(tau) = |{p : r[p, s] <= tau}| / |P|``: the fraction of tasks on which
    ``s`` is within a factor ``tau`` of the best. Tasks no optimizer solved count as
    failures for all. An optimizer missing on a task counts as a failure there.

    Args:
        costs: ``costs[task][optimizer]`` (positive; ``inf`` or ``nan`` = not reached).
        taus: the ``tau`` values (>= 1) at which to evaluate the profile.

    Returns:
        ``{optimizer: array of rho(tau) for tau in taus}``.
    """
    if not costs:
        raise ValueError("need costs for at least one task")
    optimizers = sorted({s for row in costs.values() for s in row})
    tau = np.asarray(taus, dtype=float)
    if np.any(tau < 1):
        raise ValueError(f"taus must be >= 1, got {list(taus)}")
    hits = {s: np.zeros_like(tau) for s in optimizers}
    for task, row in costs.items():
        vals = {s: float(row.get(s, math.inf)) for s in optimizers}
        for s, v in vals.items():
            if not (v > 0 or math.isinf(v) or math.isnan(v)):
                raise ValueError(f"cost of {s!r} on {task!r} must be > 0, got {v}")
        finite = [v for v in vals.values() if math.isfinite(v)]
        if not finite:
            continue
        best = min(finite)
        for s, v in vals.items():
            if math.isfinite(v):
                hits[s] += (v / best) <= tau
    return {s: h / len(costs) for s, h in hits.items()}
