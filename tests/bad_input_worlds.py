"""The bad files, damaged data roots and broken disks that tests/test_bad_input.py feeds the course.

Every row of that table runs in its own temporary folder (the current directory during the row),
which holds a fresh copy of the files below; a row's ``world`` names what else is broken for it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch

from diffusion_lesson import models
from diffusion_lesson.checkpoints import save_checkpoint, sha256_of
from diffusion_lesson.classifier import MnistClassifier
from diffusion_lesson.data import DATA_ENV_VAR, RAW_FILES, data_root
from diffusion_lesson.losses import DiffusionObjective
from diffusion_lesson.runtime import DEVICE_ENV_VAR
from diffusion_lesson.schedules import make_schedule
from diffusion_lesson.training import TrainConfig, save_training, start_training
from diffusion_lesson.unet import UNet, UNetConfig

SMALL = UNetConfig(base_channels=8)
SHARED_MNIST = data_root() / "MNIST" / "raw"  # the good copy, never modified: damaged files are copies of it
READ_ONLY = "read-only"  # the folder that a "read-only" world makes unwritable


class Command(NamedTuple):
    """python -m diffusion_lesson.<name> <argv>; ``base`` flags go first, so ``argv`` may override them."""

    name: str
    argv: tuple[str, ...]
    base: tuple[str, ...] = ()

    @property
    def shown(self) -> str:
        return " ".join((self.name, *self.argv))


class Call(NamedTuple):
    """A public function called with ``args`` (file names are relative to the row's folder)."""

    function: Any
    args: tuple = ()
    kwargs: dict | None = None
    text: str = ""

    @property
    def shown(self) -> str:
        return self.text


def sample(*argv: str) -> Command:
    return Command("sample", argv, ("--n", "2", "--seed", "0", "--out", "s.npz"))


def train(*argv: str) -> Command:
    return Command("train", argv, ("--out", "run.pt", "--steps", "1", "--batch-size", "2", "--base-channels", "8",
                                   "--device", "cpu", "--quiet"))  # fmt: skip


def fid(*argv: str) -> Command:
    return Command("fid", argv)


def save_small_unet(path: str) -> None:
    """save_checkpoint of a small U-Net (the write that the disk worlds break)."""
    save_checkpoint(path, kind="unet", model=UNet(SMALL), model_config=SMALL.to_dict(),
                    schedule={"name": "linear", "T": 20})  # fmt: skip


def classifier_features(x: torch.Tensor) -> torch.Tensor:
    return MnistClassifier().features(x)


def make_files(folder: Path) -> None:
    """The bad (and good) files rows name: checkpoints, image archives and a folder to make read-only."""
    shipped = models.PRETRAINED_DIR
    shutil.copy(shipped / "mnist_classifier.pt", folder / "classifier.pt")
    shutil.copy(shipped / "mnist_autoencoder.pt", folder / "autoencoder.pt")
    shutil.copy(shipped / "mnist_unet.pt", folder / "shipped-unet.pt")
    data = (shipped / "mnist_unet.pt").read_bytes()
    (folder / "cut.pt").write_bytes(data[: len(data) // 2])
    (folder / "empty.pt").write_bytes(b"")
    (folder / "garbage.pt").write_text("these are not the weights you are looking for\n")
    save_small_unet(str(folder / "t20.pt"))  # a diffusion model trained with T = 20 noise steps
    save_small_unet(str(folder / "old.pt"))  # an earlier run that a failed write must leave intact
    run = start_training(UNet(SMALL), DiffusionObjective(make_schedule("linear")), TrainConfig(batch_size=2), "cpu")
    save_training(run, folder / "run-b2.pt")  # a training run that can be resumed: batches of 2, one block per level
    save_checkpoint(folder / "no-schedule.pt", kind="unet", model=UNet(SMALL), model_config=SMALL.to_dict())
    torch.save({"format": 2, "kind": "unet", "model_config": SMALL.to_dict()}, folder / "incomplete.pt")
    digits = np.zeros((200, 28, 28), np.uint8)
    np.savez(folder / "channel-axis.npz", images=digits[:, None])
    np.savez(folder / "32x32.npz", images=np.zeros((200, 32, 32), np.uint8))
    np.savez(folder / "floats.npz", images=digits.astype(np.float32) / 255)
    np.savez(folder / "50-digits.npz", images=digits[:50])
    np.savez(folder / "200-digits.npz", images=digits)  # good images that do not say which model made them
    made_by = {"model": "old.pt", "sha256": sha256_of(folder / "old.pt"), "sampler": "ddim", "steps": 50, "eta": 0.0,
               "clip_x0": False, "seed": 0, "n": 200, "device": "cpu"}  # fmt: skip
    np.savez(folder / "old-run-digits.npz", images=digits, made_by=json.dumps(made_by))  # as sample writes them
    (folder / "text.npz").write_text("not an archive")
    (folder / "samples.npz").write_bytes(b"earlier samples")
    (folder / "a-folder.pt").mkdir()
    (folder / READ_ONLY).mkdir()


def enter(world: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Break what ``world`` names: "mnist-truncated:FILE", "mnist-md5:FILE", "no-mnist", "offline",
    "disk-full", "ctrl-c-in-save", "ctrl-c-in-npz", "read-only", "device-env" (or "" for nothing)."""
    name, _, file = world.partition(":")
    if name.startswith("mnist-"):
        raw = folder / "data" / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for good in RAW_FILES:
            link_or_copy(SHARED_MNIST / good, raw / good, symbolic=True)
        _damage(raw / file, truncate=name == "mnist-truncated")
        monkeypatch.setenv(DATA_ENV_VAR, str(folder / "data"))
    elif name in ("no-mnist", "offline"):
        monkeypatch.setenv(DATA_ENV_VAR, str(folder / "no-data"))
        if name == "offline":
            monkeypatch.setattr(urllib.request, "urlopen", _offline)
    elif name in ("disk-full", "ctrl-c-in-save"):
        error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) if name == "disk-full" else KeyboardInterrupt()
        monkeypatch.setattr(torch, "save", _write_half_then(error))
    elif name == "ctrl-c-in-npz":
        monkeypatch.setattr(np, "savez_compressed", _write_half_then(KeyboardInterrupt()))
    elif name == "read-only":
        _make_read_only(folder / READ_ONLY, monkeypatch)
    elif name == "device-env":
        monkeypatch.setenv(DEVICE_ENV_VAR, "gpu")
    elif name:
        raise ValueError(f"unknown world {world!r}")


def link_or_copy(source: str | Path, destination: str | Path, symbolic: bool = False) -> None:
    """A link to ``source`` (a row gets the files without copying megabytes), else a copy."""
    try:
        os.symlink(source, destination) if symbolic else os.link(source, destination)
    except OSError:  # links not allowed here (e.g. Windows without developer mode)
        shutil.copy(source, destination)


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every file below ``folder``: its bytes (a link: where it points), to show that nothing was written."""
    return {
        str(path.relative_to(folder)): f"-> {os.readlink(path)}" if path.is_symlink() else path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_symlink() or path.is_file()
    }


def _damage(path: Path, truncate: bool) -> None:
    data = bytearray((SHARED_MNIST / path.name).read_bytes())
    if not truncate:
        data[len(data) // 2] ^= 0xFF  # one flipped byte: the right size, the wrong md5
    path.unlink()
    path.write_bytes(bytes(data[: len(data) // 2] if truncate else data))


def _offline(*args, **kwargs):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def _write_half_then(error: BaseException):
    def write(*args, **kwargs):  # stands in for torch.save(obj, file) and numpy.savez_compressed(file, ...)
        file = next(arg for arg in args if hasattr(arg, "write"))
        file.write(b"half a file")  # some bytes reach the disk, then the write fails
        raise error

    return write


def _make_read_only(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """chmod 0o500; as root that does not stop writes, so then creating a file in it is refused instead."""
    path.chmod(0o500)
    try:
        (path / "probe").touch()
    except PermissionError:
        return
    (path / "probe").unlink()
    real_mkstemp = tempfile.mkstemp

    def refusing_mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve() == path.resolve():
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", refusing_mkstemp)
