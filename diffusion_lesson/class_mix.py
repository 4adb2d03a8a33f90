"""FID at small N also scores the mix of digits: the real floor at a sample's own class mix (notebook 06).

FID compares the feature statistics of a whole sample with the MNIST test set's, so a sampler whose
digits are all well formed but whose 1,000 draws hold 133 ones and 75 sixes (the test set has 11.4%
ones and 9.6% sixes) is scored as worse than one with the test set's mix. How much worse is measured
here, with no model at all: the FID of real training digits drawn with the same count of each digit
(the "class-mix floor"), against real digits drawn with the test set's mix.

The counts of a sample are what the course classifier reads in it (99% accurate on real digits), so
they are an estimate: a malformed digit counts as whatever it looks most like.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from diffusion_lesson.classifier import MnistClassifier
from diffusion_lesson.data import LabeledImages, to_uint8, to_unit_range
from diffusion_lesson.guidance import classify
from diffusion_lesson.metrics import FeatureStats, check_image_array, digit_features, feature_stats, frechet_distance

DIGITS = 10


class ClassMixFloor(NamedTuple):
    """counts: (10,) long, the digits the classifier reads in the sample; test_counts: (10,) long, the
    test set's mix scaled to the same N; fids, test_mix_fids: (draws,) float64, real training digits
    drawn with each mix."""

    counts: Tensor
    test_counts: Tensor
    fids: Tensor
    test_mix_fids: Tensor


def count_digits(classifier: MnistClassifier, images: np.ndarray) -> Tensor:
    """How many of uint8 digits (N, 28, 28) the classifier reads as each digit 0-9: (10,) long, summing to N."""
    x = to_unit_range(torch.from_numpy(np.ascontiguousarray(images))).unsqueeze(1)  # (N, 1, 28, 28)
    return torch.bincount(classify(classifier.eval(), x), minlength=DIGITS)


def counts_like(labels: Tensor, n: int) -> Tensor:
    """The class mix of ``labels`` (M,) scaled to n digits: (10,) long summing exactly to n.

    Each digit gets the floor of its share; the digits with the largest remainders get one more
    (the largest-remainder rule), so no count is off from its exact share by 1 or more.
    """
    exact = torch.bincount(labels, minlength=DIGITS).double() * n / labels.numel()  # (10,)
    counts = exact.floor().long()
    short = n - int(counts.sum())
    counts[torch.argsort(exact - counts, descending=True)[:short]] += 1
    return counts


def draw_by_class(labels: Tensor, counts: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Indices of counts[d] distinct examples of each digit d, drawn at random from ``labels`` (M,): (sum,) long."""
    if counts.shape != (DIGITS,) or bool((counts < 0).any()):
        raise ValueError(f"counts must be 10 non-negative numbers, one per digit, got {counts.tolist()}")
    picks = []
    for digit, count in enumerate(counts.tolist()):
        pool = torch.nonzero(labels == digit)[:, 0]
        if count > pool.numel():
            raise ValueError(f"{count} digits {digit} asked for, but only {pool.numel()} are available")
        picks.append(pool[torch.randperm(pool.numel(), generator=generator)[:count]])
    return torch.cat(picks)


def floor_at_mix(
    counts: Tensor,
    classifier: MnistClassifier,
    reference: FeatureStats,
    train: LabeledImages,
    draws: int = 5,
    generator: torch.Generator | None = None,
) -> Tensor:
    """FID against ``reference`` of real ``train`` digits drawn with ``counts`` (10,) of each digit: (draws,) float64.

    Any N from 2 up is scored (below 129, the feature dimension, the covariance is rank-deficient and
    FID far above its large-N value, as for any sample that small).
    """
    scores = []
    for _ in range(draws):
        real = to_uint8(train.images[draw_by_class(train.labels, counts, generator), 0]).numpy()  # (N, 28, 28)
        scores.append(frechet_distance(feature_stats(digit_features(real, classifier)), reference))
    return torch.tensor(scores, dtype=torch.float64)


def class_mix_floor(
    images: np.ndarray,
    classifier: MnistClassifier,
    reference: Tensor,
    train: LabeledImages,
    test_labels: Tensor,
    draws: int = 5,
    generator: torch.Generator | None = None,
) -> ClassMixFloor:
    """The mix the classifier reads in uint8 ``images`` (N, 28, 28), and ``floor_at_mix`` at that mix and at the
    mix of ``test_labels`` scaled to N; ``reference``: the test set's features (M, 128)."""
    check_image_array(images, min_count=2)
    counts, test_counts = count_digits(classifier, images), counts_like(test_labels, images.shape[0])
    stats = feature_stats(reference)
    return ClassMixFloor(
        counts,
        test_counts,
        floor_at_mix(counts, classifier, stats, train, draws, generator),
        floor_at_mix(test_counts, classifier, stats, train, draws, generator),
    )
