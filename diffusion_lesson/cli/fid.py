"""python -m diffusion_lesson.fid: FID and KID of a file of digits against the MNIST test set (notebook 06).

Reads the ``images`` array (uint8, (N, 28, 28)) of an .npz written by python -m diffusion_lesson.sample,
or scores N real training digits (--real-train N: the floor a perfect sampler would score at that N).
Features come from the shipped classifier, so numbers are comparable across runs at the same N.
--record MODEL also stores the result in the manifest (maintainers), under a label read from the
file's ``made_by`` record ("DDIM-50, eta 0, seed 0, N 1000"), and only if the shipped MODEL's file
made the digits; the real floor (--real-train) is recorded under mnist-classifier, whose features it
measures.
--class-mix also reads the digits' class mix and scores real training digits drawn with that mix and
with the test set's: the part of FID a sample's mix of digits explains (diffusion_lesson.class_mix).
"""

from __future__ import annotations

import argparse
import json
import zipfile
from pathlib import Path

import numpy as np
import torch

from diffusion_lesson.class_mix import class_mix_floor
from diffusion_lesson.cli.args import add_device_flag, device_from, positive_int, run
from diffusion_lesson.cli.provenance import check_made_by, record_fid, sampling_label
from diffusion_lesson.data import DataNotFoundError, load_mnist, to_uint8
from diffusion_lesson.metrics import check_image_array
from diffusion_lesson.models import course_feature_space, course_fid

FLOOR_MODEL = "mnist-classifier"  # the real floor belongs to the features it is measured in
CLASS_MIX_DRAWS = 5


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m diffusion_lesson.fid", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("file", nargs="?", type=Path, help=".npz with images: uint8 (N, 28, 28)")
    source.add_argument("--real-train", type=positive_int, metavar="N", help="score N real training digits instead")
    parser.add_argument("--seed", type=int, default=0, help="which training digits --real-train and --class-mix draw")
    parser.add_argument("--class-mix", action="store_true", help="also score real digits drawn with the sample's "
                        "class mix and with the test set's (5 draws each)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    add_device_flag(parser)
    parser.add_argument("--record", metavar="MODEL", help="also store the result in the manifest of this shipped "
                        "model, labelled with how the digits were made (read from the file)")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    device = device_from(parser, args.device)
    try:
        if args.real_train:
            images, name = real_training_digits(args.real_train, args.seed)
        else:  # bad images are refused here, before the reference features are computed
            images, name = check_image_array(load_images(args.file)), str(args.file)
        label, made_by = record_label(args) if args.record is not None else (None, None)
        result = {"file": name, **course_fid(images, device)}
        if args.class_mix:
            result["class_mix"] = class_mix_result(images, device, args.seed)
        if args.record is not None:
            stored = {k: v for k, v in result.items() if k not in ("file", "class_mix")}  # the manifest keeps FID
            record_fid(args.record, label, stored if made_by is None else {**stored, "made_by": made_by})
    except (ValueError, DataNotFoundError) as err:
        parser.error(str(err))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"N = {result['n']} digits from {name}, against the {result['reference']}; {result['features']}")
        print(f"FID: {result['fid']:.4f}")
        print(f"KID: {result['kid']:.6f} +- {result['kid_std_error']:.6f}")
        if args.class_mix:
            print(describe_class_mix(result["class_mix"]))
    if args.record is not None:
        print(f"recorded in the manifest under {args.record}: {label!r}")
    return 0


def record_label(args: argparse.Namespace) -> tuple[str, dict | None]:
    """The manifest label for --record and the file's made_by record; refuses digits the model did not make."""
    if args.real_train:
        if args.record != FLOOR_MODEL:
            raise ValueError(f"--real-train measures the floor of {FLOOR_MODEL}'s features: record it with "
                             f"--record {FLOOR_MODEL}, not {args.record}")  # fmt: skip
        return f"real floor: training digits, seed {args.seed}, N {args.real_train}", None
    made_by = load_made_by(args.file)
    check_made_by(args.record, made_by, str(args.file))
    return sampling_label(made_by), made_by


def class_mix_result(images: np.ndarray, device: torch.device, seed: int) -> dict:
    """The class mix the classifier reads in ``images`` and the FIDs of real digits drawn with it, as plain lists."""
    space = course_feature_space(device)
    generator = torch.Generator().manual_seed(seed)
    train, test_labels = load_mnist("train"), load_mnist("test").labels
    floor = class_mix_floor(images, space.classifier, space.reference, train, test_labels, CLASS_MIX_DRAWS, generator)
    return {"counts": floor.counts.tolist(), "test_counts": floor.test_counts.tolist(),
            "fids": floor.fids.tolist(), "test_mix_fids": floor.test_mix_fids.tolist()}  # fmt: skip


def describe_class_mix(mix: dict) -> str:
    """Lines that print the class mix and the two floors of --class-mix."""

    def spread(fids: list[float]) -> str:
        return f"FID {np.mean(fids):.4f} (mean of {len(fids)} draws, {min(fids):.4f} to {max(fids):.4f})"

    return "\n".join([
        "class mix (digits 0-9 as the classifier reads them): " + " ".join(map(str, mix["counts"])),
        "the test set's mix at this N:                        " + " ".join(map(str, mix["test_counts"])),
        f"real training digits with the sample's mix: {spread(mix['fids'])}",
        f"real training digits with the test set's mix: {spread(mix['test_mix_fids'])}",
    ])  # fmt: skip


def real_training_digits(n: int, seed: int) -> tuple[np.ndarray, str]:
    """n MNIST training digits as uint8 (n, 28, 28), picked by ``seed``."""
    train = load_mnist("train").images
    if n > train.shape[0]:
        raise ValueError(f"--real-train must be between 1 and {train.shape[0]}, got {n}")
    pick = torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return to_uint8(train[pick, 0]).numpy(), "MNIST training digits"


def load_made_by(path: Path) -> dict | None:
    """The ``made_by`` record python -m diffusion_lesson.sample writes into its .npz (None in other files)."""
    with np.load(path, allow_pickle=False) as archive:
        if "made_by" not in archive.files:
            return None
        try:
            made_by = json.loads(str(archive["made_by"]))
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"{path}: its 'made_by' record cannot be read ({err})") from err
    if not isinstance(made_by, dict) or not {"model", "sha256", "sampler", "seed", "n"} <= made_by.keys():
        raise ValueError(f"{path}: its 'made_by' record is not one python -m diffusion_lesson.sample writes; "
                         "sample again")  # fmt: skip
    return made_by


def load_images(path: Path) -> np.ndarray:
    """The ``images`` array of an .npz file written by python -m diffusion_lesson.sample."""
    if not path.is_file():
        raise ValueError(f"no file at {path}")
    with path.open("rb") as f:
        head = f.read(6)
    if not head.startswith((b"PK\x03\x04", b"\x93NUMPY")):  # an .npz is a zip archive, an .npy starts so
        raise ValueError(f"{path} is not a readable .npz file: it is not a numpy archive (it starts with {head!r}); "
                         "pass a file written by python -m diffusion_lesson.sample")  # fmt: skip
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a readable .npz file ({err})") from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is a single .npy array, not an .npz archive with an 'images' array")
    with archive:
        if "images" not in archive.files:
            raise ValueError(f"{path} holds no 'images' array (it has: {', '.join(archive.files) or 'nothing'})")
        try:
            return archive["images"]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"{path}: its 'images' array cannot be read ({err}); is the file truncated?") from err


if __name__ == "__main__":
    run(main)
