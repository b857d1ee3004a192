"""Statistics for experiment results, and the Laplace mechanism for their differentially private export.

Every figure is per user (the unit of randomisation), never per event: one user's many clicks are not independent
observations. Rates: Wilson score intervals (well behaved near 0 and 1, unlike the Wald interval) and the pooled
two-proportion z-test (equivalent to a 2x2 chi-square test without continuity correction), with an unpooled Wald
interval for the difference. Means: t intervals and Welch's t-test (variances need not be equal), with a
Welch-Satterthwaite interval for the difference. Sample-ratio mismatch: chi-square goodness of fit of exposures
against the configured weights, flagged at p < 0.001 as is customary (a real mismatch means broken assignment or
logging, not a subtle effect, so a strict threshold keeps false alarms rare).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
SIGNIFICANCE = 0.05
SRM_THRESHOLD = 0.001


@dataclass(frozen=True)
class RateSummary:
    n: int
    successes: int
    rate: float | None
    ci: tuple[float, float] | None


@dataclass(frozen=True)
class MeanSummary:
    n: int
    mean: float | None
    std: float | None
    ci: tuple[float, float] | None


@dataclass(frozen=True)
class Comparison:
    test: str
    difference: float | None
    ci: tuple[float, float] | None
    statistic: float | None
    p_value: float | None

    @property
    def significant(self) -> bool:
        return self.p_value is not None and self.p_value < SIGNIFICANCE


@dataclass(frozen=True)
class SampleRatioCheck:
    chi2: float | None
    p_value: float | None
    expected: list[float]

    @property
    def mismatch(self) -> bool:
        return self.p_value is not None and self.p_value < SRM_THRESHOLD


def _z(confidence: float) -> float:
    return float(stats.norm.ppf(0.5 + confidence / 2))


def rate_summary(successes: int, n: int, confidence: float = CONFIDENCE) -> RateSummary:
    if n <= 0:
        return RateSummary(0, 0, None, None)
    p = successes / n
    z = _z(confidence)
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return RateSummary(n, successes, p, (max(0.0, centre - half), min(1.0, centre + half)))


def mean_summary(values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE) -> MeanSummary:
    data = np.asarray(values, dtype=float)
    n = int(data.size)
    if n == 0:
        return MeanSummary(0, None, None, None)
    mean = float(data.mean())
    if n < 2:
        return MeanSummary(n, mean, None, None)
    std = float(data.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return MeanSummary(n, mean, std, (mean - half, mean + half))


def compare_rates(control: RateSummary, treatment: RateSummary, confidence: float = CONFIDENCE) -> Comparison:
    """Treatment minus control: pooled two-proportion z-test, unpooled Wald interval for the difference."""
    test = "two-proportion z-test"
    if control.rate is None or treatment.rate is None:
        return Comparison(test, None, None, None, None)
    difference = treatment.rate - control.rate
    pooled = (control.successes + treatment.successes) / (control.n + treatment.n)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / control.n + 1 / treatment.n))
    se = math.sqrt(control.rate * (1 - control.rate) / control.n + treatment.rate * (1 - treatment.rate) / treatment.n)
    half = _z(confidence) * se
    if se_pooled == 0:
        # Both groups all-0 or all-1: no evidence of any difference.
        return Comparison(test, difference, (difference - half, difference + half), 0.0, 1.0)
    z = difference / se_pooled
    return Comparison(test, difference, (difference - half, difference + half), z, float(2 * stats.norm.sf(abs(z))))


def compare_means(control: MeanSummary, treatment: MeanSummary, confidence: float = CONFIDENCE) -> Comparison:
    """Treatment minus control: Welch's t-test, Welch-Satterthwaite interval for the difference."""
    test = "Welch t-test"
    if control.std is None or treatment.std is None or control.mean is None or treatment.mean is None:
        return Comparison(test, None, None, None, None)
    difference = treatment.mean - control.mean
    v1, v2 = control.std**2 / control.n, treatment.std**2 / treatment.n
    se = math.sqrt(v1 + v2)
    if se == 0:
        return Comparison(test, difference, (difference, difference), None, None)
    result = stats.ttest_ind_from_stats(
        treatment.mean, treatment.std, treatment.n, control.mean, control.std, control.n, equal_var=False
    )
    df = (v1 + v2) ** 2 / (v1**2 / (control.n - 1) + v2**2 / (treatment.n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    return Comparison(
        test, difference, (difference - half, difference + half), float(result.statistic), float(result.pvalue)
    )


def sample_ratio_check(observed: Sequence[int], weights: Sequence[float]) -> SampleRatioCheck:
    total = sum(observed)
    expected = [total * weight / sum(weights) for weight in weights]
    if total == 0 or len(observed) < 2:
        return SampleRatioCheck(None, None, expected)
    result = stats.chisquare(list(observed), f_exp=expected)
    return SampleRatioCheck(float(result.statistic), float(result.pvalue), expected)


def secure_rng() -> np.random.Generator:
    """A Generator seeded with 256 bits from the OS: noise an observer cannot predict or replay."""
    return np.random.default_rng(int.from_bytes(os.urandom(32), "big"))


class LaplaceMechanism:
    """epsilon-differential privacy for numeric queries: add Laplace(0, sensitivity / epsilon) noise.

    ``epsilon`` here is the budget of ONE query; callers releasing k queries about the same users split their
    budget (sequential composition: k queries at epsilon / k each cost epsilon in total).
    """

    name = "laplace"

    def __init__(self, epsilon: float, rng: np.random.Generator | None = None) -> None:
        if not epsilon > 0:
            raise ValueError("epsilon must be positive")
        self.epsilon = epsilon
        self._rng = rng or secure_rng()

    def scale(self, sensitivity: float) -> float:
        return sensitivity / self.epsilon

    def release(self, value: float, sensitivity: float) -> float:
        return float(value + self._rng.laplace(0.0, self.scale(sensitivity)))

    def noise(self, sensitivity: float, size: int) -> np.ndarray:
        return self._rng.laplace(0.0, self.scale(sensitivity), size)
