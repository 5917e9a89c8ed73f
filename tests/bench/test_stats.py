"""Statistics against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from superlevel.bench.stats import (
    compare_family,
    detectable_difference,
    holm,
    mean_std,
    paired,
    performance_profile,
    t_interval,
)


def test_mean_std_is_the_sample_std() -> None:
    m, s = mean_std([1.0, 2.0, 3.0, 6.0])
    assert m == 3.0
    assert s == pytest.approx(math.sqrt((4 + 1 + 0 + 9) / 3))
    assert mean_std([5.0]) == (5.0, 0.0)
    with pytest.raises(ValueError, match="at least one"):
        mean_std([])
    with pytest.raises(ValueError, match="finite"):
        mean_std([1.0, float("nan")])


def test_t_interval_is_the_student_interval_of_the_mean() -> None:
    from scipy import stats

    x = [1.0, 2.0, 4.0, 7.0]
    lo, hi = t_interval(x)
    half = stats.t.ppf(0.975, 3) * np.std(x, ddof=1) / 2.0  # sqrt(4) = 2
    assert (lo, hi) == pytest.approx((3.5 - half, 3.5 + half), rel=1e-12)
    assert half == pytest.approx(3.182446305284263 * 2.6457513110645907 / 2, rel=1e-12)
    assert t_interval([0.7]) == (0.7, 0.7)
    with pytest.raises(ValueError, match="level"):
        t_interval(x, level=1.0)


def test_holm_hand_example() -> None:
    # p sorted: 0.01 (x3), 0.02 (x2 -> 0.04), 0.04 (x1 -> 0.04, monotone): Holm's ladder.
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.001]) == [0.001] and holm([]) == []
    with pytest.raises(ValueError, match="p-values"):
        holm([0.1, float("nan")])


def test_paired_matches_scipy_and_the_hand_tost() -> None:
    from scipy import stats

    a = [0.91, 0.93, 0.90, 0.95, 0.92]
    b = [0.90, 0.90, 0.91, 0.92, 0.90]
    d = np.subtract(a, b)
    t = paired(a, b, margin=0.005)
    assert t.n == 5 and t.mean == pytest.approx(d.mean()) and t.sd == pytest.approx(d.std(ddof=1))
    assert t.p == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-12)
    se = d.std(ddof=1) / math.sqrt(5)
    p_low = 1 - stats.t.cdf((d.mean() + 0.005) / se, 4)  # H0: delta <= -m
    p_high = stats.t.cdf((d.mean() - 0.005) / se, 4)  # H0: delta >= m
    assert t.p_equivalent == pytest.approx(max(p_low, p_high), rel=1e-10)
    half = stats.t.ppf(0.975, 4) * se
    assert (t.low, t.high) == pytest.approx((d.mean() - half, d.mean() + half))
    # Identical differences decide exactly.
    same = paired([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], margin=0.1)
    assert same.p == 1.0 and same.p_equivalent == 0.0 and same.low == same.high == 0.0
    shifted = paired([1.5, 2.5], [1.0, 2.0], margin=0.1)
    assert shifted.p == 0.0 and shifted.p_equivalent == 1.0
    with pytest.raises(ValueError, match="pairs"):
        paired([1.0], [2.0], margin=0.1)
    with pytest.raises(ValueError, match="margin"):
        paired([1.0, 2.0], [2.0, 1.0], margin=0.0)


@pytest.mark.parametrize(("n", "alpha"), [(2, 0.05), (3, 0.05), (5, 0.05 / 8), (10, 0.05)])
def test_detectable_difference_has_the_stated_power(n: int, alpha: float) -> None:
    from scipy import stats

    mdd = detectable_difference(2.0, n, alpha=alpha)
    # The power of the t-test at that true difference, by simulation: 0.8.
    rng = np.random.default_rng(0)
    d = rng.normal(mdd, 2.0, size=(40_000, n))
    t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / math.sqrt(n))
    power = np.mean(np.abs(t) > stats.t.ppf(1 - alpha / 2, n - 1))
    assert power == pytest.approx(0.8, abs=0.01)
    assert detectable_difference(4.0, n, alpha=alpha) == pytest.approx(2 * mdd)


def test_compare_family_words_each_case() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(0.9, 0.01, size=8)
    family = {
        "clearly higher": (base + 0.05 + rng.normal(0, 0.002, 8), base),
        "equivalent": (base + rng.normal(0, 0.0005, 8), base),
        "too noisy": (base + rng.normal(0, 0.05, 8), base),
    }
    out = compare_family(family, margin=0.005)
    assert out["clearly higher"].verdict == "higher"
    assert out["equivalent"].verdict == "equivalent"
    assert out["equivalent"].text() == "equivalent within 0.005"
    noisy = out["too noisy"]
    assert noisy.verdict == "inconclusive" and noisy.text().startswith("inconclusive (could detect")
    assert noisy.detectable > 0.005  # it could not have seen a difference the size of m
    # Holm: the adjusted p is at least the raw one, and the family size matters.
    alone = compare_family({"too noisy": family["too noisy"]}, margin=0.005)["too noisy"]
    assert noisy.p_adjusted >= alone.p_adjusted and noisy.detectable > alone.detectable


def test_a_family_where_the_raw_p_passes_but_holm_does_not() -> None:
    # Raw p ~ 0.02 each: significant alone, not after Holm over 4 (needs <= 0.0125 first).
    d = np.array([0.1, 0.4, 0.3, 0.55, 0.05, 0.2])
    a, b = list(d), [0.0] * 6
    from scipy import stats

    raw = stats.ttest_1samp(d, 0).pvalue
    assert 0.0125 < raw < 0.05
    family = {f"c{i}": (a, b) for i in range(4)}
    out = compare_family(family, margin=0.01)
    assert all(c.verdict != "higher" for c in out.values())
    assert compare_family({"c0": (a, b)}, margin=0.01)["c0"].verdict == "higher"


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


def test_differences_equal_up_to_float_rounding_decide_exactly() -> None:
    # 0.3 - 0.2, 0.7 - 0.6 and 1.1 - 1.0 differ only in their last bits: no spread to test.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy warns of catastrophic cancellation otherwise
        r = paired([0.3, 0.7, 1.1], [0.2, 0.6, 1.0], margin=0.5)
    assert r.sd == 0.0 and r.low == r.high == pytest.approx(0.1)
    assert r.p == 0.0 and r.p_equivalent == 0.0
    assert paired([0.3, 0.7, 1.1], [0.2, 0.6, 1.0], margin=0.05).p_equivalent == 1.0
