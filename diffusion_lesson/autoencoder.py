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

import argparse
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusion_lesson.checkpoints import load_checkpoint, load_weights, save_checkpoint
from diffusion_lesson.runtime import make_generator, randn_like
from diffusion_lesson.training import EMA, _sigint_deferred


@dataclass(frozen=True)
class AutoencoderConfig:
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

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> AutoencoderConfig:
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown AutoencoderConfig keys {unknown}")
        return cls(**d)


@dataclass(frozen=True)
class AutoencoderTrainConfig:
    """Settings of one autoencoder run: AdamW at a flat lr after a linear warm-up, EMA of the weights."""

    steps: int = 2000
    batch_size: int = 128
    lr: float = 2e-3
    warmup_steps: int = 100
    kl_weight: float = 1e-4
    ema_decay: float = 0.999
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


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


class AutoencoderRun(NamedTuple):
    """What ``train_autoencoder`` hands back: the trained model, its EMA copy (use it) and the loss history."""

    model: Autoencoder
    ema_model: Autoencoder
    losses: list[float]
    step: int


def train_autoencoder(
    model: Autoencoder,
    images: Tensor,
    config: AutoencoderTrainConfig,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int = 1000,
    progress: bool = True,
) -> AutoencoderRun:
    """Train on images (N, 1, 28, 28) in [-1, 1] on the model's device; Ctrl-C stops after the current step.

    Batches are drawn by index from one generator seeded with config.seed. Every save (each
    ``checkpoint_every`` steps and at the end) first fits the EMA model's latent scale on ``images``.
    """
    from tqdm.auto import tqdm  # here: tqdm.auto picks the notebook widget at call time

    device = images.device
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    ema, generator = EMA(model, config.ema_decay), make_generator(config.seed, device)
    ema_model = Autoencoder(model.config).to(device).eval()
    losses: list[float] = []
    step = 0

    def save() -> None:
        ema.copy_to(ema_model)
        scale = fit_latent_scale(ema_model, images)
        ema.shadow["latent_scale"].fill_(scale)
        model.latent_scale.fill_(scale)
        save_checkpoint(
            checkpoint_path, model=model, model_config=model.config.to_dict(), train_config=config.to_dict(),
            step=step, ema=ema.state_dict(), optimizer=optimizer.state_dict(), generator=generator, losses=losses,
            extra={"kind": "autoencoder", "latent_scale": scale},
        )  # fmt: skip

    bar = tqdm(total=config.steps, disable=not progress, desc="autoencoder")
    try:
        while step < config.steps:
            with _sigint_deferred():  # a step is short: Ctrl-C waits for it to finish
                index = torch.randint(0, len(images), (config.batch_size,), generator=generator, device=device)
                parts = autoencoder_loss(model, images[index], config.kl_weight, generator)
                optimizer.zero_grad(set_to_none=True)
                parts.loss.backward()
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * min(1.0, (step + 1) / max(1, config.warmup_steps))
                optimizer.step()
                ema.update(model)
                step += 1
            losses.append(parts.reconstruction.item())
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(mse=f"{sum(losses[-50:]) / 50:.4f}", kl=f"{parts.kl.item():.2f}")
            if checkpoint_path is not None and step % checkpoint_every == 0 and step < config.steps:
                save()
    except KeyboardInterrupt:
        bar.write(f"interrupted: stopped cleanly after step {step}")
    finally:
        bar.close()
    model.eval()
    if checkpoint_path is not None:
        save()
    else:
        ema.copy_to(ema_model)
        fit_latent_scale(ema_model, images)
    return AutoencoderRun(model, ema_model, losses, step)


def load_autoencoder(path: str | os.PathLike, device: str | torch.device = "cpu", use_ema: bool = True) -> Autoencoder:
    """The autoencoder stored in a checkpoint (EMA weights when present and ``use_ema``), in eval mode."""
    ckpt = load_checkpoint(path)
    if ckpt.extra.get("kind") != "autoencoder":
        raise ValueError(f"{path} is not an autoencoder checkpoint (is it a U-Net? use load_unet)")
    model = Autoencoder(AutoencoderConfig.from_dict(ckpt.model_config))
    load_weights(model, ckpt.ema if use_ema and ckpt.ema is not None else ckpt.model)
    return model.to(device).eval()


def _check_shape(x: Tensor, expected: tuple[int, ...], what: str) -> None:
    if x.ndim != 4 or tuple(x.shape[1:]) != expected:
        raise ValueError(f"{what} must have shape (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")


def main(argv: list[str] | None = None) -> int:
    """python -m diffusion_lesson.autoencoder: train the autoencoder, write <out> and its sidecar <out>.json."""
    from diffusion_lesson.data import load_mnist
    from diffusion_lesson.pretrained import runs_dir, write_sidecar
    from diffusion_lesson.runtime import get_device
    from diffusion_lesson.train import positive_int

    run = AutoencoderTrainConfig()
    parser = argparse.ArgumentParser(prog="python -m diffusion_lesson.autoencoder", description=main.__doc__)
    parser.add_argument("--steps", type=positive_int, default=run.steps, help="default: %(default)s")
    parser.add_argument("--batch-size", type=positive_int, default=run.batch_size, help="default: %(default)s")
    parser.add_argument("--lr", type=float, default=run.lr, help="default: %(default)s")
    parser.add_argument("--kl-weight", type=float, default=run.kl_weight, help="default: %(default)s")
    parser.add_argument("--latent-channels", type=positive_int, default=4, help="default: %(default)s")
    parser.add_argument("--seed", type=int, default=run.seed, help="default: %(default)s")
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best available)")
    parser.add_argument("--out", type=Path, default=None, help="default: runs/mnist-autoencoder.pt")
    parser.add_argument("--checkpoint-every", type=positive_int, default=1000, help="default: %(default)s")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    out = args.out or runs_dir() / "mnist-autoencoder.pt"
    if out.exists() and not args.overwrite:
        parser.error(f"{out} exists: pass --overwrite to replace it, or another --out")
    try:
        device = get_device(args.device)
        config = AutoencoderTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                        kl_weight=args.kl_weight, seed=args.seed)  # fmt: skip
        model = Autoencoder(AutoencoderConfig(latent_channels=args.latent_channels))
    except (ValueError, RuntimeError) as err:
        parser.error(str(err))
    train_images = load_mnist("train", device=device).images
    print(f"training the autoencoder on {device}: {sum(p.numel() for p in model.parameters()):,} parameters")
    start = time.perf_counter()
    result = train_autoencoder(model, train_images, config, out, args.checkpoint_every, progress=not args.quiet)
    seconds = time.perf_counter() - start
    write_sidecar(out, "python -m diffusion_lesson.autoencoder", argv, result.step, seconds, device)
    test_mse = reconstruction_error(result.ema_model, load_mnist("test", device=device).images)
    print(f"done: {result.step} steps in {seconds:.0f} s, latent scale {result.ema_model.latent_scale.item():.4f}, "
          f"held-out reconstruction MSE {test_mse:.5f} (pixels in [-1, 1]), saved {out}")  # fmt: skip
    return 0 if result.step == config.steps else 130


if __name__ == "__main__":
    sys.exit(main())
