"""MNIST (and Fashion-MNIST) as whole tensors on a device, batches drawn by index (all notebooks).

The data root is one setting: the environment variable DIFFUSION_LESSON_DATA, or
~/.cache/diffusion-lesson/data when it is unset. torchvision's layout is used below it
(``<root>/MNIST/raw/train-images-idx3-ubyte`` and friends), so a copy torchvision downloaded
elsewhere can be reused by pointing the variable at its root.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

DATA_ENV_VAR = "DIFFUSION_LESSON_DATA"
DEFAULT_DATA_ROOT = Path.home() / ".cache" / "diffusion-lesson" / "data"
DATASET_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
SPLIT_FILES = {"train": RAW_FILES[:2], "test": RAW_FILES[2:]}
# Bytes of each decompressed IDX file: a 16-byte header and 28 x 28 pixels per image, or an 8-byte
# header and one byte per label. The same for MNIST and Fashion-MNIST.
RAW_BYTES = dict(zip(RAW_FILES, (16 + 60_000 * 28 * 28, 8 + 60_000, 16 + 10_000 * 28 * 28, 8 + 10_000), strict=True))
# md5 of MNIST's decompressed files, computed once with `md5sum` on the files torchvision downloads and
# unpacks (the .gz files it checks against torchvision.datasets.MNIST.resources); the test labels of that
# copy count [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009] per digit (tests/test_data.py).
# Fashion-MNIST's files are checked by size only.
RAW_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
}


class DataNotFoundError(FileNotFoundError):
    """The data set is not under the data root and could not be downloaded."""


class DataDamagedError(DataNotFoundError):
    """A data file is there but truncated or corrupted: the message names it and how to replace it."""


class LabeledImages(NamedTuple):
    """images: (N, 1, 28, 28) float32 in [-1, 1]; labels: (N,) long in [0, 10)."""

    images: Tensor
    labels: Tensor


def data_root() -> Path:
    """Folder that holds the data sets: $DIFFUSION_LESSON_DATA, else ~/.cache/diffusion-lesson/data."""
    value = os.environ.get(DATA_ENV_VAR, "").strip()
    return Path(value).expanduser() if value else DEFAULT_DATA_ROOT


def load_mnist(
    split: str = "train",
    device: torch.device | str = "cpu",
    dataset: str = "mnist",
    download: bool = True,
) -> LabeledImages:
    """The whole split as one tensor on ``device`` (60,000 train or 10,000 test images).

    dataset: "mnist" or "fashion-mnist". Downloads through torchvision when the files are missing
    and ``download`` is True; raises DataNotFoundError naming the folder searched otherwise.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if dataset not in DATASET_FOLDERS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {tuple(DATASET_FOLDERS)}")
    root = data_root()
    raw = root / DATASET_FOLDERS[dataset] / "raw"
    missing = [name for name in RAW_FILES if not (raw / name).is_file()]
    if missing and not download:
        raise DataNotFoundError(_not_found_message(dataset, raw, missing, reason="download=False"))
    check_raw_files(raw, dataset, split)
    # Imported here: torchvision is slow to import and only this function needs it.
    from torchvision import datasets

    source = datasets.MNIST if dataset == "mnist" else datasets.FashionMNIST
    try:
        ds = source(root=str(root), train=split == "train", download=bool(missing))
    except (RuntimeError, OSError, ValueError, AssertionError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
        if not missing:  # every file was there: torchvision could not read one
            problem = f"could not be read (torchvision: {lines[-1]})"
            raise DataDamagedError(_damaged_message(f"a file of {split} in {raw}", problem, raw)) from err
        reason = f"the download failed, are you offline? (torchvision: {lines[-1]})"
        raise DataNotFoundError(_not_found_message(dataset, raw, missing, reason)) from err
    images = to_unit_range(ds.data.unsqueeze(1))  # (N, 1, 28, 28)
    return LabeledImages(images.to(device), ds.targets.to(device=device, dtype=torch.long))


def check_raw_files(raw: Path, dataset: str, split: str) -> None:
    """Raise DataDamagedError naming the first of ``split``'s files in ``raw`` with the wrong size or md5.

    Files that are not there are left to the download.
    """
    for name in SPLIT_FILES[split]:
        path, expected_md5 = raw / name, RAW_MD5.get(dataset, {}).get(name)
        if not path.is_file():
            continue
        size = path.stat().st_size
        if size != RAW_BYTES[name]:
            problem = f"has {size:,} bytes instead of {RAW_BYTES[name]:,}: it is truncated or not the right file"
            raise DataDamagedError(_damaged_message(str(path), problem, raw))
        if expected_md5 is not None and (found := _md5_of(path)) != expected_md5:
            problem = f"has the wrong md5 checksum ({found} instead of {expected_md5}): its contents are damaged"
            raise DataDamagedError(_damaged_message(str(path), problem, raw))


def random_batch(data: LabeledImages, batch_size: int, generator: torch.Generator | None = None) -> LabeledImages:
    """batch_size images and their labels drawn uniformly (with replacement) by index, on their device."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    index = torch.randint(0, data.images.shape[0], (batch_size,), generator=generator, device=data.images.device)
    return LabeledImages(data.images[index], data.labels[index])


def to_unit_range(pixels: Tensor) -> Tensor:
    """uint8 pixels in [0, 255] -> float32 in [-1, 1], the range the diffusion model works in."""
    if pixels.dtype != torch.uint8:
        raise TypeError(f"expected uint8 pixels in [0, 255], got {pixels.dtype}")
    return pixels.to(torch.float32) / 127.5 - 1


def to_uint8(x: Tensor) -> Tensor:
    """float in [-1, 1] -> uint8 in [0, 255]; values outside [-1, 1] are clipped, as for display."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _md5_of(path: Path, chunk_size: int = 1 << 22) -> str:
    digest = hashlib.md5(usedforsecurity=False)  # a checksum, not security
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _damaged_message(what: str, problem: str, raw: Path) -> str:
    return (
        f"{what} {problem}.\n"
        f"Fix: delete the damaged file and run again, so that torchvision downloads it afresh (this needs the "
        f"internet), or set {DATA_ENV_VAR} to a folder that holds a good copy of {raw.parent.name}/raw/."
    )


def _not_found_message(dataset: str, raw: Path, missing: list[str], reason: str) -> str:
    return (
        f"{dataset} is not in {raw} (missing: {', '.join(missing)}) and {reason}.\n"
        f"Fix: connect to the internet once so torchvision can download it there, or set "
        f"{DATA_ENV_VAR} to a folder that already holds {raw.parent.name}/raw/ "
        f"(for example: export {DATA_ENV_VAR}=/path/to/data)."
    )
