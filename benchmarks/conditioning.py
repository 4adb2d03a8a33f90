"""Chapter 07's figures for the shipped conditional models, measured and (with --record) stored in the manifest.

Class-conditional pixel model (mnist-cond-unet), at each guidance scale of --scales: N = 100 samples of
each digit (DDIM-50, eta 0, seed 0), the share the course classifier reads as the asked digit (overall
and for the worst digit), and FID/KID of the same 1,000 samples against the MNIST test set.

Text-conditioned latent model (mnist-text-unet): the same digit accuracy for prompts naming only the
digit ("seven"), at each scale; and at the default guidance, for every digit, the measured stroke
thickness of "a thick D" minus "a thin D" samples and the measured slant of "D, slanted right" minus
"D, slanted left" samples (--per-prompt each).

Prints a table, writes DIR/conditioning.json, and with --record stores the results in the manifest
under each model's "measured" entry ("guidance sweep", "attribute shift"). Example:

    export DIFFUSION_LESSON_DATA=/path/to/data
    python benchmarks/conditioning.py --out docs/conditioning --record
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from diffusion_lesson.cli.provenance import describe_device, record_measurement
from diffusion_lesson.data import to_uint8
from diffusion_lesson.generate import measure_attribute_shift, measure_digit_accuracy
from diffusion_lesson.guidance import DEFAULT_GUIDANCE
from diffusion_lesson.models import course_fid, load_course_model
from diffusion_lesson.runtime import get_device


def sweep(name: str, scales: list[float], per_digit: int, device: torch.device) -> list[dict]:
    loaded = load_course_model(name, device, prefer_own=False)
    classifier = load_course_model("mnist-classifier", device).model
    how = f"DDIM-50, eta 0, seed 0, {per_digit} per digit"
    rows = []
    for scale in scales:
        start = time.perf_counter()
        result = measure_digit_accuracy(loaded, classifier, scale, per_digit, device=device, seed=0, steps=50)
        fid = course_fid(to_uint8(result.images[:, 0]).numpy(), device)
        rows.append({"scale": scale, "accuracy": result.overall, "worst_digit": result.per_digit.min().item(),
                     "per_digit": [round(v, 4) for v in result.per_digit.tolist()], "fid": fid["fid"],
                     "kid": fid["kid"], "n": len(result.images), "how": how,
                     "seconds": round(time.perf_counter() - start, 1)})  # fmt: skip
        print(f"{name} w = {scale:g}: accuracy {result.overall:.1%} (worst digit {rows[-1]['worst_digit']:.1%}), "
              f"FID {fid['fid']:.2f}, {rows[-1]['seconds']} s", flush=True)  # fmt: skip
    return rows


def attribute_shift(scale: float, per_prompt: int, device: torch.device) -> dict:
    loaded = load_course_model("mnist-text-unet", device, prefer_own=False)
    shift = measure_attribute_shift(loaded, scale, per_prompt, device=device, seed=0, steps=50)
    result = {"scale": scale, "per_prompt": per_prompt, "how": "DDIM-50, eta 0, seed 0",
              "thick_minus_thin_px": [round(v, 4) for v in shift.thickness.tolist()],
              "right_minus_left_slant": [round(v, 4) for v in shift.slant.tolist()],
              "digits_in_asked_direction": {"thickness": int((shift.thickness > 0).sum()),
                                            "slant": int((shift.slant > 0).sum())}}  # fmt: skip
    print(f"attribute shift at w = {scale:g}: {json.dumps(result)}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[0.0, 1.0, 2.0, 3.0, 5.0, 8.0])
    parser.add_argument("--per-digit", type=int, default=100)
    parser.add_argument("--per-prompt", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("docs/conditioning"))
    parser.add_argument("--record", action="store_true", help="store the results in the manifest")
    parser.add_argument("--attributes-only", action="store_true", help="redo the attribute shift, keep the sweeps")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    device = get_device(args.device)
    start = time.perf_counter()
    path = args.out / "conditioning.json"
    results = json.loads(path.read_text()) if args.attributes_only else {}
    results["machine"] = describe_device(device)
    if not args.attributes_only:
        results["mnist-cond-unet"] = sweep("mnist-cond-unet", args.scales, args.per_digit, device)
        results["mnist-text-unet"] = sweep("mnist-text-unet", args.scales, args.per_digit, device)
    results["attribute shift"] = attribute_shift(DEFAULT_GUIDANCE, args.per_prompt, device)
    results["seconds" if not args.attributes_only else "attribute_seconds"] = round(time.perf_counter() - start, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    if args.record:
        if not args.attributes_only:
            record_measurement("mnist-cond-unet", "guidance sweep", results["mnist-cond-unet"])
            record_measurement("mnist-text-unet", "guidance sweep", results["mnist-text-unet"])
        record_measurement("mnist-text-unet", "attribute shift", results["attribute shift"])
    print(f"wrote {path} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
