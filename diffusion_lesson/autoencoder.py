"""The course's own autoencoder for latent diffusion (taught in notebook 05).

    x (B, 1, 28, 28) --encoder--> mean, logvar (B, 4, 7, 7) --z = mean [+ std * noise]--> decoder --> x_rec

A VAE with a light KL term, as in latent diffusion (Rombach et al. 2022), rather than a plain
autoencoder: a plain one may spread its codes over any scale and leave holes between them, and the
decoder has never seen the points in those holes. The KL term pulls q(z | x) = N(mean, exp(logvar))
towards N(0, I) and the sampled z teaches the decoder a small neighbourhood around every code, so
the latent space is smooth: straight lines between codes decode to digits, and so do the slightly
imperfect latents a diffusion model produces. Kept light (kl_weight 1e-4 against a per-pixel MSE)
it costs little reconstruction quality.

Loss, per batch:  mean_pixels (x_rec - x)^2  +  kl_weight * mean_latents KL(N(mean, var) || N(0, 1)),
with KL = 0.5 (mean^2 + var - 1 - logvar) per latent element.

latent_scale: the diffusion model expects data of roughly unit variance, so the latents are
multiplied by latent_scale = 1 / std(mean over the training set) before diffusion, and divided by it
before decoding (``encode`` and ``decode`` do both). It is computed from data after training and
kept as a buffer, so it travels inside the checkpoint with the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusion_lesson.data import LabeledImages
from diffusion_lesson.runtime import randn_like
from diffusion_lesson.settings import Settings


@dataclass(frozen=True)
class AutoencoderConfig(Settings):
    """Settings that define the network; stored in checkpoints as a plain dict (``to_dict``).

    The image is halved twice (space-to-depth, then a strided conv): 28x28 -> 14x14 -> 7x7.
    widths: channels at 14x14 and at 7x7; latent_channels: channels of the 7x7 latent.
    """

    in_channels: int = 1
    image_size: int = 28
    latent_channels: int = 4
    widths: tuple[int, int] = (32, 64)
    norm_groups: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if self.image_size % 4 or min(self.in_channels, self.image_size, self.latent_channels) < 1:
            raise ValueError(f"image_size must be a positive multiple of 4, got {self.image_size}")
        if len(self.widths) != 2 or any(w % self.norm_groups for w in self.widths):
            raise ValueError(f"widths must be two ints divisible by norm_groups {self.norm_groups}, got {self.widths}")

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one latent: (4, 7, 7) by default."""
        return (self.latent_channels, self.image_size // 4, self.image_size // 4)


class Block(nn.Module):
    """Residual GroupNorm-SiLU-conv: x + conv(silu(norm(x))), shape-preserving."""

    def __init__(self, ch: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch)
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(F.silu(self.norm(x)))


class Encoder(nn.Module):
    """x (B, 1, 28, 28) -> mean, logvar, each (B, latent_channels, 7, 7)."""

    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        w1, w2 = cfg.widths
        self.net = nn.Sequential(
            nn.PixelUnshuffle(2),  # (B, 4 C, 14, 14)
            nn.Conv2d(4 * cfg.in_channels, w1, 3, padding=1),
            Block(w1, cfg.norm_groups),
            nn.Conv2d(w1, w2, 3, stride=2, padding=1),  # (B, w2, 7, 7)
            Block(w2, cfg.norm_groups),
            Block(w2, cfg.norm_groups),
            nn.GroupNorm(cfg.norm_groups, w2),
            nn.SiLU(),
            nn.Conv2d(w2, 2 * cfg.latent_channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mean, logvar = self.net(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)


class Decoder(nn.Module):
    """z (B, latent_channels, 7, 7) -> x_rec (B, 1, 28, 28), unbounded (clip for display)."""

    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        w1, w2 = cfg.widths
        self.net = nn.Sequential(
            nn.Conv2d(cfg.latent_channels, w2, 3, padding=1),
            Block(w2, cfg.norm_groups),
            Block(w2, cfg.norm_groups),
            nn.Upsample(scale_factor=2, mode="nearest"),  # (B, w2, 14, 14)
            nn.Conv2d(w2, w1, 3, padding=1),
            Block(w1, cfg.norm_groups),
            nn.GroupNorm(cfg.norm_groups, w1),
            nn.SiLU(),
            nn.Conv2d(w1, 4 * cfg.in_channels, 3, padding=1),
            nn.PixelShuffle(2),  # (B, C, 28, 28)
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class Autoencoder(nn.Module):
    """Encoder, decoder and the latent scale; ``encode``/``decode`` work in scaled latents."""

    def __init__(self, config: AutoencoderConfig | None = None) -> None:
        super().__init__()
        self.config = config or AutoencoderConfig()
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)
        self.register_buffer("latent_scale", torch.tensor(1.0))  # set by ``fit_latent_scale``

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q(z | x): mean and logvar, each (B, latent_channels, 7, 7), unscaled."""
        _check_shape(x, (self.config.in_channels, self.config.image_size, self.config.image_size), "images")
        return self.encoder(x)

    def encode(self, x: Tensor) -> Tensor:
        """x (B, 1, 28, 28) in [-1, 1] -> scaled latents latent_scale * mean (B, 4, 7, 7), deterministic."""
        return self.posterior(x)[0] * self.latent_scale

    def decode(self, z: Tensor) -> Tensor:
        """Scaled latents (B, 4, 7, 7) -> images (B, 1, 28, 28), roughly in [-1, 1]."""
        _check_shape(z, self.config.latent_shape, "latents")
        return self.decoder(z / self.latent_scale)

    def forward(self, x: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Training pass: x -> (x_rec, mean, logvar), decoding z = mean + exp(logvar / 2) * noise (no noise: mean)."""
        mean, logvar = self.posterior(x)
        z = mean if noise is None else mean + torch.exp(0.5 * logvar) * noise
        return self.decoder(z), mean, logvar


class AutoencoderLoss(NamedTuple):
    """The training loss and its two parts (scalars)."""

    loss: Tensor
    reconstruction: Tensor
    kl: Tensor


def autoencoder_loss(
    model: Autoencoder, x: Tensor, kl_weight: float, generator: torch.Generator | None = None
) -> AutoencoderLoss:
    """mean (x_rec - x)^2 + kl_weight * mean KL(q(z | x) || N(0, I)); x: (B, 1, 28, 28) in [-1, 1]."""
    mean, logvar = model.posterior(x)
    z = mean + torch.exp(0.5 * logvar) * randn_like(mean, generator)  # reparameterisation
    reconstruction = F.mse_loss(model.decoder(z), x)
    kl = 0.5 * (mean.square() + logvar.exp() - 1 - logvar).mean()
    return AutoencoderLoss(reconstruction + kl_weight * kl, reconstruction, kl)


@torch.no_grad()
def fit_latent_scale(model: Autoencoder, images: Tensor, batch_size: int = 1000) -> float:
    """Set model.latent_scale = 1 / std of the posterior means of ``images`` (B, 1, 28, 28); returns it."""
    means = torch.cat([model.posterior(images[i : i + batch_size])[0] for i in range(0, len(images), batch_size)])
    scale = 1.0 / means.float().std().item()
    model.latent_scale.fill_(scale)
    return scale


@torch.no_grad()
def reconstruction_error(model: Autoencoder, images: Tensor, batch_size: int = 1000) -> float:
    """Mean squared error of decode(encode(x)) per pixel, for images (N, 1, 28, 28) in [-1, 1]."""
    total = 0.0
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size]
        total += F.mse_loss(model.decode(model.encode(x)), x, reduction="sum").item()
    return total / images.numel()


def _check_shape(x: Tensor, expected: tuple[int, ...], what: str) -> None:
    if x.ndim != 4 or tuple(x.shape[1:]) != expected:
        raise ValueError(f"{what} must have shape (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")


@dataclass(frozen=True)
class AutoencoderObjective(Settings):
    """``autoencoder_loss`` for the training loop (``training.train``); the batch's labels are not used."""

    kl_weight: float = 1e-4

    def loss(self, model: Autoencoder, batch: LabeledImages, generator: torch.Generator) -> Tensor:
        return autoencoder_loss(model, batch.images, self.kl_weight, generator).loss
