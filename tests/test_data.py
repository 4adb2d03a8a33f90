"""Data: the data-root setting, whole-split tensors in [-1, 1], batches by index, clear errors offline."""

import urllib.error
import urllib.request

import pytest
import torch

from diffusion_lesson.data import (
    DATA_ENV_VAR,
    DEFAULT_DATA_ROOT,
    DataNotFoundError,
    LabeledImages,
    data_root,
    load_mnist,
    random_batch,
    to_uint8,
    to_unit_range,
)


def _mnist_available() -> bool:
    return (data_root() / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()


needs_mnist = pytest.mark.skipif(not _mnist_available(), reason=f"MNIST not under {DATA_ENV_VAR}")


def test_data_root_follows_the_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path))
    assert data_root() == tmp_path
    monkeypatch.delenv(DATA_ENV_VAR)
    assert data_root() == DEFAULT_DATA_ROOT


@needs_mnist
def test_test_split_as_one_tensor():
    data = load_mnist("test")
    assert data.images.shape == (10_000, 1, 28, 28) and data.images.dtype == torch.float32
    assert data.images.min().item() == -1.0 and data.images.max().item() == 1.0
    assert data.labels.shape == (10_000,) and data.labels.dtype == torch.long
    assert torch.bincount(data.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@needs_mnist
def test_train_split_size():
    assert load_mnist("train").images.shape == (60_000, 1, 28, 28)


def test_missing_data_without_download_names_the_path(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path))
    with pytest.raises(DataNotFoundError) as info:
        load_mnist("test", download=False)
    message = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in message and DATA_ENV_VAR in message


def test_missing_data_offline_gives_a_clear_error(monkeypatch, tmp_path):
    """No network: every download attempt fails the way it does offline; the error says what to do."""

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path / "empty"))
    with pytest.raises(DataNotFoundError) as info:
        load_mnist("train")
    message = str(info.value)
    assert str(tmp_path / "empty" / "MNIST" / "raw") in message
    assert "download failed" in message and DATA_ENV_VAR in message


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"split": "valid"}, "split must be"), ({"dataset": "cifar"}, "unknown dataset")]
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_mnist(**kwargs)


def test_random_batch_draws_matching_pairs_by_index():
    images = torch.arange(50, dtype=torch.float32).reshape(50, 1, 1, 1)
    data = LabeledImages(images, torch.arange(50))
    batch = random_batch(data, 16, torch.Generator().manual_seed(0))
    assert batch.images.shape == (16, 1, 1, 1)
    assert torch.equal(batch.images.flatten().long(), batch.labels)  # image i still carries label i
    again = random_batch(data, 16, torch.Generator().manual_seed(0))
    assert torch.equal(batch.labels, again.labels)
    with pytest.raises(ValueError, match="batch_size"):
        random_batch(data, 0)


def test_pixel_range_round_trip():
    pixels = torch.arange(256, dtype=torch.uint8)
    x = to_unit_range(pixels)
    assert x[0].item() == -1.0 and x[-1].item() == 1.0
    assert torch.equal(to_uint8(x), pixels)
    with pytest.raises(TypeError, match="uint8"):
        to_unit_range(pixels.float())
