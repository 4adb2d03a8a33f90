"""Sampling throughput (images/second) for DDPM-1000, DDIM-50 and DDIM-20 on the current device.

Uses the shipped model (or --checkpoint). Each row is the best of --repeats timings of generating
--n images in batches of --batch-size: on a shared machine the best is the least disturbed. Examples:

    python benchmarks/sample_throughput.py                     # 64 images, CPU-sized
    python benchmarks/sample_throughput.py --n 10000 --batch-size 10000 --samplers ddim-50   # a GPU
"""

from __future__ import annotations

import argparse
import platform

import torch

from diffusion_lesson.models import load_course_model, load_model
from diffusion_lesson.runtime import get_device, make_generator
from diffusion_lesson.samplers import sample_ddim, sample_ddpm
from diffusion_lesson.timing import best_of


def run(name: str, model, schedule, n: int, batch_size: int, device: torch.device) -> None:
    shape = (n, model.config.in_channels, model.config.image_size, model.config.image_size)
    options = {"generator": make_generator(0, device), "device": device, "batch_size": batch_size}
    if name == "ddpm-1000":
        sample_ddpm(model, shape, schedule, **options)
    else:
        sample_ddim(model, shape, schedule, steps=int(name.split("-")[1]), **options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="images per timing (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=1000, help="default: %(default)s")
    parser.add_argument("--samplers", nargs="+", default=["ddpm-1000", "ddim-50", "ddim-20"])
    parser.add_argument("--repeats", type=int, default=2, help="default: %(default)s")
    parser.add_argument("--checkpoint", default=None, help="default: the shipped model")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    device = get_device(args.device)
    loaded = load_model(args.checkpoint, device, ("unet",)) if args.checkpoint else load_course_model(
        "mnist-unet", device, prefer_own=False)  # fmt: skip
    model, schedule = loaded.model, loaded.schedule
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(
        f"device: {device} ({name}), torch threads: {torch.get_num_threads()}, {args.n} images, batch {args.batch_size}"
    )
    print(f"{'sampler':>10} {'seconds':>9} {'images/s':>10} {'ms/image':>9}")
    for sampler in args.samplers:  # best_of: device synchronized, one warm-up run first
        best = best_of({sampler: lambda s=sampler: run(s, model, schedule, args.n, args.batch_size, device)},
                       device, args.repeats)[sampler]  # fmt: skip
        print(f"{sampler:>10} {best:>9.2f} {args.n / best:>10.1f} {1000 * best / args.n:>9.2f}")


if __name__ == "__main__":
    main()
