"""The one statistics module: intervals, paired comparisons with Holm and TOST, profiles.

Every comparison in the report and the study goes through :func:`compare_family`:

1. **Paired differences** ``d_i = a_i - b_i`` over the matched seeds ``i = 1..n`` (the
   same seed gives both optimizers the same initialisation and data order), with a
   Student-t interval, ``df = n - 1``: with the 3-10 seeds a comparison has, a percentile
   bootstrap cannot be wider than the data's range and understates the uncertainty.
2. **Holm's correction** over the stated family of comparisons (all comparisons of one
   table): the difference tests are adjusted together, and so are the equivalence tests.
3. **Equivalence** by two one-sided t-tests (TOST) against a stated margin ``m`` in the
   metric's units: equivalent when both ``H0: delta <= -m`` and ``H0: delta >= m`` are
   rejected, i.e. the ``1 - 2 alpha`` interval lies inside ``(-m, m)``.
4. **The minimal detectable difference** at the comparison's ``n`` and spread: what it
   could have seen, at power 0.8.

A comparison reads ``higher``, ``lower``, ``equivalent within m`` or ``inconclusive
(could detect >= d)``: never "no difference" from an interval that merely contains 0.

scipy gives the t distribution and the one-sample tests; Holm's step-down is ten lines
here because scipy has no family-wise correction (only the false discovery rate) and
statsmodels would be a dependency for that alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

ROUNDING = 16 * float(np.finfo(float).eps)  # relative spread that is float rounding
ALPHA = 0.05
POWER = 0.8
VERDICTS = ("higher", "lower", "equivalent", "inconclusive")


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


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean: ``mean +- t_{(1+level)/2, n-1} * s / sqrt(n)``.

    One value (or no spread) gives the point itself.
    """
    from scipy import stats

    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    arr = _finite_array(values)
    mean = float(arr.mean())
    if arr.size == 1:
        return mean, mean
    half = float(stats.t.ppf((1 + level) / 2, arr.size - 1)) * float(arr.std(ddof=1))
    half /= math.sqrt(arr.size)
    return mean - half, mean + half


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control).

    Sort ``p_(1) <= ... <= p_(m)``; ``adj_(k) = max_{j <= k} min(1, (m - j + 1) p_(j))``,
    returned in the input order. Rejecting where ``adj < alpha`` controls the chance of
    any false rejection in the family at ``alpha``.
    """
    p = np.asarray(pvalues, dtype=float)
    if p.size and (np.any(np.isnan(p)) or np.any(p < 0) or np.any(p > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p.tolist()}")
    order = np.argsort(p, kind="stable")
    m = p.size
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


@dataclass(frozen=True)
class Paired:
    """The paired differences ``d_i = a_i - b_i`` and their tests (before any correction).

    Attributes:
        n: pairs.
        mean: ``mean(d)``.
        sd: sample standard deviation of ``d``.
        low, high: the ``level`` t interval of ``mean(d)``.
        p: two-sided p-value of ``H0: delta = 0`` (paired t-test).
        p_equivalent: TOST p-value of ``H0: |delta| >= margin`` (the larger one-sided p).
        margin: the equivalence margin ``m``.
    """

    n: int
    mean: float
    sd: float
    low: float
    high: float
    p: float
    p_equivalent: float
    margin: float

    def text(self, digits: int = 3) -> str:
        """``+0.12 [+0.05, +0.19]``."""
        return f"{self.mean:+.{digits}g} [{self.low:+.{digits}g}, {self.high:+.{digits}g}]"


def paired(a: Sequence[float], b: Sequence[float], *, margin: float,
           level: float = 0.95) -> Paired:  # fmt: skip
    """The paired t interval and tests of ``a - b``.

    With ``se = sd / sqrt(n)`` and ``T`` the t distribution with ``n - 1`` degrees of
    freedom: interval ``mean +- T^{-1}((1+level)/2) se``; ``p = 2 (1 - T(|mean| / se))``;
    TOST ``p_equivalent = max(1 - T((mean + m) / se), T((mean - m) / se))``. Identical
    differences (``sd = 0``, or ``sd <= 16 eps max|d|``: equal up to float rounding) decide
    exactly: ``p`` is 0 unless the mean is 0, and ``p_equivalent`` is 0 when
    ``|mean| < m``, else 1.

    Raises:
        ValueError: lengths differ, fewer than two pairs, a value not finite, or
            ``margin <= 0``.
    """
    from scipy import stats

    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"need >= 2 pairs of equal length, got {len(a)} and {len(b)}")
    if not margin > 0:
        raise ValueError(f"margin must be > 0, got {margin!r}")
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if not np.all(np.isfinite(d)):
        raise ValueError(f"paired values must be finite, got differences {d.tolist()}")
    n, mean, sd = int(d.size), float(d.mean()), float(d.std(ddof=1))
    # A spread at the level of float rounding (0.3 - 0.2 against 0.7 - 0.6) is no spread:
    # the t statistic would only measure the rounding.
    if sd <= ROUNDING * float(np.abs(d).max()):
        p = 1.0 if mean == 0.0 else 0.0
        return Paired(n, mean, 0.0, mean, mean, p, 0.0 if abs(mean) < margin else 1.0, margin)
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n)
    p = float(stats.ttest_1samp(d, 0.0).pvalue)
    p_low = float(stats.ttest_1samp(d, -margin, alternative="greater").pvalue)
    p_high = float(stats.ttest_1samp(d, margin, alternative="less").pvalue)
    return Paired(n, mean, sd, mean - half, mean + half, p, max(p_low, p_high), margin)


def detectable_difference(sd: float, n: int, *, alpha: float = ALPHA,
                          power: float = POWER) -> float:  # fmt: skip
    """The smallest true mean difference ``delta`` that a two-sided paired t-test at level
    ``alpha`` detects with probability ``power``, for ``n`` pairs of spread ``sd``.

    Exact, from the noncentral t distribution ``T' = (Z + lambda) / sqrt(V / k)`` (``Z``
    standard normal, ``V`` chi-square with ``k = n - 1`` degrees of freedom): with
    ``c = t_{1-alpha/2, k}`` and ``lambda = delta sqrt(n) / sd``, solve
    ``P(|T'| > c) = E_V[Phi(lambda - c sqrt(V/k)) + Phi(-lambda - c sqrt(V/k))] = power``
    for ``lambda`` (scipy's ``nct``; where it returns NaN, at ``k = 1``, the expectation
    by quadrature).
    """
    if n < 2:
        raise ValueError(f"need n >= 2, got {n}")
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"need alpha and power in (0, 1), got {alpha}, {power}")
    return _unit_noncentrality(n, alpha, power) * sd / math.sqrt(n)


@cache
def _unit_noncentrality(n: int, alpha: float, power: float) -> float:
    """The ``lambda`` of :func:`detectable_difference` (it does not depend on ``sd``)."""
    from scipy import integrate, optimize, stats

    df = n - 1
    c = float(stats.t.ppf(1 - alpha / 2, df))

    def shortfall(ncp: float) -> float:
        exact = float(stats.nct.sf(c, df, ncp) + stats.nct.cdf(-c, df, ncp))
        if math.isfinite(exact):
            return exact - power

        def integrand(v: float) -> float:
            s = c * math.sqrt(v / df)
            return float(stats.norm.cdf(ncp - s) + stats.norm.cdf(-ncp - s)) * float(
                stats.chi2.pdf(v, df)
            )

        return integrate.quad(integrand, 0.0, math.inf, limit=200)[0] - power

    hi = 1.0
    while shortfall(hi) < 0:  # the power grows with the noncentrality: bracket the root
        hi *= 2
    return float(optimize.brentq(shortfall, 0.0, hi, xtol=1e-10))


@dataclass(frozen=True)
class Comparison:
    """One comparison of a family, after Holm's correction.

    Attributes:
        paired: the uncorrected numbers.
        p_adjusted: Holm-adjusted p of the difference test.
        p_equivalent_adjusted: Holm-adjusted TOST p.
        detectable: the minimal detectable difference at level ``alpha / family size``
            (the strictest step of Holm's ladder), power 0.8.
        verdict: ``higher`` / ``lower`` (``a`` above / below ``b``), ``equivalent``
            (within the margin) or ``inconclusive``.
    """

    paired: Paired
    p_adjusted: float
    p_equivalent_adjusted: float
    detectable: float
    verdict: str

    def text(self, digits: int = 3) -> str:
        """The verdict in words, e.g. ``lower`` or ``inconclusive (could detect >= 1.2)``."""
        if self.verdict == "equivalent":
            return f"equivalent within {self.paired.margin:.{digits}g}"
        if self.verdict == "inconclusive":
            return f"inconclusive (could detect >= {self.detectable:.{digits}g})"
        within = self.p_equivalent_adjusted < ALPHA
        return self.verdict + (f" (by less than {self.paired.margin:.{digits}g})" if within else "")


def compare_family(
    pairs: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    margin: float | Mapping[str, float],
    alpha: float = ALPHA,
) -> dict[str, Comparison]:
    """Compare every ``(a, b)`` of a stated family, with Holm's correction over it.

    Verdict of each: ``higher``/``lower`` when the Holm-adjusted difference test rejects
    at ``alpha``; otherwise ``equivalent`` when the Holm-adjusted TOST rejects at
    ``alpha``; otherwise ``inconclusive``, with the difference it could have detected.

    Args:
        pairs: ``{name: (a values, b values)}``, matched by position (seed).
        margin: the equivalence margin, in the metric's units: one for all, or one per
            comparison (a family may span metrics; Holm works on the p-values).
        alpha: the family-wise error rate.
    """
    margins = margin if isinstance(margin, Mapping) else dict.fromkeys(pairs, margin)
    tests = {name: paired(a, b, margin=margins[name]) for name, (a, b) in pairs.items()}
    names = list(tests)
    p_adj = holm([tests[k].p for k in names])
    q_adj = holm([tests[k].p_equivalent for k in names])
    out = {}
    for name, p, q in zip(names, p_adj, q_adj, strict=True):
        t = tests[name]
        if p < alpha:
            verdict = "higher" if t.mean > 0 else "lower"
        elif q < alpha:
            verdict = "equivalent"
        else:
            verdict = "inconclusive"
        mdd = detectable_difference(t.sd, t.n, alpha=alpha / max(1, len(names)))
        out[name] = Comparison(t, p, q, mdd, verdict)
    return out


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
