"""python -m diffusion_lesson.fid: FID and KID of a file of digits against the MNIST test set (notebook 06).

Reads the ``images`` array (uint8, (N, 28, 28)) of an .npz written by python -m diffusion_lesson.sample,
or scores N real training digits (--real-train N: the floor a perfect sampler would score at that N).
Features come from the shipped classifier, so numbers are comparable across runs at the same N.
"""

from __future__ import annotations

import argparse
import json
import zipfile
from pathlib import Path

import numpy as np
import torch

from diffusion_lesson.cli.args import add_device_flag, device_from, positive_int, run
from diffusion_lesson.cli.provenance import record_fid
from diffusion_lesson.data import DataNotFoundError, load_mnist, to_uint8
from diffusion_lesson.metrics import check_image_array
from diffusion_lesson.models import course_fid


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m diffusion_lesson.fid", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("file", nargs="?", type=Path, help=".npz with images: uint8 (N, 28, 28)")
    source.add_argument("--real-train", type=positive_int, metavar="N", help="score N real training digits instead")
    parser.add_argument("--seed", type=int, default=0, help="which N training digits with --real-train")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    add_device_flag(parser)
    parser.add_argument("--record", metavar="MODEL", help="also store the result in the manifest of this shipped model")
    parser.add_argument("--label", help="with --record: how the images were made, e.g. 'DDIM-50, seed 0'")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.record is None) != (args.label is None):
        parser.error("--record and --label go together: --record mnist-unet --label 'DDIM-50, seed 0'")
    device = device_from(parser, args.device)
    try:
        if args.real_train:
            images, name = real_training_digits(args.real_train, args.seed)
        else:  # bad images are refused here, before the reference features are computed
            images, name = check_image_array(load_images(args.file)), str(args.file)
        result = {"file": name, **course_fid(images, device)}
        if args.record is not None:
            record_fid(args.record, args.label, {k: v for k, v in result.items() if k != "file"})
    except (ValueError, DataNotFoundError) as err:
        parser.error(str(err))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"N = {result['n']} digits from {name}, against the {result['reference']}; {result['features']}")
        print(f"FID: {result['fid']:.4f}")
        print(f"KID: {result['kid']:.6f} +- {result['kid_std_error']:.6f}")
    return 0


def real_training_digits(n: int, seed: int) -> tuple[np.ndarray, str]:
    """n MNIST training digits as uint8 (n, 28, 28), picked by ``seed``."""
    train = load_mnist("train").images
    if n > train.shape[0]:
        raise ValueError(f"--real-train must be between 1 and {train.shape[0]}, got {n}")
    pick = torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return to_uint8(train[pick, 0]).numpy(), "MNIST training digits"


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
