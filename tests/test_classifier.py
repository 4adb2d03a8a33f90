"""The course's MNIST classifier: shipped accuracy, eval-mode features, the shift augmentation."""

import pytest
import torch

from diffusion_lesson.checkpoints import CheckpointError, save_checkpoint
from diffusion_lesson.classifier import MnistClassifier, accuracy, calibrate_feature_scale, random_shift
from diffusion_lesson.data import DATA_ENV_VAR, data_root, load_mnist
from diffusion_lesson.models import load_course_model, load_model

needs_mnist = pytest.mark.skipif(
    not (data_root() / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file(), reason=f"MNIST not under {DATA_ENV_VAR}"
)


@needs_mnist
def test_shipped_classifier_reaches_99_percent_on_the_test_set():
    assert accuracy(load_course_model("mnist-classifier").model, load_mnist("test")) >= 0.99


def test_features_are_taken_in_eval_mode_whatever_mode_the_model_was_in():
    torch.manual_seed(0)
    model = MnistClassifier()
    x = torch.rand(64, 1, 28, 28) * 2 - 1
    model.train()
    first = model.features(x)
    model.train()
    again = model.features(x[:5], batch_size=2)  # other batches: BatchNorm must not use batch statistics
    assert first.shape == (64, 128) and first.dtype == torch.float32
    torch.testing.assert_close(again, first[:5])
    assert not model.training


def test_train_mode_would_change_the_features():
    # The mistake the eval switch guards against: BatchNorm in train mode normalises by each batch.
    torch.manual_seed(0)
    model = MnistClassifier().train()
    x = torch.rand(64, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        assert not torch.allclose(model.embed(x)[:5], model.embed(x[:5]))


def test_bad_input_is_refused_with_a_clear_error():
    model = MnistClassifier()
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\), got \(2, 28, 28\)"):
        model.features(torch.zeros(2, 28, 28))
    with pytest.raises(TypeError, match="to_unit_range"):
        model(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))


def test_random_shift_moves_each_image_within_the_limit():
    x = torch.full((200, 1, 28, 28), -1.0)
    x[:, 0, 14, 14] = 1.0  # one bright pixel in the middle
    shifted = random_shift(x, 2, torch.Generator().manual_seed(0))
    rows, cols = (shifted[:, 0] == 1).nonzero()[:, 1:].T
    assert shifted.shape == x.shape and int((shifted == 1).sum()) == 200  # nothing lost or duplicated
    assert (rows - 14).abs().max() == 2 and (cols - 14).abs().max() == 2  # every offset up to 2 is used
    assert torch.equal(random_shift(x, 0), x)


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = MnistClassifier().eval()
    path = save_checkpoint(tmp_path / "c.pt", kind="classifier", model=model, model_config=model.config.to_dict())
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    torch.testing.assert_close(load_model(path, kinds=("classifier",)).model.features(x), model.features(x))
    with pytest.raises(CheckpointError, match="kind 'classifier', but this needs unet"):
        load_model(path, kinds=("unet",))


def test_feature_scale_gives_unit_mean_square_features():
    torch.manual_seed(0)
    model = MnistClassifier()
    images = torch.rand(300, 1, 28, 28) * 2 - 1
    calibrate_feature_scale(model, images)
    assert model.features(images).double().pow(2).mean().item() == pytest.approx(1.0, rel=1e-6)
    assert model.feature_scale.item() != 1.0  # an untrained network's raw features are not of that size
