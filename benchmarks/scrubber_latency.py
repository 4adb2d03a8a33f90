"""Time per update of the timestep scrubber: set the slider, render the frame, hand the PNG to the widget.

Usage: python benchmarks/scrubber_latency.py [--digits 8] [--updates 300]
Measures the Python side of one slider move (what runs in the kernel); the browser then only has
to display a PNG of a few kilobytes.
"""

import argparse
import platform
import time

import torch

from diffusion_lesson.data import load_mnist
from diffusion_lesson.forward import forward_chain
from diffusion_lesson.schedules import make_schedule
from diffusion_lesson.widgets import TimestepScrubber


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits", type=int, default=8, help="digits in the scrubber (notebook 01 uses 8)")
    parser.add_argument("--updates", type=int, default=300, help="slider moves to time")
    args = parser.parse_args()

    schedule = make_schedule("linear")
    chain = forward_chain(load_mnist("test").images[: args.digits], schedule, torch.Generator().manual_seed(0))
    scrubber = TimestepScrubber(chain, schedule)
    targets = torch.randint(0, schedule.T, (args.updates,), generator=torch.Generator().manual_seed(1)).tolist()
    times_ms = []
    for t in targets:
        start = time.perf_counter()
        scrubber.slider.value = t  # fires the observer: render + update image and caption
        times_ms.append(1000 * (time.perf_counter() - start))
    times = torch.tensor(times_ms)
    print(f"machine: {platform.processor() or platform.machine()}, torch threads: {torch.get_num_threads()}")
    print(f"scrubber, {args.digits} digits, {args.updates} updates, PNG ~{len(scrubber.image.value) / 1024:.1f} KiB")
    print(f"ms per update: median {times.median():.2f}, p95 {times.quantile(0.95):.2f}, max {times.max():.2f}")


if __name__ == "__main__":
    main()
