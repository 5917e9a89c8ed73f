"""Statistics against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from superlevel.bench.stats import bootstrap_ci, mean_std, performance_profile


def test_mean_std_is_the_sample_std() -> None:
    m, s = mean_std([1.0, 2.0, 3.0, 6.0])
    assert m == 3.0
    assert s == pytest.approx(math.sqrt((4 + 1 + 0 + 9) / 3))
    assert mean_std([5.0]) == (5.0, 0.0)
    with pytest.raises(ValueError, match="at least one"):
        mean_std([])
    with pytest.raises(ValueError, match="finite"):
        mean_std([1.0, float("nan")])


def test_bootstrap_ci_brackets_the_mean_and_is_reproducible() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(10.0, 2.0, size=40).tolist()
    lo, hi = bootstrap_ci(values, seed=3)
    assert lo < np.mean(values) < hi
    # Normal theory: half-width ~ 1.96 * s / sqrt(n); the percentile bootstrap agrees closely.
    half = 1.96 * np.std(values, ddof=1) / math.sqrt(40)
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.15)
    assert bootstrap_ci(values, seed=3) == (lo, hi)
    lo90, hi90 = bootstrap_ci(values, level=0.9, seed=3)
    assert lo < lo90 < hi90 < hi


def test_bootstrap_ci_edge_cases() -> None:
    assert bootstrap_ci([0.7]) == (0.7, 0.7)
    lo, hi = bootstrap_ci([1.0, 3.0])
    assert 1.0 <= lo <= 2.0 <= hi <= 3.0  # means of resamples of {1, 3} lie in {1, 2, 3}
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1.0, 2.0], level=1.0)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci([1.0, 2.0], n_boot=0)


def test_performance_profile_hand_example() -> None:
    costs = {
        "t1": {"a": 100.0, "b": 200.0},
        "t2": {"a": math.inf, "b": 50.0},
        "t3": {"a": 30.0, "b": 30.0},
        "t4": {"a": math.inf, "b": math.inf},  # unsolved by all: a failure for everyone
    }
    taus = [1.0, 1.5, 2.0, 10.0]
    prof = performance_profile(costs, taus)
    # a: ratios t1=1, t3=1 -> 2/4 at every tau.  b: t2=1, t3=1 at tau 1; t1=2 joins at tau 2.
    np.testing.assert_allclose(prof["a"], [0.5, 0.5, 0.5, 0.5])
    np.testing.assert_allclose(prof["b"], [0.5, 0.5, 0.75, 0.75])


def test_performance_profile_missing_optimizer_and_bad_input() -> None:
    prof = performance_profile({"t1": {"a": 1.0}, "t2": {"a": 2.0, "b": 1.0}}, [1.0, 4.0])
    np.testing.assert_allclose(prof["b"], [0.5, 0.5])  # absent on t1 = failure there
    np.testing.assert_allclose(prof["a"], [0.5, 1.0])
    with pytest.raises(ValueError, match="> 0"):
        performance_profile({"t": {"a": 0.0}}, [1.0])
    with pytest.raises(ValueError, match="taus"):
        performance_profile({"t": {"a": 1.0}}, [0.5])
