"""FID and KID: how far generated digits are from real ones, in the MNIST classifier's features (notebook 06).

The command that scores a file of samples is ``python -m diffusion_lesson.fid``; this module holds the maths.

Features are the course classifier's 128 penultimate activations (diffusion_lesson.classifier), so
numbers are comparable only between runs with the same classifier, the same N and the same
reference set (here the 10,000 MNIST test digits).

FID (Heusel et al. 2017) is the Frechet distance between Gaussians fitted to two feature sets:

    FID = ||mu_a - mu_b||^2 + tr(cov_a + cov_b - 2 (cov_a^(1/2) cov_b cov_a^(1/2))^(1/2))

The last trace equals tr((cov_a cov_b)^(1/2)). The product cov_a cov_b is not symmetric, but it is
similar to the symmetric positive semi-definite cov_a^(1/2) cov_b cov_a^(1/2), so the trace is the
sum of the square roots of that matrix's eigenvalues. Both square roots come from symmetric
eigendecompositions (numpy.linalg.eigh) in float64, with round-off negatives clipped to 0: no
complex numbers, and singular covariances are fine.

KID (Binkowski et al. 2018) is the squared maximum mean discrepancy with the kernel
k(x, y) = (x . y / d + 1)^3, estimated without bias:

    MMD^2_u = sum_{i!=j} k(a_i, a_j) / (m (m-1)) + sum_{i!=j} k(b_i, b_j) / (n (n-1)) - 2 sum_{i,j} k(a_i, b_j) / (m n)

computed on ``num_subsets`` disjoint random subsets; their mean is KID and their spread over
sqrt(num_subsets) its standard error (the subsets share no digits, so the estimates are independent).

Reference features are computed once per classifier (named by ``classifier_id``, e.g. its file's
sha256) and cached in $DIFFUSION_LESSON_CACHE (default ~/.cache/diffusion-lesson), never beside the
data set, whose folder may be read-only.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from diffusion_lesson.classifier import FEATURE_DIM, MnistClassifier
from diffusion_lesson.data import load_mnist, to_unit_range

CACHE_ENV_VAR = "DIFFUSION_LESSON_CACHE"


class FeatureStats(NamedTuple):
    """Mean (d,) and covariance (d, d) of n feature vectors, float64."""

    mu: np.ndarray
    cov: np.ndarray
    n: int


class KID(NamedTuple):
    """KID estimate, its standard error, and the disjoint subsets it averages over."""

    value: float
    std_error: float
    num_subsets: int
    subset_size: int


def feature_stats(features: Tensor | np.ndarray) -> FeatureStats:
    """Mean and unbiased covariance (divide by n - 1) of features (n, d), computed in float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need features shaped (n, d) with n >= 2, got {f.shape}")
    return FeatureStats(f.mean(axis=0), np.cov(f, rowvar=False), f.shape[0])


def sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (eigenvalues < 0 from round-off -> 0)."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """||mu_a - mu_b||^2 + tr(cov_a + cov_b - 2 (cov_a^(1/2) cov_b cov_a^(1/2))^(1/2)), see the module docstring."""
    if a.mu.shape != b.mu.shape or a.cov.shape != b.cov.shape:
        raise ValueError(f"statistics of different feature sizes: {a.mu.shape} and {b.mu.shape}")
    root_a = sqrtm_psd(a.cov)
    middle = root_a @ b.cov @ root_a
    trace_of_root = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    mean_term = float(np.sum((a.mu - b.mu) ** 2))
    return mean_term + float(np.trace(a.cov) + np.trace(b.cov) - 2 * trace_of_root)


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x . y / d + 1)^3 for rows of x (m, d) and y (n, d) -> (m, n)."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased estimate of the squared MMD between samples x (m, d) and y (n, d), polynomial kernel."""
    m, n = x.shape[0], y.shape[0]
    k_xx, k_yy = polynomial_kernel(x, x), polynomial_kernel(y, y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))  # the diagonal k(x_i, x_i) is left out
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * polynomial_kernel(x, y).mean())


def kid(a: Tensor | np.ndarray, b: Tensor | np.ndarray, num_subsets: int = 10, seed: int = 0) -> KID:
    """KID between feature sets a (m, d) and b (n, d): mean of MMD^2_u over disjoint random subsets.

    Each subset holds min(m, n) // num_subsets rows of each set (at least 2 are needed).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    size = min(a.shape[0], b.shape[0]) // num_subsets
    if num_subsets < 2 or size < 2:
        raise ValueError(
            f"KID with {num_subsets} subsets needs num_subsets >= 2 and at least {2 * max(num_subsets, 2)} "
            f"feature vectors in each set, got {a.shape[0]} and {b.shape[0]}"
        )
    rng = np.random.default_rng(seed)
    order_a, order_b = rng.permutation(a.shape[0]), rng.permutation(b.shape[0])
    estimates = np.array([
        mmd2_unbiased(a[order_a[i * size : (i + 1) * size]], b[order_b[i * size : (i + 1) * size]])
        for i in range(num_subsets)
    ])  # fmt: skip
    return KID(float(estimates.mean()), float(estimates.std(ddof=1) / np.sqrt(num_subsets)), num_subsets, size)


def cache_dir() -> Path:
    """Writable folder for computed reference features: $DIFFUSION_LESSON_CACHE, else ~/.cache/diffusion-lesson."""
    value = os.environ.get(CACHE_ENV_VAR, "").strip()
    return Path(value).expanduser() if value else Path.home() / ".cache" / "diffusion-lesson"


def reference_features(classifier: MnistClassifier, classifier_id: str, split: str = "test") -> Tensor:
    """``classifier``'s features (N, 128) of the MNIST ``split``, computed once and cached under ``classifier_id``."""
    path = cache_dir() / "fid" / f"mnist-{split}-features-{classifier_id[:16]}.npy"
    if path.is_file():
        return torch.from_numpy(np.load(path))
    features = classifier.features(load_mnist(split).images)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "wb") as f:  # written under a temporary name, then renamed: never half a file
        np.save(f, features.numpy())
    os.replace(tmp, path)
    return features


def check_image_array(images: np.ndarray, min_count: int = FEATURE_DIM + 1) -> np.ndarray:
    """Raise a clear error unless ``images`` is a numpy uint8 array (N, 28, 28) with N >= min_count; returns it."""
    if not isinstance(images, np.ndarray):
        hint = ": from a torch tensor use images.cpu().numpy()" if isinstance(images, Tensor) else ""
        raise TypeError(f"images must be a numpy array, got {type(images).__name__}{hint}")
    if images.ndim == 4 and images.shape[1] == 1:
        raise ValueError(f"images must be (N, 28, 28), got {images.shape}: drop the channel axis with images[:, 0]")
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"images must be shaped (N, 28, 28), got {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(
            f"images must be uint8 in [0, 255], got {images.dtype}; from floats in [-1, 1] use data.to_uint8"
        )
    if images.shape[0] < min_count:
        raise ValueError(
            f"need at least {min_count} images, got {images.shape[0]}: with N <= {FEATURE_DIM} the "
            f"{FEATURE_DIM}x{FEATURE_DIM} feature covariance cannot have full rank and FID means little; "
            "use thousands (the README's numbers use 10,000)"
        )
    return images


def digit_features(images: np.ndarray, classifier: MnistClassifier) -> Tensor:
    """Classifier features (N, 128) of uint8 digits (N, 28, 28)."""
    x = to_unit_range(torch.from_numpy(np.ascontiguousarray(images))).unsqueeze(1)  # (N, 1, 28, 28)
    return classifier.features(x)


def evaluate(images: np.ndarray, classifier: MnistClassifier, reference: Tensor, num_subsets: int = 10) -> dict:
    """FID and KID of uint8 digits (N, 28, 28) against ``reference`` features, as a plain dict."""
    check_image_array(images, min_count=max(FEATURE_DIM + 1, 2 * num_subsets))
    features = digit_features(images, classifier)
    kid_estimate = kid(features, reference, num_subsets)
    return {
        "fid": frechet_distance(feature_stats(features), feature_stats(reference)),
        "kid": kid_estimate.value,
        "kid_std_error": kid_estimate.std_error,
        "n": int(images.shape[0]),
        "reference": f"MNIST test set, {reference.shape[0]} digits",
        "features": f"course MNIST classifier, {FEATURE_DIM} penultimate activations",
    }
