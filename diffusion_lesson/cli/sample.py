"""python -m diffusion_lesson.sample: write generated digits to an .npz file (notebooks 03-05, 07).

The file holds ``images``, a uint8 array (N, 28, 28), and ``made_by``, a JSON string saying how
they were made: the model file's name and sha256 (and a latent model's autoencoder's), the sampler
and its settings, the seed, N and the device (python -m diffusion_lesson.fid --record reads it).
The model is the shipped pretrained one (--model pixel or latent; with --digit the
class-conditional pixel model, with --prompt the text-conditioned latent model) unless --checkpoint
names another; its kind and noise schedule come from the file. A latent model's (N, 4, 7, 7)
samples are decoded by the autoencoder it was trained with (or --autoencoder). The sampler is DDIM
(50 steps) unless told otherwise. --guidance W mixes the conditional and unconditional predictions
(classifier-free guidance, notebook 07).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from diffusion_lesson.checkpoints import CheckpointError, CheckpointKindError, atomic_write, load_checkpoint, sha256_of
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
from diffusion_lesson.generate import condition_tensor
from diffusion_lesson.guidance import DEFAULT_GUIDANCE, Guided
from diffusion_lesson.latent import decode_states
from diffusion_lesson.models import LoadedModel, load_model, pretrained_path, shipped_name
from diffusion_lesson.runtime import make_generator
from diffusion_lesson.samplers import VARIANCES, sample_ddim, sample_ddpm

KINDS = {"pixel": "unet", "latent": "latent-unet"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m diffusion_lesson.sample", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=positive_int, required=True, help="number of digits to generate")
    parser.add_argument("--seed", type=int, required=True, help="random seed (same seed, same digits on one device)")
    parser.add_argument("--out", type=Path, required=True, help="output file, .npz")
    parser.add_argument("--model", choices=tuple(KINDS), default=None, help="default: pixel (latent with --prompt)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a training checkpoint (default: shipped)")
    parser.add_argument("--autoencoder", type=Path, default=None, help="--model latent: the autoencoder to decode with")
    parser.add_argument("--sampler", choices=("ddpm", "ddim"), default="ddim", help="default: %(default)s")
    parser.add_argument("--steps", type=positive_int, default=50, help="DDIM steps (default: 50; DDPM uses all T)")
    eta_help = "DDIM noise: 0 = deterministic, 1 = fresh noise each step (lower FID for both shipped models, N 10,000)"
    parser.add_argument("--eta", type=non_negative_float, default=0.0, help=eta_help)
    parser.add_argument("--variance", choices=VARIANCES, default="beta", help="DDPM's sigma_t^2 (default: beta)")
    parser.add_argument("--clip-x0", action="store_true", help="clip each predicted x0 to [-1, 1] (both samplers)")
    parser.add_argument("--batch-size", type=positive_int, default=1000, help="samples per forward pass")
    condition = parser.add_argument_group("conditioning (notebook 07)").add_mutually_exclusive_group()
    condition.add_argument("--digit", type=int, choices=range(10), metavar="D", help="a digit 0-9 (class-conditional)")
    condition.add_argument("--prompt", help='a prompt such as "a thick seven" (text-conditioned)')
    parser.add_argument("--guidance", type=non_negative_float, default=None,
                        help=f"guidance scale w >= 0 (default with --digit, --prompt: {DEFAULT_GUIDANCE})")  # fmt: skip
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
    try:
        condition = _condition(args, loaded)
    except ValueError as err:
        parser.error(f"{'--prompt' if args.prompt is not None else '--digit'}: {err}")
    print(f"sampling {loaded.description}")
    start = time.perf_counter()
    x0 = _sample(args, loaded, condition, device)  # (N, C, H, W): pixels, or latents for a latent model
    if loaded.autoencoder is not None:
        x0 = decode_states(loaded.autoencoder, x0, args.batch_size)  # (N, 1, 28, 28)
    seconds = time.perf_counter() - start
    images = to_uint8(x0[:, 0]).cpu().numpy()
    made_by = np.array(json.dumps(describe_sampling(args, loaded, device)))
    try:  # atomic: a full disk or Ctrl-C leaves no half-written file
        atomic_write(args.out, lambda f: np.savez_compressed(f, images=images, made_by=made_by))
    except OSError as err:
        fail(parser, err.strerror or str(err))
    steps = loaded.schedule.T if args.sampler == "ddpm" else args.steps
    print(f"wrote {args.n} digits to {args.out} ({loaded.kind} {args.sampler}, {steps} steps, "
          f"{seconds:.1f} s on {device})")  # fmt: skip
    return 0


def describe_sampling(args: argparse.Namespace, loaded: LoadedModel, device: torch.device) -> dict:
    """The ``made_by`` record of a samples file: which files made the digits, and how."""
    record = {"model": _file_name(loaded.path), "sha256": sha256_of(loaded.path)}
    if loaded.autoencoder_path is not None:
        record |= {
            "autoencoder": _file_name(loaded.autoencoder_path),
            "autoencoder_sha256": sha256_of(loaded.autoencoder_path),
        }
    if args.sampler == "ddpm":
        record |= {"sampler": "ddpm", "steps": loaded.schedule.T, "variance": args.variance}
    else:
        record |= {"sampler": "ddim", "steps": args.steps, "eta": args.eta}
    record["clip_x0"] = args.clip_x0
    if args.digit is not None or args.prompt is not None:
        guidance = DEFAULT_GUIDANCE if args.guidance is None else args.guidance
        record |= {"digit": args.digit, "prompt": args.prompt, "guidance": guidance}
    return record | {"seed": args.seed, "n": args.n, "device": str(device), "torch": torch.__version__}


def _file_name(path: Path) -> str:
    """A shipped file by its model's name (mnist-unet), any other by its path."""
    return shipped_name(path) or str(path)


def _check_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.out.suffix != ".npz":
        parser.error(f"--out must end in .npz, got {args.out}")
    if not args.out.parent.is_dir():
        parser.error(f"--out: folder {args.out.parent} does not exist; create it or choose another")
    check_writable(parser, "--out", args.out.parent)
    existing_file(parser, "--checkpoint", args.checkpoint)
    existing_file(parser, "--autoencoder", args.autoencoder)
    if args.autoencoder is not None and args.model != "latent" and args.prompt is None:
        parser.error("--autoencoder needs --model latent (or --prompt)")
    if args.guidance is not None and args.digit is None and args.prompt is None:
        parser.error("--guidance needs a condition to guide towards: add --digit D or --prompt TEXT")
    if args.checkpoint is None and args.model == "latent" and args.digit is not None:
        parser.error("--digit: the shipped latent model is unconditional; --digit samples the class-conditional "
                     "pixel model (leave out --model latent)")  # fmt: skip
    if args.checkpoint is None and args.model == "pixel" and args.prompt is not None:
        parser.error("--prompt: the shipped text model is a latent model; leave out --model pixel")


def _load(args: argparse.Namespace, device: torch.device) -> LoadedModel:
    """The model to sample: --checkpoint, or the shipped one of --model, refusing a file of another kind."""
    kinds = (KINDS["latent" if args.prompt is not None else args.model or "pixel"],)
    path = args.checkpoint or pretrained_path(_shipped_name(args))
    hint = "pass --model latent" if kinds == ("unet",) else "leave out --model latent"
    if args.prompt is not None:
        hint = "--prompt needs a text-conditioned latent model (python -m diffusion_lesson.train --model text)"
    flag = "--checkpoint: " if args.checkpoint else ""
    try:  # each file is read once on its own first, so that the message names the flag and a mix-up gets a hint
        load_checkpoint(path, kinds)
    except CheckpointKindError as err:
        advice = hint if args.prompt is not None else f"sample only U-Nets, and for a latent model {hint}"
        raise CheckpointError(f"{flag}{err}; {advice}") from None
    except CheckpointError as err:
        raise CheckpointError(f"{flag}{err}") from None
    if args.autoencoder is not None:
        try:
            load_checkpoint(args.autoencoder, ("autoencoder",))
        except CheckpointError as err:
            raise CheckpointError(f"--autoencoder: {err}") from None
    return load_model(path, device, kinds, autoencoder=args.autoencoder)


def _shipped_name(args: argparse.Namespace) -> str:
    if args.prompt is not None:
        return "mnist-text-unet"
    if args.digit is not None:
        return "mnist-cond-unet"
    return "mnist-unet" if (args.model or "pixel") == "pixel" else "mnist-latent-unet"


def _condition(args: argparse.Namespace, loaded: LoadedModel) -> torch.Tensor | None:
    """The labels or prompt tokens for every sample; refuses a condition the model cannot read."""
    if args.digit is None and args.prompt is None:
        return None
    return condition_tensor(loaded.model, args.n, args.digit, args.prompt)


def _sample(args: argparse.Namespace, loaded: LoadedModel, condition, device: torch.device) -> torch.Tensor:
    cfg = loaded.model.config
    shape = (args.n, cfg.in_channels, cfg.image_size, cfg.image_size)
    model = loaded.model
    if condition is not None:
        model = Guided(loaded.model, DEFAULT_GUIDANCE if args.guidance is None else args.guidance)
    options = {"generator": make_generator(args.seed, device), "device": device, "batch_size": args.batch_size,
               "progress": True, "clip_x0": args.clip_x0, "labels": condition}  # fmt: skip
    if args.sampler == "ddpm":
        return sample_ddpm(model, shape, loaded.schedule, variance=args.variance, **options).x0
    return sample_ddim(model, shape, loaded.schedule, steps=args.steps, eta=args.eta, **options).x0


if __name__ == "__main__":
    run(main)
