"""python -m diffusion_lesson.train: train the epsilon predictor from a terminal (notebook 03's run).

Defaults are the notebook's settings (UNetConfig() and TrainConfig()); flags change them. The run is
checkpointed atomically to --out every --checkpoint-every steps and when it stops (Ctrl-C too), and
a sidecar <out>.json records the command, steps, wall time and device. --resume continues a run.
--model latent trains the same U-Net and loop on an autoencoder's latents (notebook 05): the
training set is encoded once with --autoencoder (default: runs/mnist-autoencoder.pt, else the
shipped one).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from diffusion_lesson.autoencoder import load_autoencoder
from diffusion_lesson.checkpoints import load_checkpoint
from diffusion_lesson.data import DATASET_FOLDERS, load_mnist
from diffusion_lesson.latent import (
    LATENT_BASE_CHANNELS,
    encode_dataset,
    latent_extra,
    latent_unet_config,
    load_latent_pair,
)
from diffusion_lesson.pretrained import pretrained_path, runs_dir, write_sidecar
from diffusion_lesson.runtime import get_device
from diffusion_lesson.schedules import SCHEDULE_NAMES
from diffusion_lesson.training import TrainConfig, resume_training, start_training, train
from diffusion_lesson.unet import UNet, UNetConfig


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    model, run = UNetConfig(), TrainConfig()
    parser = argparse.ArgumentParser(prog="python -m diffusion_lesson.train", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=tuple(DATASET_FOLDERS), default="mnist", help="default: %(default)s")
    parser.add_argument("--model", choices=("pixel", "latent"), default="pixel", help="default: %(default)s")
    parser.add_argument(
        "--autoencoder", type=Path, default=None, help="--model latent: autoencoder checkpoint (see above)"
    )
    parser.add_argument(
        "--steps", type=positive_int, default=run.steps, help="total optimizer steps (default: %(default)s)"
    )
    parser.add_argument("--batch-size", type=positive_int, default=run.batch_size, help="default: %(default)s")
    parser.add_argument("--lr", type=float, default=run.lr, help="peak learning rate (default: %(default)s)")
    parser.add_argument("--warmup-steps", type=int, default=run.warmup_steps, help="default: %(default)s")
    parser.add_argument("--ema-decay", type=float, default=run.ema_decay, help="default: %(default)s")
    parser.add_argument("--schedule", choices=SCHEDULE_NAMES, default=run.schedule, help="default: %(default)s")
    parser.add_argument("--seed", type=int, default=run.seed, help="default: %(default)s")
    parser.add_argument(
        "--base-channels", type=positive_int, default=None,
        help=f"default: {model.base_channels}, with --model latent {LATENT_BASE_CHANNELS}",
    )  # fmt: skip
    parser.add_argument("--no-attention", action="store_true", help="leave out self-attention at the lowest resolution")
    parser.add_argument("--num-classes", type=positive_int, default=None, help="train class-conditional (chapter 07)")
    parser.add_argument("--label-dropout", type=float, default=run.label_dropout, help="default: %(default)s")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory format (CUDA)")
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best available)")
    parser.add_argument(
        "--out", type=Path, default=None, help="default: runs/<dataset>-unet.pt, or runs/<dataset>-latent-unet.pt"
    )
    parser.add_argument("--checkpoint-every", type=positive_int, default=1000, help="default: %(default)s")
    parser.add_argument("--resume", action="store_true", help="continue the run saved at --out")
    parser.add_argument("--overwrite", action="store_true", help="start afresh even if --out exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    out = args.out or runs_dir() / f"{args.dataset}-{'latent-' if args.model == 'latent' else ''}unet.pt"
    if args.autoencoder is not None and args.model != "latent":
        parser.error("--autoencoder needs --model latent")
    if args.autoencoder is not None and not args.autoencoder.is_file():
        parser.error(f"--autoencoder: no file at {args.autoencoder}")
    if out.exists() and not (args.resume or args.overwrite):
        parser.error(f"{out} exists: pass --resume to continue that run, --overwrite to replace it, or another --out")
    if args.resume and not out.exists():
        parser.error(f"--resume: no checkpoint at {out} to continue")
    try:
        device = get_device(args.device)
        config = TrainConfig(
            steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
            ema_decay=args.ema_decay, schedule=args.schedule, seed=args.seed, label_dropout=args.label_dropout,
            bf16_autocast=args.bf16, channels_last=args.channels_last,
        )  # fmt: skip
        base_channels = args.base_channels or (LATENT_BASE_CHANNELS if args.model == "latent" else 32)
        options = {"base_channels": base_channels, "attention": not args.no_attention,
                   "num_classes": args.num_classes}  # fmt: skip
        autoencoder = _autoencoder(args, device, out) if args.model == "latent" else None
        if args.resume:  # the saved run's settings, with the new step count
            saved = TrainConfig.from_dict(load_checkpoint(out).train_config)
            state = resume_training(out, device, replace(saved, steps=args.steps))
        elif autoencoder is None:
            state = start_training(UNet(UNetConfig(**options)), config, device)
        else:
            state = start_training(UNet(latent_unet_config(autoencoder.config, **options)), config, device)
            state.extra = latent_extra(autoencoder, str(args.autoencoder or _default_autoencoder()[1]))
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        parser.error(str(err))
    data = load_mnist("train", device=device, dataset=args.dataset)
    if autoencoder is not None:
        data = encode_dataset(autoencoder, data)  # (60000, 4, 7, 7): encoded once, then the same loop
    print(f"training on {device}: {sum(p.numel() for p in state.model.parameters()):,} parameters, "
          f"step {state.step} -> {state.config.steps}, checkpoint {out}")  # fmt: skip
    start = time.perf_counter()
    train(state, data, checkpoint_path=out, checkpoint_every=args.checkpoint_every, progress=not args.quiet)
    seconds = time.perf_counter() - start
    write_sidecar(out, "python -m diffusion_lesson.train", argv, state.step, seconds, device, args.resume)
    if state.step < state.config.steps:
        print(f"stopped at step {state.step}; continue with the same command plus --resume")
        return 130
    recent = state.losses[-100:]
    print(f"done: {state.step} steps, mean loss of the last {len(recent)} {sum(recent) / len(recent):.4f}, saved {out}")
    return 0


def _default_autoencoder() -> tuple[Path, str]:
    """runs/mnist-autoencoder.pt if it exists, else the shipped one: its path and how to record it."""
    own = runs_dir() / "mnist-autoencoder.pt"
    if own.is_file():
        return own, str(own)
    return pretrained_path("mnist-autoencoder"), "mnist-autoencoder"


def _autoencoder(args: argparse.Namespace, device: torch.device, out: Path):
    """The autoencoder a latent run uses; on --resume, the one the run recorded."""
    if args.resume:
        return load_latent_pair(out, args.autoencoder, device).autoencoder
    return load_autoencoder(args.autoencoder or _default_autoencoder()[0], device)


if __name__ == "__main__":
    sys.exit(main())
