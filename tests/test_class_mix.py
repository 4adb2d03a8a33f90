"""The class-mix floor: exact counts and draws first, then the statistical claim on real digits and the command."""

import json

import numpy as np
import pytest
import torch

from diffusion_lesson import metrics, models
from diffusion_lesson.class_mix import class_mix_floor, count_digits, counts_like, draw_by_class, floor_at_mix
from diffusion_lesson.cli import fid
from diffusion_lesson.data import DATA_ENV_VAR, data_root, load_mnist, to_uint8
from diffusion_lesson.metrics import feature_stats

needs_mnist = pytest.mark.skipif(
    not (data_root() / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file(), reason=f"MNIST not under {DATA_ENV_VAR}"
)
SKEWED = torch.tensor([108, 133, 102, 96, 117, 79, 75, 91, 104, 95])  # what the classifier read in pixel seed 0


@pytest.fixture
def cache(tmp_path_factory, monkeypatch):
    folder = tmp_path_factory.getbasetemp() / "class-mix-cache"  # reference features computed once per session
    monkeypatch.setenv(metrics.CACHE_ENV_VAR, str(folder))
    return folder


@pytest.mark.parametrize("n", [1, 7, 999, 1000, 12345])
def test_counts_like_sum_to_n_and_stay_within_one_of_the_exact_share(n):
    labels = torch.tensor([0] * 980 + [1] * 1135 + [5] * 892 + [9] * 7)
    counts = counts_like(labels, n)
    exact = torch.bincount(labels, minlength=10).double() * n / labels.numel()
    assert counts.dtype == torch.long and counts.shape == (10,) and int(counts.sum()) == n
    assert bool(((counts - exact).abs() < 1).all())
    assert counts[[2, 3, 4, 6, 7, 8]].eq(0).all()  # digits that never occur get none


def test_draw_by_class_gives_exactly_the_counts_asked_without_repeats():
    labels = torch.arange(600) % 10
    counts = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 60])
    picks = draw_by_class(labels, counts, torch.Generator().manual_seed(0))
    assert torch.equal(torch.bincount(labels[picks], minlength=10), counts)
    assert picks.unique().numel() == picks.numel()
    assert torch.equal(picks, draw_by_class(labels, counts, torch.Generator().manual_seed(0)))
    assert not torch.equal(picks, draw_by_class(labels, counts, torch.Generator().manual_seed(1)))


@pytest.mark.parametrize(
    "counts, message",
    [
        (torch.tensor([61] + [0] * 9), "61 digits 0 asked for, but only 60 are available"),
        (torch.tensor([1, 2, 3]), "10 non-negative numbers"),
        (torch.tensor([-1] + [0] * 9), "10 non-negative numbers"),
    ],
)
def test_draw_by_class_refuses_impossible_counts(counts, message):
    with pytest.raises(ValueError, match=message):
        draw_by_class(torch.arange(600) % 10, counts)


@needs_mnist
def test_the_classifier_counts_real_digits_within_two_percent(cache):
    test = load_mnist("test")
    counts = count_digits(models.course_feature_space().classifier, to_uint8(test.images[:2000, 0]).numpy())
    truth = torch.bincount(test.labels[:2000], minlength=10)
    assert int(counts.sum()) == 2000 and int((counts - truth).abs().sum()) <= 40  # the classifier is 99% accurate


@needs_mnist
def test_real_digits_with_a_skewed_mix_score_worse_than_with_the_test_sets(cache):
    """Every draw at the skewed mix scores above every draw at the test set's (seen: 0.45-0.63 against 0.19-0.29)."""
    space, train = models.course_feature_space(), load_mnist("train")
    skewed = to_uint8(train.images[draw_by_class(train.labels, SKEWED, torch.Generator().manual_seed(7)), 0]).numpy()
    test_labels = load_mnist("test").labels
    floor = class_mix_floor(skewed, space.classifier, space.reference, train, test_labels, 3, torch.Generator())
    assert int((floor.counts - SKEWED).abs().sum()) <= 20  # the classifier reads back the mix it was drawn with
    assert torch.equal(floor.test_counts, counts_like(test_labels, 1000))
    assert floor.fids.shape == floor.test_mix_fids.shape == (3,)
    assert float(floor.fids.min()) > float(floor.test_mix_fids.max()) > 0


@needs_mnist
def test_the_command_prints_the_mix_and_both_floors(cache, tmp_path, capsys):
    train = load_mnist("train")
    path = tmp_path / "real.npz"
    np.savez_compressed(path, images=to_uint8(train.images[:500, 0]).numpy())
    assert fid.main([str(path), "--class-mix", "--json"]) == 0
    mix = json.loads(capsys.readouterr().out)["class_mix"]
    assert sum(mix["counts"]) == sum(mix["test_counts"]) == 500 and len(mix["fids"]) == len(mix["test_mix_fids"]) == 5
    assert fid.main([str(path), "--class-mix"]) == 0
    text = capsys.readouterr().out
    assert "class mix (digits 0-9 as the classifier reads them): " + " ".join(map(str, mix["counts"])) in text
    assert f"with the sample's mix: FID {np.mean(mix['fids']):.4f} (mean of 5 draws" in text


@needs_mnist
def test_floor_at_mix_scores_samples_smaller_than_the_feature_dimension(cache):
    """Notebook 06's quick mode scores 32 digits a row: the floor must be finite there too, if far above N = 1,000's."""
    space, train = models.course_feature_space(), load_mnist("train")
    counts = torch.tensor([3, 4, 3, 3, 3, 3, 3, 3, 3, 4])
    fids = floor_at_mix(counts, space.classifier, feature_stats(space.reference), train, 2, torch.Generator())
    assert fids.shape == (2,) and bool(torch.isfinite(fids).all()) and float(fids.min()) > 1
