"""Cost of one sampling step and one training step: the pixel U-Net against the latent U-Net (chapter 05).

Both at the same batch size, on random inputs of each model's own shape: (B, 1, 28, 28) pixels and
(B, 4, 7, 7) latents, the two models taking turns for --repeats timings; each row shows the best
timing (on a shared machine the best is the least disturbed). Also times
the decoder, which latent sampling pays once per image (not per step), and a whole DDIM-50 run
both ways. Uses the shipped models (or your runs/ ones). Examples:

    OMP_NUM_THREADS=1 python benchmarks/latent_vs_pixel.py            # one CPU thread, batch 128
    python benchmarks/latent_vs_pixel.py --batch-size 1000 --device cuda
"""

from __future__ import annotations

import argparse
import platform

import torch

from diffusion_lesson.costs import measure_step_costs
from diffusion_lesson.latent import decode_states
from diffusion_lesson.models import load_course_model
from diffusion_lesson.runtime import get_device, make_generator
from diffusion_lesson.samplers import sample_ddim
from diffusion_lesson.timing import stopwatch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128, help="default: %(default)s")
    parser.add_argument(
        "--repeats", type=int, default=20, help="timings per row, the best counts (default: %(default)s)"
    )
    parser.add_argument("--ddim-steps", type=int, default=50, help="default: %(default)s")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    device = get_device(args.device)
    pixel = load_course_model("mnist-unet", device)
    latent = load_course_model("mnist-latent-unet", device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device: {device} ({name}), torch threads: {torch.get_num_threads()}, batch {args.batch_size}")
    nets = {"pixel": pixel.model, "latent": latent.model}
    costs = measure_step_costs(nets, latent.schedule, args.batch_size, args.repeats, device)
    print(f"{'':>24} {'pixel':>9} {'latent':>9} {'latent/pixel':>13}")
    rows = (("mflops_per_image", "forward MFLOPs / image"), ("sample_ms", "sampling step, ms"),
            ("train_ms", "training step, ms"))  # fmt: skip
    for field, title in rows:
        p, q = getattr(costs["pixel"], field), getattr(costs["latent"], field)
        print(f"{title:>24} {p:9.1f} {q:9.1f} {q / p:13.2f}")

    cfg, b = latent.model.config, args.batch_size
    z = torch.randn(b, cfg.in_channels, cfg.image_size, cfg.image_size, device=device)
    with stopwatch(device) as clock:
        decode_states(latent.autoencoder, z)
    print(f"{'decode the batch, ms':>24} {'':>9} {1000 * clock.seconds:9.1f}   (once per image)")
    for label, loaded, shape in (
        ("pixel", pixel, (b, 1, 28, 28)),
        ("latent", latent, (b, cfg.in_channels, cfg.image_size, cfg.image_size)),
    ):
        with stopwatch(device) as clock:
            out = sample_ddim(loaded.model, shape, loaded.schedule, steps=args.ddim_steps,
                              generator=make_generator(0, device), device=device).x0  # fmt: skip
            if loaded.autoencoder is not None:
                decode_states(loaded.autoencoder, out)
        print(f"DDIM-{args.ddim_steps} for {b} digits, {label}: {clock.seconds:.2f} s")


if __name__ == "__main__":
    main()
