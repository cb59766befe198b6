"""Intervals and paired tests: coverage and error rates measured by simulation against a known truth.

Each simulation draws data whose true value is known, computes the interval or test as the
evaluate stage does, and counts how often the interval holds the truth (coverage) or the test
rejects a true null (type I error). The tolerances allow for the Monte Carlo error of the number
of simulations (about 1 pp at 95 % and 500 draws) and, for Wilson's interval, its known
oscillation with the true share (coverage between 93 % and 97 % in these cases).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from scipy import linalg
from scipy.stats import norm

from infra.errors import DataError
from metrics import uncertainty
from metrics.fid import FeatureSets, MmdResamples, frechet, frechet_distance, polynomial_kernel, statistics
from metrics.options import IntervalOptions

OPTIONS = IntervalOptions()


def covered(interval: dict, truth: float) -> bool:
    return interval["low"] <= truth <= interval["high"]


@pytest.mark.parametrize("share", [0.03, 0.2, 0.5])
@pytest.mark.parametrize("n", [100, 1000])
def test_share_intervals_cover_the_true_share_about_95_percent_of_the_time(share, n):
    draws = np.random.default_rng(int(1000 * share) + n).binomial(n, share, 4000)
    intervals = {k: uncertainty.share(k, n, OPTIONS) for k in np.unique(draws)}  # one interval per distinct count
    coverage = np.mean([covered(intervals[k], share) for k in draws])
    assert abs(coverage - 0.95) <= 0.025, coverage
    assert intervals[draws[0]]["method"] == uncertainty.WILSON and intervals[draws[0]]["level"] == 0.95


def test_a_share_of_no_trials_has_no_interval_and_a_higher_level_gives_a_wider_one():
    assert uncertainty.share(0, 0, OPTIONS) is None
    narrow, wide = uncertainty.share(30, 100, OPTIONS), uncertainty.share(30, 100, IntervalOptions(level=0.99))
    assert wide["low"] < narrow["low"] < 0.3 < narrow["high"] < wide["high"]


def test_the_bootstrap_interval_of_a_skewed_mean_covers_it_about_95_percent_of_the_time():
    rng, truth, sims = np.random.default_rng(0), 1.0, 500
    hits = [covered(uncertainty.mean(rng.gamma(2.0, truth / 2.0, 200), IntervalOptions(resamples=1000, seed=s)), truth)
            for s in range(sims)]
    assert abs(np.mean(hits) - 0.95) <= 0.03, np.mean(hits)


def test_a_mean_of_equal_values_has_a_point_interval_and_too_few_values_none():
    assert uncertainty.mean(np.full(5, 0.25), OPTIONS)["low"] == 0.25
    assert uncertainty.mean(np.array([0.3, np.nan]), OPTIONS) is None


# Two Gaussians whose FID is known in closed form: real N(0, I), anonymised N(mu, diag(scale^2)).
MU, SCALE = np.array([0.5, 0.0, 0.0, 0.0]), np.array([1.5, 1.0, 1.0, 0.7])
TRUE_FID = float(np.sum(MU**2) + np.sum(1 + SCALE**2 - 2 * SCALE))


def test_fid_bootstrap_interval_covers_the_true_distance_at_least_90_percent_of_the_time():
    """With the default 100 resamples; docs/decisions.md has the coverage measured at more sizes."""
    rng, sims, n = np.random.default_rng(1), 200, 300
    hits, biases = [], []
    for seed in range(sims):
        real, fake = rng.standard_normal((n, 4)), MU + SCALE * rng.standard_normal((n, 4))
        value = frechet(real, fake)
        interval = uncertainty.two_sets(lambda i, j, real=real, fake=fake: frechet(real[i], fake[j]), (n, n), value,
                                        IntervalOptions(seed=seed), "FID")
        hits.append(covered(interval, TRUE_FID))
        biases.append(interval["bootstrap_bias"])
    assert np.mean(hits) >= 0.90, np.mean(hits)
    assert np.mean(biases) > 0  # a resample, with repeated images, is further from the truth: FID's upward bias


def test_fid_of_a_positive_definite_covariance_agrees_with_scipys_matrix_square_root():
    rng = np.random.default_rng(2)
    real, fake = rng.standard_normal((400, 16)), rng.standard_normal((400, 16)) @ rng.standard_normal((16, 16))
    (mu1, sigma1), (mu2, sigma2) = statistics(real), statistics(fake)
    reference = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2 * linalg.sqrtm(sigma1 @ sigma2).real)
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(reference, rel=1e-9)


@pytest.mark.parametrize("sizes", [(5, 7), (7, 30), (40, 50)])
def test_fid_from_the_images_of_small_sets_equals_fid_from_their_statistics(sizes):
    rng = np.random.default_rng(sizes[0])
    real, fake = rng.standard_normal((sizes[0], 32)), rng.standard_normal((sizes[1], 32)) * 1.3 + 0.2
    assert frechet(real, fake) == pytest.approx(frechet_distance(*statistics(real), *statistics(fake)), rel=1e-9)


def test_mmd_of_a_resample_equals_the_unbiased_mmd_of_the_resampled_rows():
    rng = np.random.default_rng(3)
    real, fake = rng.standard_normal((30, 8)), rng.standard_normal((40, 8)) + 0.3
    i, j = rng.integers(0, 30, 30), rng.integers(0, 40, 40)
    x, y = real[i], fake[j]
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    explicit = ((kxx.sum() - np.trace(kxx)) / (30 * 29) + (kyy.sum() - np.trace(kyy)) / (40 * 39)
                - 2 * kxy.mean())
    assert MmdResamples(real, fake)(i, j) == pytest.approx(explicit, rel=1e-12)


# --- paired comparisons -------------------------------------------------------------------------


def correlated_pairs(rng: np.random.Generator, n: int, shares: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Binary outcomes of two methods on the same pairs, correlated through a shared latent per pair."""
    latent = rng.standard_normal(n)
    a = latent + 0.8 * rng.standard_normal(n) < norm.ppf(shares[0]) * np.sqrt(1.64)
    b = latent + 0.8 * rng.standard_normal(n) < norm.ppf(shares[1]) * np.sqrt(1.64)
    return a, b


def test_mcnemar_keeps_its_level_under_the_null_and_finds_a_real_difference():
    rng, level = np.random.default_rng(4), 1 - OPTIONS.level
    null = [uncertainty.paired_binary(*correlated_pairs(rng, 300, (0.3, 0.3)), OPTIONS).p < level for _ in range(400)]
    assert np.mean(null) <= level + 0.02, np.mean(null)  # the exact test is conservative, never liberal
    differences = [uncertainty.paired_binary(*correlated_pairs(rng, 600, (0.4, 0.3)), OPTIONS) for _ in range(100)]
    assert np.mean([d.p < level for d in differences]) >= 0.9
    assert np.mean([d.low <= 0.1 <= d.high for d in differences]) >= 0.9


def test_paired_values_interval_covers_the_true_difference_and_the_permutation_test_keeps_its_level():
    rng, sims = np.random.default_rng(5), 200
    options = IntervalOptions(resamples=1000)
    hits, rejections = [], []
    for _ in range(sims):
        shared = rng.gamma(2.0, 0.5, 150)
        a, b = shared + rng.normal(0.1, 0.3, 150), shared + rng.normal(0.0, 0.3, 150)
        difference = uncertainty.paired_values(a, b, options)
        hits.append(difference.low <= 0.1 <= difference.high)
        null = uncertainty.paired_values(shared + rng.normal(0, 0.3, 150), shared + rng.normal(0, 0.3, 150), options)
        rejections.append(null.p < 0.05)
    assert abs(np.mean(hits) - 0.95) <= 0.035, np.mean(hits)
    assert np.mean(rejections) <= 0.05 + 0.03, np.mean(rejections)


def test_identical_outcomes_differ_by_nothing_with_p_one():
    a = np.array([True, False, True, True])
    difference = uncertainty.paired_binary(a, a, OPTIONS)
    assert (difference.difference, difference.low, difference.high, difference.p) == (0.0, 0.0, 0.0, 1.0)
    assert uncertainty.paired_values(np.arange(5.0), np.arange(5.0), OPTIONS).p == 1.0


def test_paired_fid_difference_covers_the_true_difference_and_rejects_a_clear_one():
    """Real N(0, I); A and B shift the mean by mu_a and mu_b: FID(A) - FID(B) = |mu_a|^2 - |mu_b|^2."""
    rng, n, sims = np.random.default_rng(6), 300, 100
    mu_a, mu_b = np.array([0.6, 0, 0]), np.array([0.3, 0, 0])
    truth = float(mu_a @ mu_a - mu_b @ mu_b)
    hits, rejected = [], []
    for seed in range(sims):
        real, base = rng.standard_normal((n, 3)), rng.standard_normal((n, 3))
        a, b = base + mu_a, base + mu_b + 0.3 * rng.standard_normal((n, 3))  # one source photo per pair
        estimate = frechet(real, a) - frechet(real, b)
        def fid_difference(i, j, real=real, a=a, b=b):
            return frechet(real[i], a[j]) - frechet(real[i], b[j])

        difference = uncertainty.paired_sets(fid_difference, (n, n), estimate, IntervalOptions(seed=seed), "FID")
        hits.append(difference.low <= truth <= difference.high)
        rejected.append(difference.p < 0.05)
    assert np.mean(hits) >= 0.88, np.mean(hits)
    assert np.mean(rejected) >= 0.8, np.mean(rejected)


def test_holm_adjusts_upwards_and_keeps_the_order():
    adjusted = uncertainty.holm([0.01, 0.04, 0.03], 0.95)
    assert adjusted == pytest.approx([0.03, 0.06, 0.06])


def test_feature_sets_round_trip_and_a_changed_array_is_refused(tmp_path):
    rng = np.random.default_rng(7)
    sets = FeatureSets(rng.random((5, 3), np.float32), rng.random((4, 3), np.float32), np.arange(4), "w clean")
    sets.write(tmp_path / "f.npz")
    with open(tmp_path / "f.npz", "rb") as handle:
        back = FeatureSets.read(handle, "f.npz")
    assert np.array_equal(back.real, sets.real) and np.array_equal(back.pair_ids, sets.pair_ids)
    assert back.weights == "w clean"
    stored = dict(np.load(tmp_path / "f.npz"))
    stored["anonymised"] = stored["anonymised"] + 1
    buffer = io.BytesIO()
    np.savez(buffer, **stored)
    buffer.seek(0)
    with pytest.raises(DataError, match="anonymised does not match the SHA-256"):
        FeatureSets.read(buffer, "tampered.npz")
