"""python -m diffusion_lesson.sample: write generated digits to an .npz file (notebooks 03-04).

The file holds ``images``, a uint8 array (N, 28, 28). The model is the shipped pretrained one
unless --checkpoint names another; the sampler is DDIM (50 steps) unless told otherwise.
--model latent samples (N, 4, 7, 7) latents with the same samplers and decodes them (notebook 05):
the shipped latent model and autoencoder, or --checkpoint with the autoencoder it recorded (or
--autoencoder).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from diffusion_lesson.checkpoints import load_checkpoint, load_unet
from diffusion_lesson.data import to_uint8
from diffusion_lesson.latent import load_latent_pair
from diffusion_lesson.pretrained import pretrained_path
from diffusion_lesson.runtime import get_device, make_generator
from diffusion_lesson.samplers import VARIANCES, sample_ddim, sample_ddpm
from diffusion_lesson.schedules import make_schedule
from diffusion_lesson.train import positive_int


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m diffusion_lesson.sample", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=positive_int, required=True, help="number of digits to generate")
    parser.add_argument("--seed", type=int, required=True, help="random seed (same seed, same digits on one device)")
    parser.add_argument("--out", type=Path, required=True, help="output file, .npz")
    parser.add_argument("--model", choices=("pixel", "latent"), default="pixel", help="default: %(default)s")
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="a training checkpoint (default: the shipped model)"
    )
    parser.add_argument("--autoencoder", type=Path, default=None, help="--model latent: the autoencoder to decode with")
    parser.add_argument("--sampler", choices=("ddpm", "ddim"), default="ddim", help="default: %(default)s")
    parser.add_argument(
        "--steps", type=positive_int, default=50, help="DDIM steps (default: %(default)s; DDPM uses all T)"
    )
    parser.add_argument(
        "--eta", type=non_negative_float, default=0.0, help="DDIM noise, 0 = deterministic (default: 0)"
    )
    parser.add_argument("--variance", choices=VARIANCES, default="beta", help="DDPM's sigma_t^2 (default: %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=1000, help="samples per forward pass")
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best available)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out.suffix != ".npz":
        parser.error(f"--out must end in .npz, got {args.out}")
    if not args.out.parent.is_dir():
        parser.error(f"--out: folder {args.out.parent} does not exist")
    try:
        device = get_device(args.device)
        for flag, path in (("--checkpoint", args.checkpoint), ("--autoencoder", args.autoencoder)):
            if path is not None and not path.is_file():
                parser.error(f"{flag}: no file at {path}")
        if args.autoencoder is not None and args.model != "latent":
            parser.error("--autoencoder needs --model latent")
        decode = None
        if args.model == "latent":
            if args.checkpoint is not None:
                pair = load_latent_pair(args.checkpoint, args.autoencoder, device)
            else:  # the shipped pair (the shipped autoencoder unless told otherwise)
                shipped = pretrained_path("mnist-latent-unet")
                pair = load_latent_pair(shipped, args.autoencoder or pretrained_path("mnist-autoencoder"), device)
            model, schedule, decode = pair.unet, pair.schedule, pair.autoencoder.decode
        else:
            path = args.checkpoint or pretrained_path("mnist-unet")
            saved = load_checkpoint(path)
            if saved.extra.get("kind") in ("autoencoder", "latent-unet"):
                raise ValueError(f"{path} holds a{'n' * (saved.extra['kind'] == 'autoencoder')} {saved.extra['kind']}, "
                                 "not a pixel-space model; for a latent model pass --model latent")  # fmt: skip
            model, saved = load_unet(path, device), saved.schedule
            schedule = make_schedule(saved["name"], saved["T"]).to(device)
        if args.sampler == "ddim" and args.steps > schedule.T:
            parser.error(f"--steps must be at most T = {schedule.T}, got {args.steps}")
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        parser.error(str(err))
    cfg = model.config
    shape = (args.n, cfg.in_channels, cfg.image_size, cfg.image_size)
    options = {
        "generator": make_generator(args.seed, device),
        "device": device,
        "batch_size": args.batch_size,
        "progress": True,
    }
    start = time.perf_counter()
    if args.sampler == "ddpm":
        samples = sample_ddpm(model, shape, schedule, variance=args.variance, **options)
    else:
        samples = sample_ddim(model, shape, schedule, steps=args.steps, eta=args.eta, **options)
    x0 = samples.x0 if decode is None else _decode(decode, samples.x0, args.batch_size)  # (N, 1, 28, 28)
    seconds = time.perf_counter() - start
    images = to_uint8(x0[:, 0]).cpu().numpy()  # (N, 28, 28)
    np.savez_compressed(args.out, images=images)
    steps = schedule.T if args.sampler == "ddpm" else args.steps
    print(
        f"wrote {args.n} digits to {args.out} ({args.model} {args.sampler}, {steps} steps, {seconds:.1f} s on {device})"
    )
    return 0


@torch.no_grad()
def _decode(decode, latents: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Decode (N, 4, 7, 7) latents to (N, 1, 28, 28) images in chunks."""
    return torch.cat([decode(latents[i : i + batch_size]) for i in range(0, len(latents), batch_size)])


if __name__ == "__main__":
    sys.exit(main())
