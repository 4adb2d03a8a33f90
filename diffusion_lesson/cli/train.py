"""python -m diffusion_lesson.train: train any of the course's models from a terminal.

--model pixel (default) is notebook 03's run (with --num-classes 10, notebook 07's class-conditional
one); latent is notebook 05's U-Net on an autoencoder's latents (the training set is encoded once
with --autoencoder: default runs/mnist-autoencoder.pt, else the shipped one); text is notebook 07's
latent U-Net that reads prompts (captions written from each digit's label and measured thickness and
slant, ``prompts``); autoencoder is notebook 05's VAE; classifier is FID's feature network
(notebook 06). All four go through the same loop (diffusion_lesson.training). The run is
checkpointed atomically to --out every --checkpoint-every steps and when it stops (Ctrl-C too), and
a sidecar <out>.json records the command, steps, wall time and device. --resume continues a run.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from diffusion_lesson.autoencoder import Autoencoder, AutoencoderConfig, AutoencoderObjective
from diffusion_lesson.checkpoints import load_checkpoint
from diffusion_lesson.classifier import ClassifierObjective, MnistClassifier
from diffusion_lesson.cli.args import (
    add_device_flag,
    check_new_output,
    device_from,
    existing_file,
    fail,
    fraction,
    positive_float,
    positive_int,
    run,
)  # fmt: skip
from diffusion_lesson.cli.finish import finish_run
from diffusion_lesson.cli.provenance import write_sidecar
from diffusion_lesson.data import DATASET_FOLDERS, LabeledImages, load_mnist
from diffusion_lesson.latent import LATENT_BASE_CHANNELS, encode_dataset, latent_extra, latent_unet_config
from diffusion_lesson.losses import DiffusionObjective
from diffusion_lesson.models import load_course_model, load_model, manifest, pretrained_path, resume_training, runs_dir
from diffusion_lesson.prompts import caption_codes, measure_attributes
from diffusion_lesson.runtime import bf16_pays
from diffusion_lesson.schedules import SCHEDULE_NAMES, make_schedule
from diffusion_lesson.text import VOCABULARY
from diffusion_lesson.training import TrainConfig, TrainState, start_from_weights, start_training, train
from diffusion_lesson.unet import UNet, UNetConfig

MODELS = ("pixel", "latent", "text", "autoencoder", "classifier")
KIND = {"pixel": "unet", "latent": "latent-unet", "text": "latent-unet", "autoencoder": "autoencoder",
        "classifier": "classifier"}  # fmt: skip
# Loop settings that differ from TrainConfig's defaults, per model. pixel is notebook 03's run: batches
# of 64 beat 128 at equal CPU time (README, Time to quality); the latent and text runs keep 128.
LOOP_DEFAULTS = {
    "pixel": {"batch_size": 64},  # and no step count: DEFAULT_MINUTES
    "latent": {},
    "text": {},
    "autoencoder": {"steps": 2000, "warmup_steps": 100, "decay_lr": False, "grad_clip": 0.0},
    "classifier": {"steps": 1500, "lr": 3e-3, "warmup_steps": 450, "weight_decay": 1e-4, "grad_clip": 0.0,
                   "ema_decay": 0.0},
}  # fmt: skip
# A fresh pixel run with neither --steps nor --minutes trains for notebook 03's TRAIN_MINUTES.
DEFAULT_MINUTES = {"pixel": 8.0}
# Residual blocks per level: the pixel U-Net has two (with batches of 64 the best recipe measured, README's
# second study); the latent and text U-Nets keep UNetConfig's one.
BLOCKS_PER_LEVEL = {"pixel": 2, "latent": 1, "text": 1}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m diffusion_lesson.train", description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="pixel", help="what to train (default: %(default)s)")
    parser.add_argument("--dataset", choices=tuple(DATASET_FOLDERS), default="mnist", help="default: %(default)s")
    parser.add_argument("--autoencoder", type=Path, default=None, help="--model latent, text: autoencoder checkpoint")
    loop = parser.add_argument_group("the loop (defaults depend on --model; pixel: notebook 03's)")
    steps_default = _defaults("steps", skip=DEFAULT_MINUTES)
    loop.add_argument("--steps", type=positive_int, help=f"total optimizer steps; {steps_default}")
    loop.add_argument(
        "--minutes",
        type=positive_float,
        help="train for this long instead of a number of steps: the steps that fit are measured on this machine "
        "and the learning rate decays over them (default for a new pixel run: 8, notebook 03's)",
    )
    loop.add_argument("--batch-size", type=positive_int, help=_defaults("batch_size"))
    loop.add_argument("--lr", type=positive_float, help="peak learning rate; " + _defaults("lr"))
    loop.add_argument("--warmup-steps", type=int, help=_defaults("warmup_steps"))
    loop.add_argument("--ema-decay", type=fraction, help=_defaults("ema_decay"))
    loop.add_argument("--seed", type=int, help=_defaults("seed"))
    loop.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        help="bf16 autocast (default for a new pixel run: on where it was measured to pay, a CPU with bf16 "
        "instructions; otherwise off)",
    )
    loop.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    net = parser.add_argument_group("the network and its loss")
    net.add_argument("--schedule", choices=SCHEDULE_NAMES, default="linear", help="diffusion models (default: linear)")
    net.add_argument("--base-channels", type=positive_int, help=f"U-Nets: default 32, latent {LATENT_BASE_CHANNELS}")
    net.add_argument("--blocks-per-level", type=positive_int, help="U-Nets: " + _by_value(BLOCKS_PER_LEVEL))
    net.add_argument("--no-attention", action="store_true", help="U-Nets: no self-attention at the lowest resolution")
    net.add_argument("--num-classes", type=positive_int, default=None, help="U-Nets: class-conditional (chapter 07)")
    net.add_argument("--label-dropout", type=fraction, default=0.0, help="U-Nets: default 0")
    net.add_argument(
        "--min-snr-gamma",
        type=positive_float,
        default=5.0,
        help="U-Nets: weight the loss by min(SNR, gamma) / SNR (default: %(default)s)",
    )
    net.add_argument("--plain-loss", action="store_true", help="U-Nets: DDPM's plain average over t instead")
    net.add_argument(
        "--init-from",
        metavar="MODEL",
        help="U-Nets: fine-tune: start from a trained model's weights (a shipped name such as mnist-unet, or a "
        "file) on a new learning-rate schedule; give the flags that build its network",
    )
    net.add_argument("--kl-weight", type=positive_float, default=1e-4, help="autoencoder: default %(default)s")
    net.add_argument("--latent-channels", type=positive_int, default=4, help="autoencoder: default %(default)s")
    add_device_flag(parser)
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, default=None, help="default: runs/mnist-unet.pt, -latent-unet.pt, ...")
    out.add_argument("--checkpoint-every", type=positive_int, default=1000, help="default: %(default)s")
    out.add_argument("--resume", action="store_true", help="continue the run saved at --out")
    out.add_argument("--overwrite", action="store_true", help="start afresh even if --out exists")
    out.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _defaults(name: str, skip: tuple | dict = ()) -> str:
    """'default: 2400 (pixel, latent), 2000 (autoencoder), ...' for a TrainConfig field (models in skip left out)."""
    return _by_value(
        {model: LOOP_DEFAULTS[model].get(name, getattr(TrainConfig(), name)) for model in MODELS if model not in skip}
    )


def _by_value(per_model: dict[str, object]) -> str:
    """{'pixel': 2, 'latent': 1, 'text': 1} -> 'default: 2 (pixel), 1 (latent, text)'."""
    models: dict[object, list[str]] = {}
    for model, value in per_model.items():
        models.setdefault(value, []).append(model)
    return "default: " + ", ".join(f"{v} ({', '.join(m)})" for v, m in models.items())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    out = args.out or runs_dir() / default_file_name(args)
    _check_flags(parser, args, out)
    device = device_from(parser, args.device)
    try:
        start_file = init_from_path(args.init_from) if args.init_from is not None else None
        state, data = _resumed(args, out, device) if args.resume else _fresh(args, device, start_file)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        parser.error(str(err))
    minutes = _minutes(args)
    until = (
        f"as many steps as fit in {minutes:g} minute{'' if minutes == 1 else 's'}"
        if minutes
        else f"step {state.config.steps}"
    )
    print(f"training {args.model} on {device}: {sum(p.numel() for p in state.model.parameters()):,} parameters, "
          f"step {state.step} -> {until}, checkpoint {out}")  # fmt: skip
    start = time.perf_counter()
    try:
        train(state, data, checkpoint_path=out, checkpoint_every=args.checkpoint_every, progress=not args.quiet,
              budget_s=60 * minutes if minutes else None)  # fmt: skip
        seconds = time.perf_counter() - start
        summary = finish_run(state, data, out, args.dataset)
        write_sidecar(
            out, "python -m diffusion_lesson.train", argv, state.step, seconds, device, args.resume, start_file
        )
    except OSError as err:  # a full disk or a folder that became read-only: the last good checkpoint stays
        kept = f"{out} holds the last checkpoint saved" if out.exists() else "no checkpoint was saved"
        fail(parser, f"{err.strerror or err}\ntraining stopped at step {state.step} and {kept}; once the problem "
                     "is fixed, run the command again (with --resume to continue from that checkpoint)")  # fmt: skip
    if state.step < state.config.steps:
        print(f"stopped at step {state.step}; continue with the same command plus --resume")
        return 130
    print(f"done: {state.step} steps in {seconds:.0f} s; {summary}; saved {out}")
    return 0


def _minutes(args: argparse.Namespace) -> float | None:
    """The time budget: --minutes, or for a new run given no --steps its model's default (pixel: 8)."""
    if args.minutes is not None or args.steps is not None or args.resume:
        return args.minutes
    return DEFAULT_MINUTES.get(args.model)


def default_file_name(args: argparse.Namespace) -> str:
    names = {"pixel": "unet", "latent": "latent-unet", "text": "text-unet", "autoencoder": "autoencoder",
             "classifier": "classifier"}  # fmt: skip
    if args.model == "pixel" and args.num_classes is not None:
        return f"{args.dataset}-cond-unet.pt"
    return f"{args.dataset}-{names[args.model]}.pt"


def _check_flags(parser: argparse.ArgumentParser, args: argparse.Namespace, out: Path) -> None:
    if args.autoencoder is not None and args.model not in ("latent", "text"):
        parser.error("--autoencoder needs --model latent or --model text")
    if args.num_classes is not None and args.model != "pixel":
        parser.error("--num-classes is for --model pixel; --model text is conditioned on prompts")
    if args.model == "text" and args.dataset != "mnist":
        parser.error("--model text captions MNIST digits only; leave out --dataset")
    existing_file(parser, "--autoencoder", args.autoencoder)
    if args.model in ("autoencoder", "classifier") and args.dataset != "mnist":
        parser.error(f"--model {args.model} trains on MNIST only; leave out --dataset")
    given = list(_unet_flags_given(args))
    if args.model in ("autoencoder", "classifier") and args.init_from is not None:
        given.append("--init-from")
    if args.model in ("autoencoder", "classifier") and given:
        parser.error(f"{', '.join(given)}: U-Nets only (--model pixel, latent or text), not --model {args.model}")
    if args.steps is not None and args.minutes is not None:
        parser.error("give --steps or --minutes, not both: a run ends after a number of steps or after a time")
    if args.warmup_steps is not None and args.warmup_steps < 0:
        parser.error(f"--warmup-steps must be >= 0, got {args.warmup_steps}")
    check_new_output(parser, out, args.resume, args.overwrite)


def _loop_config(args: argparse.Namespace, device: torch.device | str = "cpu") -> TrainConfig:
    given = {name: getattr(args, name) for name in ("steps", "batch_size", "lr", "warmup_steps", "ema_decay", "seed")}
    bf16 = args.bf16 if args.bf16 is not None else args.model == "pixel" and bf16_pays(device)
    flags = {"bf16_autocast": bf16, "channels_last": args.channels_last}
    return TrainConfig(**{**LOOP_DEFAULTS[args.model], **{k: v for k, v in given.items() if v is not None}, **flags})


def _fresh(args: argparse.Namespace, device: torch.device, start_file: Path | None):
    """A new run of args.model and the data it trains on (latents for --model latent)."""
    config, data = _loop_config(args, device), load_mnist("train", device=device, dataset=args.dataset)
    torch.manual_seed(config.seed)  # the weight initialisation: --seed fixes it too
    if args.model == "autoencoder":
        model = Autoencoder(AutoencoderConfig(latent_channels=args.latent_channels))
        return start_training(model, AutoencoderObjective(args.kl_weight), config, device, "autoencoder"), data
    if args.model == "classifier":
        return start_training(MnistClassifier(), ClassifierObjective(), config, device, "classifier"), data
    options = {"attention": not args.no_attention, "num_classes": args.num_classes,
               "blocks_per_level": args.blocks_per_level or BLOCKS_PER_LEVEL[args.model]}  # fmt: skip
    if args.base_channels is not None:
        options["base_channels"] = args.base_channels
    gamma = None if args.plain_loss else args.min_snr_gamma
    objective = DiffusionObjective(make_schedule(args.schedule).to(device), args.label_dropout, gamma)
    if args.model == "pixel":
        state = start_training(UNet(UNetConfig(**options)), objective, config, device, "unet")
        return _initialised(state, args.init_from, start_file), data
    if args.autoencoder is not None:
        source = load_model(args.autoencoder, device, ("autoencoder",))
    else:
        source = load_course_model("mnist-autoencoder", device)
    if args.model == "text":
        options = {**options, "num_classes": None, "vocabulary": VOCABULARY}
    torch.manual_seed(config.seed)  # again: building the autoencoder above drew from the generator
    unet = UNet(latent_unet_config(source.model.config, **options))
    state = start_training(unet, objective, config, device, "latent-unet")
    recorded = str(args.autoencoder) if args.autoencoder else _recorded_name(source.path)
    state.extra = latent_extra(source.model, recorded)
    return _initialised(state, args.init_from, start_file), _latent_data(source.model, data, args.model == "text")


def _initialised(state: TrainState, init_from: str | None, start_file: Path | None) -> TrainState:
    """The fresh run, or with --init-from the same network starting at a trained model's weights."""
    if start_file is None:
        return state
    saved = load_checkpoint(start_file, (state.kind,))
    schedule = state.objective.schedule
    if (saved.schedule["name"], saved.schedule["T"]) != (schedule.name, schedule.T):
        name = saved.schedule["name"]
        raise ValueError(f"--init-from {init_from} was trained with the {name} schedule; give --schedule {name}")
    scale = saved.extra.get("latent_scale")
    if scale is not None and not math.isclose(scale, state.extra["latent_scale"], rel_tol=1e-4):
        raise ValueError(
            f"--init-from {init_from} was trained on another autoencoder's latents; "
            f"give --autoencoder {saved.extra['autoencoder']}"
        )
    try:
        return start_from_weights(state, saved)
    except ValueError as err:
        raise ValueError(f"--init-from {init_from}: {err}: build the same network with this command's flags") from None


def init_from_path(init_from: str) -> Path:
    """The file --init-from names: a shipped model (checked against its sha256) or a checkpoint file."""
    path = pretrained_path(init_from) if init_from in manifest() else Path(init_from)
    if not path.is_file():
        raise FileNotFoundError(f"--init-from {init_from}: no such file, nor a shipped model ({', '.join(manifest())})")
    return path


def _latent_data(autoencoder, data: LabeledImages, text: bool) -> LabeledImages:
    """The training set encoded once (60000, 4, 7, 7); a text model's labels become caption codes."""
    latents = encode_dataset(autoencoder, data)
    if not text:
        return latents
    codes = caption_codes(data.labels, measure_attributes(data.images, data.labels))
    return LabeledImages(latents.images, codes.to(latents.labels.device))


def _recorded_name(path: Path) -> str:
    """How a latent run names its autoencoder: the shipped model's name, or the learner's file."""
    return "mnist-autoencoder" if path.parent.name == "pretrained" else str(path)


def _resumed(args: argparse.Namespace, out: Path, device: torch.device) -> tuple[TrainState, object]:
    """The saved run with the new step count, and its data (a latent run re-encodes with its recorded autoencoder)."""
    saved = load_checkpoint(out)
    flag = _model_flag(saved.kind, saved.model_config)
    if flag != args.model:
        raise ValueError(f"{out} holds a {saved.kind} run; resume it with --model {flag}")
    config = TrainConfig.from_dict(saved.train_config)
    bf16 = config.bf16_autocast if args.bf16 is None else args.bf16  # a speed option: it may change
    state = resume_training(out, device, replace(config, steps=args.steps or config.steps, bf16_autocast=bf16))
    _check_unchanged(args, out, saved.model_config, saved.train_config)
    data = load_mnist("train", device=device, dataset=args.dataset)
    if saved.kind == "latent-unet":
        data = _latent_data(load_model(out, device).autoencoder, data, flag == "text")
    return state, data


def _check_unchanged(args: argparse.Namespace, out: Path, model_config: dict, train_config: dict) -> None:
    """A resumed run keeps its network and loop (only --steps may change): refuse a flag that says otherwise."""
    given = {flag: (name, value, model_config) for flag, (name, value) in _unet_flags_given(args).items()}
    given |= {f"--{name.replace('_', '-')}": (name, getattr(args, name), train_config)
              for name in ("batch_size", "lr", "warmup_steps", "ema_decay", "seed")}  # fmt: skip
    for flag, (name, value, saved) in given.items():
        if value is not None and name in saved and saved[name] != value:
            raise ValueError(f"{flag}: {out} was trained with {name} = {saved[name]}, and a resumed run keeps it; "
                             "leave the flag out, or start a new run with another --out")  # fmt: skip


def _unet_flags_given(args: argparse.Namespace) -> dict[str, tuple[str, object]]:
    """The U-Net flags on the command line: flag -> (the UNetConfig field it sets, the value it asks for)."""
    fields = {"--base-channels": ("base_channels", args.base_channels),
              "--blocks-per-level": ("blocks_per_level", args.blocks_per_level),
              "--no-attention": ("attention", False if args.no_attention else None)}  # fmt: skip
    return {flag: (name, value) for flag, (name, value) in fields.items() if value is not None}


def _model_flag(kind: str, model_config: dict) -> str:
    if model_config.get("vocabulary") is not None:
        return "text"
    return {v: k for k, v in KIND.items() if k != "text"}[kind]


if __name__ == "__main__":
    run(main)
