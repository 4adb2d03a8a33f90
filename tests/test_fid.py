"""FID and KID: exact answers, scipy and torchmetrics as independent references, the unbiasedness of KID."""

import numpy as np
import pytest
import scipy.linalg
import torch

from diffusion_lesson.metrics import (
    FeatureStats,
    feature_stats,
    frechet_distance,
    kid,
    mmd2_unbiased,
    polynomial_kernel,
    sqrtm_psd,
)


def random_spd(d: int, rng: np.random.Generator, rank: int | None = None) -> np.ndarray:
    """A random symmetric positive (semi-)definite matrix of the given rank."""
    factor = rng.standard_normal((d, rank or d))
    return factor @ factor.T / d + (1e-3 * np.eye(d) if rank is None else 0)


def stats(mu, cov) -> FeatureStats:
    return FeatureStats(np.asarray(mu, dtype=np.float64), np.asarray(cov, dtype=np.float64), 1000)


def scipy_frechet(a: FeatureStats, b: FeatureStats) -> float:
    """The textbook formula with scipy's general sqrtm of the non-symmetric product (pytorch-fid's way)."""
    covmean = scipy.linalg.sqrtm(a.cov @ b.cov).real
    return float(np.sum((a.mu - b.mu) ** 2) + np.trace(a.cov) + np.trace(b.cov) - 2 * np.trace(covmean))


def test_identical_statistics_give_zero():
    rng = np.random.default_rng(0)
    a = stats(rng.standard_normal(16), random_spd(16, rng))
    assert abs(frechet_distance(a, a)) < 1e-9


def test_equal_covariances_give_the_squared_mean_distance():
    rng = np.random.default_rng(1)
    cov = random_spd(12, rng)
    mu_a, mu_b = rng.standard_normal(12), rng.standard_normal(12)
    assert frechet_distance(stats(mu_a, cov), stats(mu_b, cov)) == pytest.approx(np.sum((mu_a - mu_b) ** 2), rel=1e-9)


def test_diagonal_covariances_match_the_closed_form():
    # For diagonal covariances, tr(cov_a + cov_b - 2 sqrt(cov_a cov_b)) = sum (sqrt(a_i) - sqrt(b_i))^2.
    rng = np.random.default_rng(2)
    var_a, var_b = rng.uniform(0.1, 3, 10), rng.uniform(0.1, 3, 10)
    mu_a, mu_b = rng.standard_normal(10), rng.standard_normal(10)
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    got = frechet_distance(stats(mu_a, np.diag(var_a)), stats(mu_b, np.diag(var_b)))
    assert got == pytest.approx(expected, rel=1e-10)


def test_singular_covariances_are_handled():
    # Rank-deficient covariances (fewer samples than features): the closed form still holds, with zeros.
    var_a, var_b = np.array([1.0, 4.0, 0.0, 0.0]), np.array([0.0, 1.0, 9.0, 0.0])
    expected = np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    assert frechet_distance(stats(np.zeros(4), np.diag(var_a)), stats(np.zeros(4), np.diag(var_b))) == pytest.approx(
        expected, abs=1e-9
    )


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_scipy_sqrtm_and_is_symmetric(seed):
    rng = np.random.default_rng(seed)
    d = 32
    a = stats(rng.standard_normal(d), random_spd(d, rng))
    b = stats(rng.standard_normal(d) * 0.3, random_spd(d, rng))
    assert frechet_distance(a, b) == pytest.approx(scipy_frechet(a, b), rel=1e-7)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-10)


def test_agrees_with_torchmetrics_fid_given_the_same_features():
    torchmetrics_fid = pytest.importorskip("torchmetrics.image.fid")
    rng = np.random.default_rng(7)
    real = torch.from_numpy(rng.standard_normal((400, 6)))
    fake = torch.from_numpy(rng.standard_normal((300, 6)) * 1.3 + 0.2)

    class Identity(torch.nn.Module):  # inputs already are features
        def forward(self, x):
            return x

    metric = torchmetrics_fid.FrechetInceptionDistance(feature=Identity(), input_img_size=(6,), normalize=True)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    expected = float(metric.compute())
    assert frechet_distance(feature_stats(fake), feature_stats(real)) == pytest.approx(expected, rel=1e-5)


def test_sqrtm_psd_squares_back():
    rng = np.random.default_rng(3)
    m = random_spd(20, rng)
    root = sqrtm_psd(m)
    np.testing.assert_allclose(root @ root, m, atol=1e-10)
    np.testing.assert_allclose(root, root.T, atol=1e-12)


def test_feature_stats_are_float64_mean_and_unbiased_covariance():
    f = torch.randn(500, 5, generator=torch.Generator().manual_seed(0))
    s = feature_stats(f)
    assert s.mu.dtype == np.float64 and s.cov.dtype == np.float64 and s.n == 500
    centered = f.double().numpy() - f.double().numpy().mean(0)
    np.testing.assert_allclose(s.cov, centered.T @ centered / 499, rtol=1e-12)
    with pytest.raises(ValueError, match="n >= 2"):
        feature_stats(f[:1])


def test_frechet_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match="different feature sizes"):
        frechet_distance(stats(np.zeros(3), np.eye(3)), stats(np.zeros(4), np.eye(4)))


def test_mmd2_is_unbiased_for_two_samples_of_one_distribution():
    # Over 400 repeats, the mean estimate must sit within 4 standard errors of 0. The biased
    # V-statistic (diagonal kept) sits far above 0 at this sample size, so the check has teeth.
    rng = np.random.default_rng(0)
    unbiased, biased = [], []
    for _ in range(400):
        x, y = rng.standard_normal((40, 8)), rng.standard_normal((40, 8))
        unbiased.append(mmd2_unbiased(x, y))
        biased.append(
            polynomial_kernel(x, x).mean() + polynomial_kernel(y, y).mean() - 2 * polynomial_kernel(x, y).mean()
        )
    unbiased = np.array(unbiased)
    standard_error = unbiased.std(ddof=1) / np.sqrt(len(unbiased))
    assert abs(unbiased.mean()) < 4 * standard_error
    assert np.mean(biased) > 10 * standard_error


def test_kid_is_positive_for_shifted_samples_and_near_zero_for_equal_ones():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2000, 16)), rng.standard_normal((2000, 16))
    same = kid(a, b, num_subsets=10)
    shifted = kid(a, b + 0.5, num_subsets=10)
    assert abs(same.value) < 4 * same.std_error
    assert shifted.value > 10 * shifted.std_error > 0
    assert (same.num_subsets, same.subset_size) == (10, 200)


def test_kid_refuses_too_few_vectors():
    with pytest.raises(ValueError, match="needs num_subsets >= 2"):
        kid(np.zeros((15, 4)), np.zeros((100, 4)), num_subsets=10)
