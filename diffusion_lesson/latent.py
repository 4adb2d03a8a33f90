"""Latent diffusion: the chapter 03-04 diffusion model run on the autoencoder's latents (notebook 05).

    training:  x0 = latent_scale * mean(q(z | image))   (B, 4, 7, 7), encoded once for the whole set
               then Algorithm 1 with the same U-Net, loss and loop as for pixels
    sampling:  z ~ N(0, I) (B, 4, 7, 7) --the same DDPM/DDIM samplers--> x0 --decode--> (B, 1, 28, 28)

Nothing in ``unet``, ``training`` or ``samplers`` knows it is looking at latents: the U-Net is
built with in_channels=4, image_size=7, patch_size=1, and the data set is a ``LabeledImages`` of
latents. A latent model only makes sense with the autoencoder whose latents it learned, so its
checkpoint records that autoencoder (``extra["autoencoder"]``) and its latent scale, and loading
checks the pair.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from diffusion_lesson.autoencoder import Autoencoder, AutoencoderConfig, load_autoencoder
from diffusion_lesson.checkpoints import load_checkpoint, load_unet
from diffusion_lesson.data import LabeledImages
from diffusion_lesson.pretrained import manifest, pretrained_path, runs_dir
from diffusion_lesson.schedules import Schedule, make_schedule
from diffusion_lesson.training import simple_loss
from diffusion_lesson.unet import UNet, UNetConfig

# A two-level U-Net on 7x7 latents runs its second level at 4x4, which is 1/3 of the pixel model's
# 7x7 there, not 1/4; at the pixel model's width (32) it would cost 0.29 of its FLOPs per step, at
# 24 it costs 0.17 (benchmarks/latent_vs_pixel.py).
LATENT_BASE_CHANNELS = 24


class LatentModel(NamedTuple):
    """A latent U-Net, the autoencoder whose latents it learned, its noise schedule and where they came from."""

    unet: UNet
    autoencoder: Autoencoder
    schedule: Schedule
    description: str


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
    return {"kind": "latent-unet", "autoencoder": autoencoder_source, "latent_scale": autoencoder.latent_scale.item()}


def load_latent_pair(
    unet_path: str | os.PathLike,
    autoencoder_path: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    description: str = "",
) -> LatentModel:
    """A latent U-Net checkpoint and its autoencoder (the one it records, unless ``autoencoder_path``).

    Raises ValueError when the checkpoint is not a latent model or the autoencoder's latent scale
    differs from the one the model was trained with (a different autoencoder).
    """
    ckpt = load_checkpoint(unet_path)
    if ckpt.extra.get("kind") != "latent-unet":
        raise ValueError(f"{unet_path} is not a latent diffusion model (train one with --model latent)")
    autoencoder_path = Path(autoencoder_path or _find(ckpt.extra["autoencoder"]))
    autoencoder = load_autoencoder(autoencoder_path, device)
    expected, found = ckpt.extra["latent_scale"], autoencoder.latent_scale.item()
    if not math.isclose(expected, found, rel_tol=1e-4):
        raise ValueError(
            f"{unet_path} was trained on latents scaled by {expected:.5g}, but the autoencoder {autoencoder_path} "
            f"scales by {found:.5g}: they do not belong together"
        )
    schedule = make_schedule(ckpt.schedule["name"], ckpt.schedule["T"]).to(device)
    return LatentModel(load_unet(unet_path, device), autoencoder, schedule, description or f"{unet_path}")


def load_course_latent_model(device: torch.device | str = "cpu", prefer_own: bool = True) -> LatentModel:
    """runs/mnist-latent-unet.pt with its own autoencoder if it exists (and ``prefer_own``), else the shipped pair."""
    own = runs_dir() / "mnist-latent-unet.pt"
    if prefer_own and own.is_file():
        step = load_checkpoint(own).step
        return load_latent_pair(own, None, device, f"your own latent model from {own} ({step} training steps)")
    path = pretrained_path("mnist-latent-unet")
    description = f"the shipped latent model {path.name} with the shipped autoencoder"
    return load_latent_pair(path, pretrained_path("mnist-autoencoder"), device, description)


class StepCost(NamedTuple):
    """Wall time in milliseconds of one sampling step (a forward pass without gradients) and of one
    training step (simple loss, backward, AdamW update), each the best of several timings, and the
    forward pass's floating-point operations per image (counted, so free of timing noise)."""

    sample_ms: float
    train_ms: float
    mflops_per_image: float


def measure_step_costs(
    models: Mapping[str, UNet],
    schedule: Schedule,
    batch_size: int = 128,
    repeats: int = 10,
    device: torch.device | str = "cpu",
) -> dict[str, StepCost]:
    """Time each model at its own input shape (pixels or latents) on random inputs; trains copies, not the models.

    The models take turns at every repeat, so a busy spell on a shared machine hits all of them
    alike, and each figure is the best of ``repeats`` timings after a warm-up (the least disturbed
    one, as Python's timeit advises).
    """
    device = torch.device(device)
    steps = {name: _step_functions(model, schedule, batch_size, device) for name, model in models.items()}
    mflops = {}
    for name, (sample_step, train_step) in steps.items():
        with FlopCounterMode(display=False) as counter:
            sample_step()  # also the warm-up
        mflops[name] = counter.get_total_flops() / batch_size / 1e6
        train_step()
    times = {name: ([], []) for name in models}
    for _ in range(repeats):
        for kind in (0, 1):  # sampling steps of every model, then training steps
            for name, functions in steps.items():
                times[name][kind].append(_seconds(functions[kind], device))
    return {name: StepCost(1000 * min(s), 1000 * min(t), mflops[name]) for name, (s, t) in times.items()}


def _step_functions(model: UNet, schedule: Schedule, batch_size: int, device: torch.device):
    cfg = model.config
    x = torch.randn(batch_size, cfg.in_channels, cfg.image_size, cfg.image_size, device=device)
    t = torch.full((batch_size,), schedule.T // 2, dtype=torch.long, device=device)
    trainee = copy.deepcopy(model).to(device).train()
    optimizer = torch.optim.AdamW(trainee.parameters(), lr=1e-4)

    def sample_step() -> None:
        with torch.no_grad():
            model(x, t)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        simple_loss(trainee, x, schedule).backward()
        optimizer.step()

    return sample_step, train_step


def _seconds(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _find(recorded: str) -> Path:
    """The autoencoder a latent checkpoint names: a shipped model's name, a path, or a path in the checkout."""
    if recorded in manifest():
        return pretrained_path(recorded)
    for candidate in (Path(recorded), runs_dir().parent / recorded):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"the autoencoder this latent model was trained with, {recorded}, is not there; pass it")
