"""How a model was made, written down: the sidecar beside a run and the shipped models' manifest (maintainers).

Every training command writes <out>.json beside its checkpoint: the command line, steps, wall time,
device and torch version (wall time adds up over resumed runs). ``python -m diffusion_lesson.ship``
copies a finished run's EMA weights into the package and records that sidecar in manifest.json;
``python -m diffusion_lesson.fid --record`` adds measured FIDs to a record, under a label that says
how the digits were made, read from the samples file itself (``made_by``, written by
``python -m diffusion_lesson.sample``), and only for digits the shipped file made. Nothing here is
typed in by hand.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import torch

from diffusion_lesson import models
from diffusion_lesson.checkpoints import load_checkpoint, save_checkpoint, sha256_of


def write_sidecar(
    out: Path,
    program: str,
    argv: list[str],
    step: int,
    seconds: float,
    device: torch.device,
    resumed: bool = False,
    started_from: Path | None = None,
) -> dict:
    """<out>.json: how this checkpoint was made; returns the record.

    A resumed run keeps the first command and lists each resuming one under "resumed_with" (a resume
    may change --steps); wall time adds up over them. A run that started from another model's weights
    (``train --init-from``) records that file under "started_from" (``describe_start``), once.
    """
    sidecar = out.with_suffix(".json")
    previous = json.loads(sidecar.read_text()) if resumed and sidecar.exists() else {}
    command = f"{program} {shlex.join(argv)}".strip()
    record = {"command": previous.get("command", command)}
    if previous:
        record["resumed_with"] = [*previous.get("resumed_with", []), command]
    record |= {
        "steps": step,
        "wall_time_s": round(previous.get("wall_time_s", 0) + seconds, 1),
        "device": describe_device(device),
        "torch": torch.__version__,
    }
    if "started_from" in previous or started_from is not None:
        record["started_from"] = previous.get("started_from") or describe_start(started_from)
    sidecar.write_text(json.dumps(record, indent=2) + "\n")
    return record


def describe_start(path: Path) -> dict:
    """The weights a fine-tuning run started from: the file's sha256 and how it was made.

    That is its own sidecar, or its manifest record when it is a shipped file (without its FIDs), so
    a shipped fine-tuned model keeps the whole history of its training.
    """
    path = Path(path)
    made = path.with_suffix(".json")
    record = json.loads(made.read_text()) if made.is_file() else {}
    if path.parent.resolve() == models.PRETRAINED_DIR.resolve():
        name = models.shipped_name(path)
        record = models.manifest()[name] if name is not None else {}
        record = {"model": name, **{k: v for k, v in record.items() if k not in ("file", "fid", "measured")}}
    return {"file": path.name, **record, "sha256": sha256_of(path)}


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({torch.get_num_threads()} threads)"


def export_pretrained(run_path: Path, name: str) -> dict:
    """Ship a finished run: its EMA weights (no optimizer state) into pretrained/, recorded in the manifest.

    Reads the run's sidecar <run>.json for the command, wall time and device. Returns the record.
    """
    run_path = Path(run_path)
    ckpt = load_checkpoint(run_path)
    sidecar = run_path.with_suffix(".json")
    if not sidecar.is_file():
        raise FileNotFoundError(f"{sidecar} is missing: ship only runs made by python -m diffusion_lesson.train")
    dest = models.PRETRAINED_DIR / f"{name.replace('-', '_')}.pt"
    save_checkpoint(
        dest, kind=ckpt.kind, model=ckpt.weights(), model_config=ckpt.model_config, schedule=ckpt.schedule,
        objective=ckpt.objective, train_config=ckpt.train_config, step=ckpt.step, losses=ckpt.losses,
        extra=ckpt.extra,
    )  # fmt: skip
    return record_in_manifest(name, dest, json.loads(sidecar.read_text()))


def record_in_manifest(name: str, shipped: Path, made: dict) -> dict:
    """Record a file in pretrained/ under ``name``: its sha256 and size plus ``made`` (command, time...).

    Measured FIDs already recorded for ``name`` are dropped: they belong to the file replaced.
    """
    shipped = Path(shipped)
    record = {"file": shipped.name, "sha256": sha256_of(shipped), "bytes": shipped.stat().st_size, **made}
    records = models.manifest() if models.MANIFEST_PATH.is_file() else {}
    records[name] = record
    _write_manifest(records)
    return record


def record_fid(name: str, label: str, result: dict) -> dict:
    """Store a measured FID in the manifest under name -> "fid" -> label; returns that model's FIDs."""
    return _record(name, "fid", label, result)


def sampling_label(made_by: dict) -> str:
    """How digits were made, in the manifest's words: "DDIM-50, eta 0, x0 clipped, seed 0, N 1000".

    made_by: the record ``python -m diffusion_lesson.sample`` writes into its .npz.
    """
    if made_by["sampler"] == "ddpm":
        parts = [f"DDPM-{made_by['steps']}"]
        if made_by["variance"] != "beta":
            parts.append(f"variance {made_by['variance']}")
    else:
        parts = [f"DDIM-{made_by['steps']}", f"eta {made_by['eta']:g}"]
    if made_by["clip_x0"]:
        parts.append("x0 clipped")
    if made_by.get("digit") is not None:
        parts.append(f"digit {made_by['digit']}")
    if made_by.get("prompt") is not None:
        parts.append(f"prompt {json.dumps(made_by['prompt'])}")
    if made_by.get("guidance") is not None:
        parts.append(f"guidance {made_by['guidance']:g}")
    return ", ".join([*parts, f"seed {made_by['seed']}", f"N {made_by['n']}"])


def check_made_by(name: str, made_by: dict | None, source: str) -> None:
    """Refuse to record, under the shipped model ``name``, digits that another file made (or an unknown one).

    The U-Net's sha256 must be the manifest's; a latent model's digits must also have been decoded by
    the shipped autoencoder that model was trained with.
    """
    records = models.manifest()
    if name not in records:
        raise ValueError(f"no shipped model named {name!r}; shipped: {sorted(records)}")
    resample = "sample the shipped model with python -m diffusion_lesson.sample (no --checkpoint) and record that"
    if made_by is None:
        raise ValueError(f"{source} does not say which model made its digits (only files written by "
                         f"python -m diffusion_lesson.sample do): {resample}")  # fmt: skip
    expected = records[name]["sha256"]
    if made_by["sha256"] != expected:
        raise ValueError(f"{source} was made by {made_by['model']} (sha256 {made_by['sha256'][:12]}), not by the "
                         f"shipped {name} (sha256 {expected[:12]}): {resample}")  # fmt: skip
    autoencoder = load_checkpoint(models.pretrained_path(name)).extra.get("autoencoder")
    if autoencoder is not None:
        expected = records[autoencoder]["sha256"] if autoencoder in records else None
        if made_by.get("autoencoder_sha256") != expected:
            raise ValueError(f"{source} was decoded by another autoencoder than {autoencoder}, which {name} was "
                             f"trained with: {resample}, without --autoencoder")  # fmt: skip


def record_measurement(name: str, label: str, result: dict) -> dict:
    """Store another measured figure (digit accuracy, attribute shift...) under name -> "measured" -> label."""
    return _record(name, "measured", label, result)


def _record(name: str, section: str, label: str, result: dict) -> dict:
    records = models.manifest()
    if name not in records:
        raise ValueError(f"no shipped model named {name!r}; shipped: {sorted(records)}")
    records[name].setdefault(section, {})[label] = result
    _write_manifest(records)
    return records[name][section]


def _write_manifest(records: dict) -> None:
    tmp = models.MANIFEST_PATH.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(records, indent=2) + "\n")
    tmp.replace(models.MANIFEST_PATH)  # atomic: a crash never leaves half a manifest
