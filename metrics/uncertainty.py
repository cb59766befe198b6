"""Uncertainty: an interval for every metric value, and paired tests of two methods on the same pairs.

Every interval and test here is a library's computation; this module chooses them and feeds them
(settings: `metrics.options.IntervalOptions`, params `evaluate.interval`).

Intervals (`interval` in each metric's result: low, high, level, method):
- a share of pairs or images (detection, re-identification, verification on LFW, rank-1
  identification): Wilson's score interval for a binomial proportion
  (`scipy.stats.binomtest(...).proportion_ci`);
- a mean of per-pair values (pose error, CelebA's per-probe verification rate): a BCa bootstrap
  over pairs (`scipy.stats.bootstrap`);
- a distance between two sets of image features (FID, KID): a bootstrap that resamples both sets,
  images with replacement, and takes the "basic" (reverse-percentile) interval. FID at N images is
  biased upwards, by more the smaller N; a bootstrap resample, with its repeated images, is more
  biased still, so the percentile interval sits above the estimate and misses the true distance.
  The basic interval reflects the resamples about the estimate, which removes the part of the
  bias the bootstrap can see; the result records that estimate (`bootstrap_bias`: mean of the
  resamples minus the estimate). Simulated, it covers the true distance only when N is several
  times the feature dimension (docs/decisions.md, "Uncertainty"): not at any N of the 2,048-d
  Inception features this suite runs, which the report says. FIDs of different N never compare.

Paired comparisons, A - B on the pairs both methods have (`Difference`):
- per-pair binary outcomes (detected, re-identified, verified): McNemar's exact test (statsmodels)
  and a paired percentile bootstrap of the difference in shares;
- per-pair values (pose error): a paired BCa bootstrap of the mean difference and a paired
  permutation test (`scipy.stats.permutation_test`, signs flipped within pairs);
- FID and KID: a paired bootstrap (one resample of pairs for both methods, the real set resampled
  on its own), basic interval; p from the normal approximation of the resampled differences
  (`scipy.stats.norm`), centred on the same bias-corrected difference as the interval;
- `holm`: Holm's step-down correction across the metrics of one comparison (statsmodels).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from tqdm import tqdm

from metrics.options import IntervalOptions

WILSON = "Wilson score interval (binomial)"
BCA_MEAN = "BCa bootstrap of the mean over pairs"
BASIC_SETS = "basic bootstrap, both image sets resampled"
LONG = 1000  # images from which a feature bootstrap takes long enough (seconds per resample) to show progress


def interval(low: float, high: float, options: IntervalOptions, method: str) -> dict:
    """The `interval` entry of a metric result."""
    return {"low": float(low), "high": float(high), "level": options.level, "method": method}


def share(successes: int, n: int, options: IntervalOptions) -> dict | None:
    """Wilson's interval for `successes` of `n`; None without trials."""
    if n == 0:
        return None
    bounds = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=options.level, method="wilson")
    return interval(bounds.low, bounds.high, options, WILSON)


def mean(values: np.ndarray, options: IntervalOptions) -> dict | None:
    """BCa bootstrap interval of the mean of `values` (NaNs left out); None with fewer than two values."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return None
    if np.ptp(values) == 0:  # every resample has the same mean: the bootstrap has nothing to say
        return interval(values[0], values[0], options, f"{BCA_MEAN} (all values equal)")
    result = stats.bootstrap((values,), np.mean, n_resamples=options.resamples, confidence_level=options.level,
                             method="BCa", rng=np.random.default_rng(options.seed))
    return interval(*result.confidence_interval, options, BCA_MEAN)


def _over_both_sets(statistic: Callable[[np.ndarray, np.ndarray], float], sizes: tuple[int, int],
                    options: IntervalOptions, label: str):
    """scipy's basic bootstrap of `statistic` over two sets' row indices, each resampled; progress on long work."""
    bar = tqdm(total=options.feature_resamples + 1, desc=label, unit="resample", leave=False,
               disable=max(sizes) < LONG)

    def counted(first: np.ndarray, second: np.ndarray) -> float:
        bar.update()
        return statistic(first, second)

    with bar:
        return stats.bootstrap((np.arange(sizes[0]), np.arange(sizes[1])), counted, vectorized=False,
                               n_resamples=options.feature_resamples, confidence_level=options.level,
                               method="basic", rng=np.random.default_rng(options.seed))


def two_sets(statistic: Callable[[np.ndarray, np.ndarray], float], sizes: tuple[int, int], estimate: float,
             options: IntervalOptions, what: str) -> dict:
    """Basic bootstrap interval of `statistic(real_rows, anonymised_rows)`, both sets resampled, plus its bias.

    `statistic` receives row indices into the two feature sets (of `sizes`); `estimate` is its value on
    all rows. A progress bar counts the resamples (each may take seconds on thousands of images).
    """
    result = _over_both_sets(statistic, sizes, options, f"{what} interval")
    bias = float(np.mean(result.bootstrap_distribution) - estimate)
    return {**interval(*result.confidence_interval, options, BASIC_SETS), "bootstrap_bias": bias,
            "resamples": options.feature_resamples}


# --- paired comparisons -------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    """A - B on `n` pairs: the difference, its interval, the test's p (before any correction) and its name."""

    difference: float
    low: float
    high: float
    p: float
    test: str
    n: int


def _mean_difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def _paired_bootstrap(a: np.ndarray, b: np.ndarray, options: IntervalOptions, method: str) -> tuple[float, float]:
    if np.array_equal(a, b) or np.ptp(a - b) == 0:  # a constant difference has no spread to resample
        return float(np.mean(a - b)), float(np.mean(a - b))
    result = stats.bootstrap((a, b), _mean_difference, paired=True, vectorized=True, n_resamples=options.resamples,
                             confidence_level=options.level, method=method, rng=np.random.default_rng(options.seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def paired_binary(a: np.ndarray, b: np.ndarray, options: IntervalOptions) -> Difference:
    """Shares of A and B on the same pairs: McNemar's exact test and a paired bootstrap interval."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    table = [[int(np.sum(a & b)), int(np.sum(a & ~b))], [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
    p = float(mcnemar(table, exact=True).pvalue)
    low, high = _paired_bootstrap(a.astype(float), b.astype(float), options, "percentile")
    return Difference(float(a.mean() - b.mean()), low, high, p, "McNemar exact", len(a))


def paired_values(a: np.ndarray, b: np.ndarray, options: IntervalOptions) -> Difference:
    """Means of A and B on the same pairs: a paired BCa bootstrap interval and a sign-flip permutation test."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    low, high = _paired_bootstrap(a, b, options, "BCa")
    if np.array_equal(a, b):
        p = 1.0
    else:
        p = float(stats.permutation_test((a, b), _mean_difference, permutation_type="samples", vectorized=True,
                                         n_resamples=options.resamples,
                                         rng=np.random.default_rng(options.seed)).pvalue)
    return Difference(float(a.mean() - b.mean()), low, high, p, "paired permutation", len(a))


def paired_sets(statistic: Callable[[np.ndarray, np.ndarray], float], sizes: tuple[int, int], estimate: float,
                options: IntervalOptions, what: str) -> Difference:
    """A paired bootstrap of `statistic(real_rows, pair_rows)` = (distance of A) - (distance of B).

    The pair rows index both methods' features (the same pairs), the real rows the common real set.
    """
    result = _over_both_sets(statistic, sizes, options, f"{what} difference")
    # A p counted from 100 resamples could never fall below 2 / 101, which Holm's correction over a few
    # metrics lifts above 0.05 whatever the difference: p comes from the normal approximation of the
    # resamples instead, centred like the basic interval on the bias-corrected difference 2 d - mean.
    resampled = np.asarray(result.bootstrap_distribution)
    corrected, spread = 2 * estimate - resampled.mean(), resampled.std(ddof=1)
    p = 1.0 if spread == 0 else float(2 * stats.norm.sf(abs(corrected) / spread))
    low, high = result.confidence_interval
    return Difference(float(estimate), float(low), float(high), p, "paired bootstrap", sizes[1])


def holm(p_values: list[float], level: float) -> list[float]:
    """Holm-adjusted p-values (statsmodels), for the tests of one comparison taken together."""
    if not p_values:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return [float(p) for p in multipletests(p_values, alpha=1 - level, method="holm")[1]]
