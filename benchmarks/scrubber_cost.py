"""What a timestep scrubber costs: the time to build it (every frame rendered once) and the bytes it sends.

Usage: python benchmarks/scrubber_cost.py [--digits 8]
The browser then swaps the frames itself (diffusion_lesson/scrubber.js), so a slider move costs the
kernel nothing; tests/test_browser.py checks that in JupyterLab in Chromium.
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
    args = parser.parse_args()

    schedule = make_schedule("linear")
    chain = forward_chain(load_mnist("test").images[: args.digits], schedule, torch.Generator().manual_seed(0))
    print(f"machine: {platform.processor() or platform.machine()}, torch threads: {torch.get_num_threads()}")
    print(f"forward chain of {args.digits} digits over T = {schedule.T} steps (notebooks 01 and 02)")
    for max_frames in (250, None):
        start = time.perf_counter()
        scrubber = TimestepScrubber(chain, schedule, max_frames=max_frames)
        seconds = time.perf_counter() - start
        sent = sum(map(len, scrubber.frames))
        print(f"max_frames={max_frames}: {len(scrubber.frames)} frames, {sent / 2**20:.2f} MiB of PNG "
              f"({sent / len(scrubber.frames) / 1024:.1f} KiB a frame), built in {seconds:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
