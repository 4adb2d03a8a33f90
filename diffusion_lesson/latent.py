"""Latent diffusion: the chapter 03-04 diffusion model run on the autoencoder's latents (notebook 05).

    training:  x0 = latent_scale * mean(q(z | image))   (B, 4, 7, 7), encoded once for the whole set
               then Algorithm 1 with the same U-Net, loss and loop as for pixels
    sampling:  z ~ N(0, I) (B, 4, 7, 7) --the same DDPM/DDIM samplers--> x0 --decode--> (B, 1, 28, 28)

Nothing in ``unet``, ``training`` or ``samplers`` knows it is looking at latents: the U-Net is
built with in_channels=4, image_size=7, patch_size=1, and the data set is a ``LabeledImages`` of
latents. A latent model only makes sense with the autoencoder whose latents it learned, so its
checkpoint (kind "latent-unet") records that autoencoder (``extra["autoencoder"]``) and its latent
scale, and ``models.load_model`` checks the pair.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffusion_lesson.autoencoder import Autoencoder, AutoencoderConfig
from diffusion_lesson.data import LabeledImages
from diffusion_lesson.unet import UNetConfig

# A two-level U-Net on 7x7 latents runs its second level at 4x4, which is 1/3 of the pixel model's
# 7x7 there, not 1/4; at the pixel model's width (32) it would cost 0.29 of its FLOPs per step, at
# 24 it costs 0.17 (benchmarks/latent_vs_pixel.py).
LATENT_BASE_CHANNELS = 24


def latent_unet_config(autoencoder_config: AutoencoderConfig, **options) -> UNetConfig:
    """The U-Net for latents: the pixel model's layout with in_channels=4, image_size=7, no space-to-depth
    and base_channels=LATENT_BASE_CHANNELS unless ``options`` say otherwise."""
    channels, size, _ = autoencoder_config.latent_shape
    options = {"base_channels": LATENT_BASE_CHANNELS, **options}
    return UNetConfig(in_channels=channels, image_size=size, patch_size=1, **options)


@torch.no_grad()
def encode_dataset(autoencoder: Autoencoder, data: LabeledImages, batch_size: int = 1000) -> LabeledImages:
    """The whole set encoded once: scaled posterior means (N, 4, 7, 7) with the same labels, on data's device."""
    latents = [autoencoder.encode(data.images[i : i + batch_size]) for i in range(0, len(data.images), batch_size)]
    return LabeledImages(torch.cat(latents), data.labels)


@torch.no_grad()
def decode_states(autoencoder: Autoencoder, states: Tensor, batch_size: int = 1000) -> Tensor:
    """Decode latents of any leading shape, e.g. a trajectory (S, B, 4, 7, 7) -> (S, B, 1, 28, 28)."""
    lead = states.shape[:-3]
    flat = states.reshape(-1, *states.shape[-3:])  # (S * B, 4, 7, 7)
    device = autoencoder.latent_scale.device
    images = [autoencoder.decode(flat[i : i + batch_size].to(device)).cpu() for i in range(0, len(flat), batch_size)]
    return torch.cat(images).reshape(*lead, *images[0].shape[1:])


def latent_extra(autoencoder: Autoencoder, autoencoder_source: str) -> dict:
    """What a latent model's checkpoint records about its autoencoder (``TrainState.extra``)."""
    return {"autoencoder": autoencoder_source, "latent_scale": autoencoder.latent_scale.item()}
