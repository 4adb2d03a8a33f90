"""python -m diffusion_lesson.sample: write generated digits to an .npz file (notebooks 03-05).

The file holds ``images``, a uint8 array (N, 28, 28). The model is the shipped pretrained one
(--model pixel or latent) unless --checkpoint names another; its kind and noise schedule come from
the file. A latent model's (N, 4, 7, 7) samples are decoded by the autoencoder it was trained with
(or --autoencoder). The sampler is DDIM (50 steps) unless told otherwise.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from diffusion_lesson.checkpoints import CheckpointError, CheckpointKindError, atomic_write, load_checkpoint
from diffusion_lesson.cli.args import (
    add_device_flag,
    check_writable,
    device_from,
    existing_file,
    fail,
    non_negative_float,
    positive_int,
    run,
)  # fmt: skip
from diffusion_lesson.data import to_uint8
from diffusion_lesson.latent import decode_states
from diffusion_lesson.models import LoadedModel, load_model, pretrained_path
from diffusion_lesson.runtime import make_generator
from diffusion_lesson.samplers import VARIANCES, sample_ddim, sample_ddpm

KINDS = {"pixel": "unet", "latent": "latent-unet"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m diffusion_lesson.sample", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=positive_int, required=True, help="number of digits to generate")
    parser.add_argument("--seed", type=int, required=True, help="random seed (same seed, same digits on one device)")
    parser.add_argument("--out", type=Path, required=True, help="output file, .npz")
    parser.add_argument("--model", choices=tuple(KINDS), default="pixel", help="default: %(default)s")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a training checkpoint (default: shipped)")
    parser.add_argument("--autoencoder", type=Path, default=None, help="--model latent: the autoencoder to decode with")
    parser.add_argument("--sampler", choices=("ddpm", "ddim"), default="ddim", help="default: %(default)s")
    parser.add_argument("--steps", type=positive_int, default=50, help="DDIM steps (default: 50; DDPM uses all T)")
    parser.add_argument("--eta", type=non_negative_float, default=0.0, help="DDIM noise, 0 = deterministic")
    parser.add_argument("--variance", choices=VARIANCES, default="beta", help="DDPM's sigma_t^2 (default: beta)")
    parser.add_argument("--clip-x0", action="store_true", help="clip each predicted x0 to [-1, 1] (both samplers)")
    parser.add_argument("--batch-size", type=positive_int, default=1000, help="samples per forward pass")
    add_device_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_flags(parser, args)
    device = device_from(parser, args.device)
    try:
        loaded = _load(args, device)
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    if args.sampler == "ddim" and args.steps > loaded.schedule.T:
        parser.error(f"--steps must be at most T = {loaded.schedule.T}, the number of noise steps {loaded.path} "
                     f"was trained with; got {args.steps}: pass --steps {loaded.schedule.T} or fewer")  # fmt: skip
    print(f"sampling {loaded.description}")
    start = time.perf_counter()
    x0 = _sample(args, loaded, device)  # (N, C, H, W): pixels, or latents for a latent model
    if loaded.autoencoder is not None:
        x0 = decode_states(loaded.autoencoder, x0, args.batch_size)  # (N, 1, 28, 28)
    seconds = time.perf_counter() - start
    images = to_uint8(x0[:, 0]).cpu().numpy()
    try:  # atomic: a full disk or Ctrl-C leaves no half-written file
        atomic_write(args.out, lambda f: np.savez_compressed(f, images=images))
    except OSError as err:
        fail(parser, err.strerror or str(err))
    steps = loaded.schedule.T if args.sampler == "ddpm" else args.steps
    print(f"wrote {args.n} digits to {args.out} ({loaded.kind} {args.sampler}, {steps} steps, "
          f"{seconds:.1f} s on {device})")  # fmt: skip
    return 0


def _check_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.out.suffix != ".npz":
        parser.error(f"--out must end in .npz, got {args.out}")
    if not args.out.parent.is_dir():
        parser.error(f"--out: folder {args.out.parent} does not exist; create it or choose another")
    check_writable(parser, "--out", args.out.parent)
    existing_file(parser, "--checkpoint", args.checkpoint)
    existing_file(parser, "--autoencoder", args.autoencoder)
    if args.autoencoder is not None and args.model != "latent":
        parser.error("--autoencoder needs --model latent")


def _load(args: argparse.Namespace, device: torch.device) -> LoadedModel:
    """The model to sample: --checkpoint, or the shipped one of --model, refusing a file of another kind."""
    kind = KINDS[args.model]
    path = args.checkpoint or pretrained_path("mnist-unet" if kind == "unet" else "mnist-latent-unet")
    hint = "pass --model latent" if kind == "unet" else "leave out --model latent"
    flag = "--checkpoint: " if args.checkpoint else ""
    try:  # each file is read once on its own first, so that the message names the flag and a mix-up gets a hint
        load_checkpoint(path, (kind,))
    except CheckpointKindError as err:
        raise CheckpointError(f"{flag}{err}; sample only U-Nets, and for a latent model {hint}") from None
    except CheckpointError as err:
        raise CheckpointError(f"{flag}{err}") from None
    if args.autoencoder is not None:
        try:
            load_checkpoint(args.autoencoder, ("autoencoder",))
        except CheckpointError as err:
            raise CheckpointError(f"--autoencoder: {err}") from None
    return load_model(path, device, (kind,), autoencoder=args.autoencoder)


def _sample(args: argparse.Namespace, loaded: LoadedModel, device: torch.device) -> torch.Tensor:
    cfg = loaded.model.config
    shape = (args.n, cfg.in_channels, cfg.image_size, cfg.image_size)
    options = {"generator": make_generator(args.seed, device), "device": device, "batch_size": args.batch_size,
               "progress": True, "clip_x0": args.clip_x0}  # fmt: skip
    if args.sampler == "ddpm":
        return sample_ddpm(loaded.model, shape, loaded.schedule, variance=args.variance, **options).x0
    return sample_ddim(loaded.model, shape, loaded.schedule, steps=args.steps, eta=args.eta, **options).x0


if __name__ == "__main__":
    run(main)
