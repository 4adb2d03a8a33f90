"""Chapter 05: the autoencoder's shapes and errors, its latent scale, a short training run, and latent
diffusion through the unchanged U-Net, loss, loop and samplers."""

import pytest
import torch

from diffusion_lesson import autoencoder as ae_module
from diffusion_lesson.autoencoder import (
    Autoencoder,
    AutoencoderConfig,
    AutoencoderObjective,
    fit_latent_scale,
    reconstruction_error,
)
from diffusion_lesson.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from diffusion_lesson.cli.finish import finish_run
from diffusion_lesson.data import DATA_ENV_VAR, LabeledImages, data_root, load_mnist
from diffusion_lesson.latent import decode_states, encode_dataset, latent_extra, latent_unet_config
from diffusion_lesson.losses import DiffusionObjective
from diffusion_lesson.models import load_course_model, load_model
from diffusion_lesson.runtime import make_generator
from diffusion_lesson.samplers import sample_ddim, sample_ddpm
from diffusion_lesson.schedules import make_schedule
from diffusion_lesson.training import TrainConfig, start_training, train
from diffusion_lesson.unet import UNet

needs_mnist = pytest.mark.skipif(
    not (data_root() / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file(), reason=f"MNIST not under {DATA_ENV_VAR}"
)
TINY = AutoencoderConfig(widths=(16, 32))


@pytest.fixture(scope="module")
def mnist_test():
    if not (data_root() / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.skip("MNIST not available")
    return load_mnist("test")


def test_encoder_and_decoder_shapes():
    model = Autoencoder(AutoencoderConfig(latent_channels=3)).eval()
    x = torch.rand(5, 1, 28, 28) * 2 - 1
    mean, logvar = model.posterior(x)
    assert mean.shape == logvar.shape == (5, 3, 7, 7) == (5, *model.config.latent_shape)
    assert model.encode(x).shape == (5, 3, 7, 7)
    assert model.decode(torch.randn(5, 3, 7, 7)).shape == (5, 1, 28, 28)
    rec, mean, logvar = model(x, noise=torch.randn(5, 3, 7, 7))
    assert rec.shape == x.shape


@pytest.mark.parametrize(
    ("call", "shape", "message"),
    [
        ("encode", (2, 28, 28), r"images must have shape \(B, 1, 28, 28\), got \(2, 28, 28\)"),
        ("encode", (2, 3, 28, 28), r"images must have shape \(B, 1, 28, 28\), got \(2, 3, 28, 28\)"),
        ("encode", (2, 1, 32, 32), r"images must have shape \(B, 1, 28, 28\), got \(2, 1, 32, 32\)"),
        ("decode", (2, 1, 28, 28), r"latents must have shape \(B, 4, 7, 7\), got \(2, 1, 28, 28\)"),
        ("decode", (2, 4, 8, 8), r"latents must have shape \(B, 4, 7, 7\), got \(2, 4, 8, 8\)"),
    ],
)
def test_bad_input_shapes_say_what_was_expected(call, shape, message):
    with pytest.raises(ValueError, match=message):
        getattr(Autoencoder(TINY), call)(torch.zeros(shape))


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="multiple of 4"):
        AutoencoderConfig(image_size=30)
    with pytest.raises(ValueError, match="divisible by norm_groups"):
        AutoencoderConfig(widths=(12, 32))
    with pytest.raises(ValueError, match="unknown AutoencoderConfig keys"):
        AutoencoderConfig.from_dict({**TINY.to_dict(), "depth": 3})
    assert AutoencoderConfig.from_dict(TINY.to_dict()) == TINY


def test_latent_scale_gives_unit_variance_on_the_batch_it_was_fit_on():
    torch.manual_seed(0)
    model = Autoencoder(TINY).eval()
    x = torch.rand(256, 1, 28, 28) * 2 - 1
    unscaled_std = model.encode(x).std().item()
    scale = fit_latent_scale(model, x, batch_size=100)
    assert scale == pytest.approx(1 / unscaled_std, rel=1e-5) and model.latent_scale.item() == pytest.approx(scale)
    assert model.encode(x).std().item() == pytest.approx(1.0, abs=1e-4)
    z = torch.randn(4, *TINY.latent_shape)
    # decode undoes the scale: scaled latents decode like the unscaled ones fed to the decoder
    torch.testing.assert_close(model.decode(z), model.decoder(z / scale))


@needs_mnist
def test_short_training_run_reconstructs_held_out_digits(mnist_test, tmp_path):
    """150 steps of batch 32 on 2,000 training digits (seed 0): held-out MSE below 0.08 per pixel in [-1, 1].

    For scale: predicting the mean training image gives 0.26 on the same 500 digits; this run
    measured 0.045 when the test was written (the shipped autoencoder: 0.0046).
    """
    train_data = LabeledImages(load_mnist("train").images[:2000], torch.zeros(2000, dtype=torch.long))
    held_out = mnist_test.images[:500]
    config = TrainConfig(steps=150, batch_size=32, lr=3e-3, warmup_steps=20, ema_decay=0.0, decay_lr=False, grad_clip=0)
    torch.manual_seed(0)
    state = start_training(Autoencoder(TINY), AutoencoderObjective(), config, kind="autoencoder")
    train(state, train_data, checkpoint_path=tmp_path / "ae.pt", progress=False)
    finish_run(state, train_data, tmp_path / "ae.pt")  # fits the latent scale into the EMA weights, saves again
    ema_model = state.ema_model()
    mse = reconstruction_error(ema_model, held_out)
    baseline = (held_out - train_data.images.mean(0)).square().mean().item()
    assert mse < 0.08 < baseline, (mse, baseline)
    assert ema_model.encode(train_data.images).std().item() == pytest.approx(1.0, abs=1e-3)
    # the checkpoint holds only plain data (weights_only) and brings back the same model and scale
    raw = torch.load(tmp_path / "ae.pt", weights_only=True)
    assert raw["schedule"] is None and raw["kind"] == "autoencoder"
    loaded = load_model(tmp_path / "ae.pt").model
    assert loaded.latent_scale.item() == pytest.approx(ema_model.latent_scale.item())
    torch.testing.assert_close(loaded.encode(held_out[:8]), ema_model.encode(held_out[:8]))


def test_ctrl_c_stops_after_the_step_and_saves(tmp_path, monkeypatch):
    images = torch.rand(64, 1, 28, 28) * 2 - 1
    real, calls = ae_module.autoencoder_loss, []

    def interrupting(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ae_module, "autoencoder_loss", interrupting)
    state = start_training(Autoencoder(TINY), AutoencoderObjective(), TrainConfig(steps=10, batch_size=8),
                           kind="autoencoder")  # fmt: skip
    train(state, LabeledImages(images, torch.zeros(64, dtype=torch.long)), checkpoint_path=tmp_path / "ae.pt",
          progress=False)  # fmt: skip
    assert state.step == 3 and len(state.losses) == 3
    assert torch.load(tmp_path / "ae.pt", weights_only=True)["step"] == 3


@needs_mnist
def test_shipped_autoencoder_round_trip(mnist_test):
    """decode(encode(x)) of 1,000 held-out digits: MSE below 0.01 per pixel in [-1, 1] (measured 0.0046)."""
    loaded = load_course_model("mnist-autoencoder", prefer_own=False)
    x = mnist_test.images[:1000]
    assert reconstruction_error(loaded.model, x) < 0.01
    # its scale, fit on the training set, brings held-out latents near unit variance too
    assert loaded.model.encode(x).std().item() == pytest.approx(1.0, abs=0.1)


def test_latent_model_runs_through_the_same_training_loop_and_samplers(tmp_path):
    autoencoder = Autoencoder(TINY).eval()
    images = LabeledImages(torch.rand(32, 1, 28, 28) * 2 - 1, torch.arange(32) % 10)
    fit_latent_scale(autoencoder, images.images)
    latents = encode_dataset(autoencoder, images, batch_size=10)
    assert latents.images.shape == (32, 4, 7, 7) and torch.equal(latents.labels, images.labels)
    config = latent_unet_config(autoencoder.config, base_channels=8)
    assert (config.in_channels, config.image_size, config.patch_size) == (4, 7, 1)
    objective = DiffusionObjective(make_schedule("linear", 20))
    state = start_training(
        UNet(config), objective, TrainConfig(steps=3, batch_size=4, warmup_steps=1), kind="latent-unet"
    )
    state.extra = latent_extra(autoencoder, str(tmp_path / "tiny-ae.pt"))
    train(state, latents, checkpoint_path=tmp_path / "latent.pt", progress=False)
    assert state.step == 3 and len(state.losses) == 3

    schedule, model = make_schedule("linear", 20), state.ema_model()
    ddim = sample_ddim(model, (3, 4, 7, 7), schedule, steps=5, generator=make_generator(0), return_trajectory=True)
    ddpm = sample_ddpm(model, (3, 4, 7, 7), schedule, generator=make_generator(0))
    assert ddim.x0.shape == ddpm.x0.shape == (3, 4, 7, 7) and ddim.trajectory.xt.shape == (5, 3, 4, 7, 7)
    assert decode_states(autoencoder, ddim.trajectory.x0_pred).shape == (5, 3, 1, 28, 28)

    save_checkpoint(tmp_path / "tiny-ae.pt", kind="autoencoder", model=autoencoder, model_config=TINY.to_dict())
    pair = load_model(tmp_path / "latent.pt")  # finds the autoencoder it records
    assert pair.model.config == config and pair.schedule.T == 20 and pair.autoencoder.config == TINY
    assert load_checkpoint(tmp_path / "latent.pt").kind == "latent-unet"
    other = Autoencoder(TINY)
    save_checkpoint(tmp_path / "other.pt", kind="autoencoder", model=other, model_config=TINY.to_dict())
    with pytest.raises(CheckpointError, match="do not belong together"):
        load_model(tmp_path / "latent.pt", autoencoder=tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="holds a model of kind 'latent-unet', but this needs autoencoder"):
        load_model(tmp_path / "latent.pt", kinds=("autoencoder",))


def test_shipped_latent_model_samples_decode_to_digits_shape():
    pair = load_course_model("mnist-latent-unet", prefer_own=False)
    assert pair.model.config.in_channels == 4 and "shipped" in pair.description
    z = sample_ddim(pair.model, (2, 4, 7, 7), pair.schedule, steps=3, generator=make_generator(0)).x0
    images = decode_states(pair.autoencoder, z)
    assert images.shape == (2, 1, 28, 28) and torch.isfinite(images).all()
