"""Training throughput (images/second) of notebook 03's U-Net, with and without each speed option.

Runs the package's own train_step (simple loss, backward, clipping, AdamW, EMA) on random images
of MNIST's shape, so no data set is needed. Each row is the best of --repeats timings: on a shared
machine the best is the least disturbed. Examples:

    python benchmarks/train_throughput.py                    # the notebook's defaults on this device
    python benchmarks/train_throughput.py --steps 50 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace

import torch

from diffusion_lesson.cli.train import BLOCKS_PER_LEVEL, LOOP_DEFAULTS
from diffusion_lesson.data import LabeledImages
from diffusion_lesson.losses import DiffusionObjective
from diffusion_lesson.runtime import get_device
from diffusion_lesson.schedules import make_schedule
from diffusion_lesson.timing import stopwatch
from diffusion_lesson.training import TrainConfig, start_training, train_step
from diffusion_lesson.unet import UNet, UNetConfig


def measure(
    model_config: UNetConfig,
    config: TrainConfig,
    device: torch.device,
    steps: int,
    warmup: int,
    compile_model: bool = False,
) -> float:
    """Images per second over ``steps`` training steps, after ``warmup`` untimed ones."""
    torch.manual_seed(0)
    objective = DiffusionObjective(make_schedule().to(device))
    state = start_training(UNet(model_config), objective, replace(config, steps=steps + warmup), device)
    if compile_model:
        state.model.compile()  # in place: parameter names (and so the EMA) stay the same
    n = max(4096, config.batch_size)
    generator = torch.Generator(device=device).manual_seed(0)
    images = (
        torch.rand(
            n,
            model_config.in_channels,
            model_config.image_size,
            model_config.image_size,
            generator=generator,
            device=device,
        )
        * 2
        - 1
    )
    data = LabeledImages(images, torch.zeros(n, dtype=torch.long, device=device))
    for _ in range(warmup):
        train_step(state, data)
    with stopwatch(device) as clock:
        for _ in range(steps):
            train_step(state, data)
    return steps * config.batch_size / clock.seconds


def variants(device: torch.device, batch_size: int) -> list[tuple[str, dict]]:
    """(label, settings) rows to time; settings may hold threads, compile and TrainConfig fields."""
    rows = [("default", {})]
    if device.type == "cpu":
        rows += [(f"threads={n}", {"threads": n}) for n in sorted({1, torch.get_num_threads()} - {0})]
    rows += [
        ("channels_last", {"channels_last": True}),
        ("bf16 autocast", {"bf16_autocast": True}),
        ("torch.compile", {"compile": True}),
        (f"batch {2 * batch_size}", {"batch_size": 2 * batch_size}),
    ]
    if device.type == "cuda":
        rows += [
            (f"batch {8 * batch_size}", {"batch_size": 8 * batch_size}),
            ("bf16 + channels_last + compile", {"bf16_autocast": True, "channels_last": True, "compile": True}),
        ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best available)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=LOOP_DEFAULTS["pixel"]["batch_size"],
        help="default: %(default)s (notebook 03's)",
    )
    parser.add_argument(
        "--blocks-per-level",
        type=int,
        default=BLOCKS_PER_LEVEL["pixel"],
        help="residual blocks per level (default: %(default)s, notebook 03's)",
    )
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compile needs more)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per row; the best is shown")
    parser.add_argument("--only", nargs="*", help="labels of the rows to run (default: all)")
    args = parser.parse_args()

    device = get_device(args.device)
    model_config = UNetConfig(blocks_per_level=args.blocks_per_level)
    base = replace(TrainConfig(), batch_size=args.batch_size)
    default_threads = torch.get_num_threads()
    params = sum(p.numel() for p in UNet(model_config).parameters())
    print(f"device {device}, torch {torch.__version__}, {default_threads} threads, U-Net {params / 1e6:.2f}M params")
    print(f"{'variant':34s} {'best img/s':>10s} {'median':>8s} {'vs default':>10s}")
    reference = None
    for label, settings in variants(device, args.batch_size):
        if args.only and label not in args.only:
            continue
        settings = dict(settings)
        torch.set_num_threads(settings.pop("threads", default_threads))
        compile_model = settings.pop("compile", False)
        warmup = args.warmup + (10 if compile_model else 0)
        try:
            runs = [
                measure(model_config, replace(base, **settings), device, args.steps, warmup, compile_model)
                for _ in range(args.repeats)
            ]
        except Exception as err:  # e.g. torch.compile without a working compiler: report, go on
            print(f"{label:34s} failed: {type(err).__name__}: {str(err).splitlines()[0][:60]}")
            continue
        finally:
            torch.set_num_threads(default_threads)
        best = max(runs)
        reference = reference or best
        print(f"{label:34s} {best:10.0f} {statistics.median(runs):8.0f} {best / reference:9.2f}x", flush=True)


if __name__ == "__main__":
    main()
