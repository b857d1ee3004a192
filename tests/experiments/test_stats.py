"""The statistics against scipy (and closed forms) on known data, the SRM check, and the Laplace noise scale."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from upcoach.experiments.stats import (
    LaplaceMechanism,
    compare_means,
    compare_rates,
    mean_summary,
    rate_summary,
    sample_ratio_check,
)


@pytest.mark.parametrize(("successes", "n"), [(0, 40), (7, 40), (120, 1000), (999, 1000)])
def test_wilson_interval_matches_scipy(successes: int, n: int) -> None:
    summary = rate_summary(successes, n)
    expected = stats.binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert summary.rate == successes / n
    assert summary.ci == pytest.approx((expected.low, expected.high), abs=1e-12)


def test_two_proportion_test_matches_a_2x2_chi_square() -> None:
    control, treatment = rate_summary(120, 1000), rate_summary(160, 1000)
    result = compare_rates(control, treatment)
    table = [[120, 880], [160, 840]]
    chi2, p_value, _, _ = stats.chi2_contingency(table, correction=False)
    assert result.p_value == pytest.approx(p_value, rel=1e-9)
    assert result.statistic == pytest.approx(math.sqrt(chi2), rel=1e-9)
    assert result.significant
    # The difference interval: unpooled Wald, written out here independently.
    se = math.sqrt(0.12 * 0.88 / 1000 + 0.16 * 0.84 / 1000)
    z = stats.norm.ppf(0.975)
    assert result.difference == pytest.approx(0.04)
    assert result.ci == pytest.approx((0.04 - z * se, 0.04 + z * se))


def test_no_difference_is_not_significant() -> None:
    result = compare_rates(rate_summary(100, 1000), rate_summary(104, 1000))
    assert result.p_value is not None and result.p_value > 0.5 and not result.significant


def test_means_match_scipy_welch_and_t_interval() -> None:
    rng = np.random.default_rng(7)
    control = rng.normal(3.6, 0.9, 80)
    treatment = rng.normal(4.1, 1.4, 65)
    a, b = mean_summary(control), mean_summary(treatment)
    interval = stats.t.interval(0.95, len(control) - 1, loc=control.mean(), scale=stats.sem(control))
    assert a.mean == pytest.approx(control.mean()) and a.std == pytest.approx(control.std(ddof=1))
    assert a.ci == pytest.approx(interval)
    result = compare_means(a, b)
    welch = stats.ttest_ind(treatment, control, equal_var=False)
    assert result.statistic == pytest.approx(welch.statistic, rel=1e-9)
    assert result.p_value == pytest.approx(welch.pvalue, rel=1e-9)
    expected_ci = welch.confidence_interval(0.95)
    assert result.ci == pytest.approx((expected_ci.low, expected_ci.high), rel=1e-9)


def test_sample_ratio_mismatch_is_flagged_only_when_skewed() -> None:
    skewed = sample_ratio_check([5200, 4800], [1, 1])
    assert skewed.mismatch and skewed.p_value == pytest.approx(stats.chisquare([5200, 4800]).pvalue)
    fine = sample_ratio_check([5030, 4970], [1, 1])
    assert not fine.mismatch
    weighted = sample_ratio_check([7000, 3000], [70, 30])
    assert weighted.expected == [7000, 3000] and not weighted.mismatch
    assert sample_ratio_check([7000, 3000], [1, 1]).mismatch


def test_laplace_noise_has_the_calibrated_scale() -> None:
    mechanism = LaplaceMechanism(epsilon=0.5)
    sensitivity = 2.0
    assert mechanism.scale(sensitivity) == 4.0
    draws = mechanism.noise(sensitivity, 20_000)
    assert stats.kstest(draws, stats.laplace(loc=0, scale=4.0).cdf).pvalue > 0.001
    # The same test tells a wrong scale apart, so passing it means something.
    assert stats.kstest(draws, stats.laplace(loc=0, scale=2.0).cdf).pvalue < 1e-6
    assert stats.kstest(draws, stats.laplace(loc=0, scale=8.0).cdf).pvalue < 1e-6
    released = np.array([mechanism.release(100.0, sensitivity) for _ in range(5000)])
    assert stats.kstest(released - 100.0, stats.laplace(loc=0, scale=4.0).cdf).pvalue > 0.001


def test_noise_is_not_replayable() -> None:
    # Seeded from os.urandom: two mechanisms never produce the same noise.
    assert not np.array_equal(LaplaceMechanism(1.0).noise(1.0, 8), LaplaceMechanism(1.0).noise(1.0, 8))
