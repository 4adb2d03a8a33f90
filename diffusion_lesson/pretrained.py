"""The models that ship with the course, and where a notebook finds its model (notebooks 03-07).

Shipped: mnist-unet (chapters 03-04), mnist-autoencoder and mnist-latent-unet (chapter 05).

A notebook uses the learner's own checkpoint from the runs folder when it exists (trained in
notebook 03 or with ``python -m diffusion_lesson.train``), otherwise the small pretrained one that
ships in ``diffusion_lesson/pretrained/``. ``manifest.json`` there records, for each shipped file,
its sha256, the exact command that trained it, its steps, wall time and device; files are checked
against their sha256 before loading.

Runs folder: $DIFFUSION_LESSON_RUNS, else ``runs/`` at the top of the course checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from diffusion_lesson.checkpoints import load_checkpoint, load_unet, save_checkpoint, sha256_of

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
MANIFEST_PATH = PRETRAINED_DIR / "manifest.json"
RUNS_ENV_VAR = "DIFFUSION_LESSON_RUNS"


class LoadedModel(NamedTuple):
    """A model in eval mode, the file it came from, and a sentence saying which one it is."""

    model: nn.Module
    path: Path
    description: str


def runs_dir() -> Path:
    """Where training writes checkpoints: $DIFFUSION_LESSON_RUNS, else <course checkout>/runs."""
    value = os.environ.get(RUNS_ENV_VAR, "").strip()
    if value:
        return Path(value).expanduser()
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file():
        return checkout / "runs"
    return Path.home() / ".cache" / "diffusion-lesson" / "runs"  # installed without a checkout


def manifest() -> dict:
    """The shipped models' records, keyed by name (see the module docstring)."""
    return json.loads(MANIFEST_PATH.read_text())


def pretrained_path(name: str) -> Path:
    """Path of a shipped checkpoint, after checking its sha256 against the manifest."""
    records = manifest()
    if name not in records:
        raise ValueError(f"no shipped model named {name!r}; shipped: {sorted(records)}")
    path = PRETRAINED_DIR / records[name]["file"]
    if not path.is_file():
        raise FileNotFoundError(f"the shipped checkpoint {path} is missing; reinstall the course or `git checkout` it")
    digest = sha256_of(path)
    if digest != records[name]["sha256"]:
        raise ValueError(
            f"{path} does not match its sha256 in the manifest (file {digest[:12]}..., manifest "
            f"{records[name]['sha256'][:12]}...): the file is damaged or was replaced; `git checkout` it"
        )
    return path


def load_course_model(
    name: str = "mnist-unet", device: torch.device | str = "cpu", prefer_own: bool = True
) -> LoadedModel:
    """The learner's runs/<name>.pt if it exists (and ``prefer_own``), else the shipped model; EMA weights."""
    own = runs_dir() / f"{name}.pt"
    if prefer_own and own.is_file():
        step = load_checkpoint(own).step
        return LoadedModel(load_unet(own, device), own, f"your own model from {own} ({step} training steps)")
    path = pretrained_path(name)
    record = manifest()[name]
    description = (
        f"the shipped pretrained model {path.name} ({record['steps']} steps, trained with: {record['command']})"
    )
    return LoadedModel(load_unet(path, device), path, description)


def load_course_autoencoder(device: torch.device | str = "cpu", prefer_own: bool = True) -> LoadedModel:
    """runs/mnist-autoencoder.pt if it exists (and ``prefer_own``), else the shipped one; EMA weights (notebook 05)."""
    from diffusion_lesson.autoencoder import load_autoencoder  # here: the autoencoder imports the training code

    own = runs_dir() / "mnist-autoencoder.pt"
    if prefer_own and own.is_file():
        step = load_checkpoint(own).step
        return LoadedModel(load_autoencoder(own, device), own, f"your own autoencoder from {own} ({step} steps)")
    path = pretrained_path("mnist-autoencoder")
    record = manifest()["mnist-autoencoder"]
    description = f"the shipped autoencoder {path.name} ({record['steps']} steps, trained with: {record['command']})"
    return LoadedModel(load_autoencoder(path, device), path, description)


def export_pretrained(run_path: Path, name: str) -> dict:
    """Ship a finished run: its EMA weights (no optimizer state) into pretrained/, recorded in the manifest.

    Reads the run's sidecar <run>.json (written by ``python -m diffusion_lesson.train`` or
    ``python -m diffusion_lesson.autoencoder``) for the command, wall time and device. Returns the
    manifest record.
    """
    run_path = Path(run_path)
    ckpt = load_checkpoint(run_path)
    made = json.loads(run_path.with_suffix(".json").read_text())
    dest = PRETRAINED_DIR / f"{name.replace('-', '_')}.pt"
    save_checkpoint(
        dest,
        model=ckpt.ema if ckpt.ema is not None else ckpt.model,
        model_config=ckpt.model_config,
        schedule_name=ckpt.schedule["name"] if ckpt.schedule else None,
        T=ckpt.schedule["T"] if ckpt.schedule else None,
        train_config=ckpt.train_config,
        step=ckpt.step,
        losses=ckpt.losses,
        extra=ckpt.extra,
    )
    return record_in_manifest(name, dest, made)


def record_in_manifest(name: str, shipped: Path, made: dict) -> dict:
    """Record a file in pretrained/ under ``name``: its sha256 and size plus ``made`` (command, time...).

    Keys already recorded for ``name`` and not in ``made`` (such as measured FIDs) are kept.
    Returns the record.
    """
    shipped = Path(shipped)
    record = {"file": shipped.name, "sha256": sha256_of(shipped), "bytes": shipped.stat().st_size, **made}
    records = manifest() if MANIFEST_PATH.is_file() else {}
    records[name] = {**records.get(name, {}), **record}
    MANIFEST_PATH.write_text(json.dumps(records, indent=2) + "\n")
    return records[name]


def record_fid(name: str, label: str, result: dict) -> dict:
    """Store a measured FID (``python -m diffusion_lesson.fid --record``) in the manifest: name -> "fid" -> label."""
    records = manifest()
    if name not in records:
        raise ValueError(f"no shipped model named {name!r}; shipped: {sorted(records)}")
    records[name].setdefault("fid", {})[label] = result
    MANIFEST_PATH.write_text(json.dumps(records, indent=2) + "\n")
    return records[name]["fid"]


def write_sidecar(
    out: Path, program: str, argv: list[str], step: int, seconds: float, device: torch.device, resumed: bool = False
) -> None:
    """<out>.json: how this checkpoint was made, for ``export_pretrained`` (wall time adds up over resumed runs)."""
    sidecar = out.with_suffix(".json")
    previous = json.loads(sidecar.read_text()) if resumed and sidecar.exists() else {}
    record = {
        "command": previous.get("command", f"{program} {shlex.join(argv)}".strip()),
        "steps": step,
        "wall_time_s": round(previous.get("wall_time_s", 0) + seconds, 1),
        "device": _describe(device),
        "torch": torch.__version__,
    }
    sidecar.write_text(json.dumps(record, indent=2) + "\n")


def _describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({torch.get_num_threads()} threads)"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Ship a finished training run as a pretrained model.")
    parser.add_argument("run", type=Path, help="checkpoint written by diffusion_lesson.train or .autoencoder")
    parser.add_argument("--name", required=True, help="manifest name, e.g. mnist-unet")
    cli = parser.parse_args()
    print(json.dumps(export_pretrained(cli.run, cli.name), indent=2))
