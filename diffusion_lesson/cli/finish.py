"""What a training command does once the loop stops: settle the buffers fitted on data, and say how it went.

The autoencoder's latent scale and the classifier's feature scale are not learned by gradient
descent: they are fitted on the training images after training, into the EMA weights (the ones
that get used and shipped), and the checkpoint is saved again. Each returns a one-line summary.
"""

from __future__ import annotations

from pathlib import Path

from diffusion_lesson.autoencoder import fit_latent_scale, reconstruction_error
from diffusion_lesson.classifier import accuracy, calibrate_feature_scale
from diffusion_lesson.data import LabeledImages, load_mnist
from diffusion_lesson.training import TrainState, save_training


def finish_run(state: TrainState, data: LabeledImages, out: Path, dataset: str = "mnist") -> str:
    """Fit data-dependent buffers into the EMA weights, re-save ``out``; returns a one-line summary."""
    if state.kind == "autoencoder":
        return _finish_autoencoder(state, data, out)
    if state.kind == "classifier":
        return _finish_classifier(state, data, out)
    recent = state.losses[-100:] or [float("nan")]
    return f"mean loss of the last {len(recent)} steps {sum(recent) / len(recent):.4f}"


def _finish_autoencoder(state: TrainState, data: LabeledImages, out: Path) -> str:
    ema_model = state.ema_model()
    scale = fit_latent_scale(ema_model, data.images)
    state.ema.shadow["latent_scale"].fill_(scale)
    state.model.latent_scale.fill_(scale)
    save_training(state, out)
    test = load_mnist("test", device=data.images.device).images
    return f"latent scale {scale:.4f}, held-out reconstruction MSE {reconstruction_error(ema_model, test):.5f}"


def _finish_classifier(state: TrainState, data: LabeledImages, out: Path) -> str:
    ema_model = calibrate_feature_scale(state.ema_model(), data.images)
    state.ema.shadow["feature_scale"].copy_(ema_model.feature_scale)
    test_accuracy = accuracy(ema_model, load_mnist("test", device=data.images.device))
    state.extra["test_accuracy"] = round(test_accuracy, 4)
    save_training(state, out)
    return f"test accuracy {test_accuracy:.4f}"
