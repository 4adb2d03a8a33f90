"""The course's MNIST classifier, whose penultimate layer gives FID's features (notebook 06).

FID needs a feature map that knows what digits look like. Inception-v3, the usual choice, was
trained on ImageNet photos at 299x299; a 28x28 digit blown up to that size is far from anything it
has seen. This small CNN is trained on MNIST itself (python -m diffusion_lesson.train --model classifier), and
the 128 activations before its last layer are the features:

    x (B, 1, 28, 28) in [-1, 1]
      [conv 3x3 -> BatchNorm -> ReLU] x 2, 32 channels, maxpool  -> (B, 32, 14, 14)
      [conv 3x3 -> BatchNorm -> ReLU] x 2, 64 channels, maxpool  -> (B, 64, 7, 7)
      flatten -> linear                                          -> features (B, 128) x feature_scale
      ReLU -> dropout -> linear                                  -> logits (B, 10)

The features are taken before the ReLU, so no unit is ever constant at 0 and the covariance keeps
full rank. ``feature_scale`` is fixed after training so that the mean of |f|^2 / 128 over the
training digits is 1: KID's kernel (x . y / d + 1)^3 assumes features of that size.
BatchNorm and dropout behave differently in train mode, so features are always taken in eval mode
(``features`` switches the network to eval itself).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusion_lesson.data import LabeledImages
from diffusion_lesson.settings import Settings

FEATURE_DIM = 128


@dataclass(frozen=True)
class ClassifierConfig(Settings):
    """Settings that define the network: conv width, feature size, dropout before the last layer."""

    width: int = 32
    feature_dim: int = FEATURE_DIM
    dropout: float = 0.3


class MnistClassifier(nn.Module):
    """Digit classifier; ``features(x)`` is the (B, 128) penultimate activation used by FID."""

    def __init__(self, config: ClassifierConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or ClassifierConfig()
        width, feature_dim = cfg.width, cfg.feature_dim

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

        self.body = nn.Sequential(
            *block(1, width), *block(width, width), nn.MaxPool2d(2),  # (B, w, 14, 14)
            *block(width, 2 * width), *block(2 * width, 2 * width), nn.MaxPool2d(2),  # (B, 2w, 7, 7)
            nn.Flatten(), nn.Linear(2 * width * 7 * 7, feature_dim),  # (B, feature_dim)
        )  # fmt: skip
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(feature_dim, 10))
        self.register_buffer("feature_scale", torch.ones(()))  # set by calibrate_feature_scale

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, 10) for digits x (B, 1, 28, 28) in [-1, 1]."""
        return self.head(self.body(check_digits(x)))

    def embed(self, x: Tensor) -> Tensor:
        """Scaled penultimate activations (B, 128) in whatever mode the network is in; FID uses ``features``."""
        return self.body(check_digits(x)) * self.feature_scale

    @torch.no_grad()
    def features(self, x: Tensor, batch_size: int = 1000) -> Tensor:
        """Penultimate activations (N, 128) float32 of digits x (N, 1, 28, 28) in [-1, 1].

        Puts the network in eval mode first: in train mode BatchNorm would use each batch's own
        statistics and the same digit would get different features in different batches.
        """
        self.eval()
        check_pixel_range(check_digits(x))
        device = next(self.parameters()).device
        parts = [self.embed(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, x.shape[0], batch_size)]
        return torch.cat(parts) if parts else torch.empty(0, self.config.feature_dim)


def check_digits(x: Tensor) -> Tensor:
    """Raise a clear error unless x is a float batch (B, 1, 28, 28); returns x."""
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
        raise ValueError(f"expected digits shaped (B, 1, 28, 28), got {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"expected float pixels in [-1, 1], got {x.dtype}; convert uint8 with data.to_unit_range")
    return x


def check_pixel_range(x: Tensor) -> Tensor:
    """Raise a clear error unless every pixel of x is a number in [-1, 1]; returns x (one pass over x)."""
    if x.numel() == 0:
        return x
    low, high = x.aminmax()
    if torch.isnan(low) or torch.isnan(high):
        raise ValueError("the images contain NaN (did the model or the sampler diverge?); they cannot be scored")
    if low < -1 or high > 1:
        raise ValueError(
            f"pixels must lie in [-1, 1], got values from {low.item():.4g} to {high.item():.4g}; "
            "convert uint8 pixels in [0, 255] with data.to_unit_range"
        )
    return x


@torch.no_grad()
def calibrate_feature_scale(model: MnistClassifier, images: Tensor) -> MnistClassifier:
    """Set feature_scale so that the mean of |features|^2 / feature_dim over ``images`` is 1; returns the model."""
    model.feature_scale.fill_(1.0)
    features = model.features(images).double()
    model.feature_scale.fill_(float(features.pow(2).mean().rsqrt()))
    return model


def random_shift(x: Tensor, max_shift: int, generator: torch.Generator | None = None) -> Tensor:
    """Translate each image by its own random (dy, dx) in [-max_shift, max_shift], filling with background."""
    B, _, H, W = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)  # background is -1 (black)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, B), generator=generator, device=x.device)
    rows = offsets[0].view(B, 1, 1) + torch.arange(H, device=x.device).view(1, H, 1)  # (B, H, 1)
    cols = offsets[1].view(B, 1, 1) + torch.arange(W, device=x.device).view(1, 1, W)  # (B, 1, W)
    batch = torch.arange(B, device=x.device).view(B, 1, 1)
    return padded[batch, 0, rows, cols].unsqueeze(1)  # (B, 1, H, W)


@torch.no_grad()
def accuracy(model: MnistClassifier, data: LabeledImages, batch_size: int = 1000) -> float:
    """Fraction of ``data`` classified correctly, in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, data.images.shape[0], batch_size):
        logits = model(data.images[i : i + batch_size].to(device))
        correct += int((logits.argmax(1).cpu() == data.labels[i : i + batch_size].cpu()).sum())
    return correct / data.images.shape[0]


@dataclass(frozen=True)
class ClassifierObjective(Settings):
    """Cross-entropy on digits shifted by up to ``max_shift`` pixels, for the training loop.

    The random shift is what lifts test accuracy above 99% in a couple of epochs.
    """

    max_shift: int = 2

    def loss(self, model: MnistClassifier, batch: LabeledImages, generator: torch.Generator) -> Tensor:
        return F.cross_entropy(model(random_shift(batch.images, self.max_shift, generator)), batch.labels)
