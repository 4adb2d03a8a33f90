"""The course's models, found and loaded in one place (notebooks 03-07 and every command).

A notebook uses the learner's own checkpoint in the runs folder when it exists (trained in a
notebook or with ``python -m diffusion_lesson.train``), otherwise the small pretrained model that
ships in ``diffusion_lesson/pretrained/``. ``manifest.json`` there records, for each shipped file,
its sha256, the command that trained it, its steps, wall time and device, and its measured FIDs;
files are checked against their sha256 before loading.

Every checkpoint names its kind, so one function loads any of them (``load_model``) and hands back
the model together with the noise schedule it was trained with and a one-line description that
notebooks print, so a learner always knows which model made the pictures.

Runs folder: $DIFFUSION_LESSON_RUNS, else ``runs/`` at the top of the course checkout.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from diffusion_lesson.autoencoder import Autoencoder, AutoencoderConfig, AutoencoderObjective
from diffusion_lesson.checkpoints import KINDS, Checkpoint, CheckpointError, load_checkpoint, load_weights, sha256_of
from diffusion_lesson.classifier import ClassifierConfig, ClassifierObjective, MnistClassifier
from diffusion_lesson.losses import DiffusionObjective
from diffusion_lesson.metrics import evaluate, reference_features
from diffusion_lesson.schedules import Schedule, make_schedule
from diffusion_lesson.training import TrainConfig, TrainState, restore_training, start_training
from diffusion_lesson.unet import UNet, UNetConfig

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
MANIFEST_PATH = PRETRAINED_DIR / "manifest.json"
RUNS_ENV_VAR = "DIFFUSION_LESSON_RUNS"
# Course model name -> its kind. The runs folder holds the learner's own as <name>.pt.
COURSE_MODELS = {
    "mnist-unet": "unet",
    "mnist-autoencoder": "autoencoder",
    "mnist-latent-unet": "latent-unet",
    "mnist-cond-unet": "unet",  # class-conditional (notebook 07)
    "mnist-text-unet": "latent-unet",  # reads prompts (notebook 07)
    "mnist-classifier": "classifier",
}
_NETWORKS = {
    "unet": (UNet, UNetConfig),
    "latent-unet": (UNet, UNetConfig),
    "autoencoder": (Autoencoder, AutoencoderConfig),
    "classifier": (MnistClassifier, ClassifierConfig),
}


class LoadedModel(NamedTuple):
    """A model in eval mode with what it needs to be used, and a sentence saying which one it is.

    schedule: the noise schedule it was trained with (None for the autoencoder and classifier).
    autoencoder: for a latent model, the autoencoder whose latents it learned (decode with it), and
    autoencoder_path, the file it was read from.
    """

    model: nn.Module
    schedule: Schedule | None
    description: str
    path: Path
    kind: str
    autoencoder: Autoencoder | None = None
    autoencoder_path: Path | None = None


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


def shipped_name(path: str | os.PathLike) -> str | None:
    """The name of the shipped model whose file ``path`` is (a file in pretrained/), else None."""
    path = Path(path)
    if path.parent.resolve() != PRETRAINED_DIR.resolve():
        return None
    return next((name for name, entry in manifest().items() if entry["file"] == path.name), None)


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
        raise CheckpointError(
            f"{path} does not match its sha256 in the manifest (file {digest[:12]}..., manifest "
            f"{records[name]['sha256'][:12]}...): the file is damaged or was replaced; `git checkout` it"
        )
    return path


def build_model(kind: str, model_config: dict) -> nn.Module:
    """A freshly initialised network of ``kind`` from its config dict (as stored in checkpoints)."""
    if kind not in _NETWORKS:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {KINDS}")
    network, config = _NETWORKS[kind]
    return network(config.from_dict(model_config))


def load_model(
    path: str | os.PathLike,
    device: torch.device | str = "cpu",
    kinds: tuple[str, ...] = KINDS,
    autoencoder: str | os.PathLike | None = None,
    description: str | None = None,
) -> LoadedModel:
    """Any course checkpoint, by its kind: EMA weights, eval mode, with its schedule (and autoencoder).

    kinds: the kinds the caller can use; another kind is refused with a message naming both.
    autoencoder: for a latent model, a different autoencoder file than the one it records; it must
    scale latents as the recorded one did.
    """
    path = Path(path)
    ckpt = load_checkpoint(path, kinds)
    model = build_model(ckpt.kind, ckpt.model_config)
    load_weights(model, ckpt.weights())
    model = model.to(device).eval()
    schedule = make_schedule(ckpt.schedule["name"], ckpt.schedule["T"]).to(device) if ckpt.schedule else None
    decoder, decoder_path = None, None
    if ckpt.kind == "latent-unet":
        decoder_path = Path(autoencoder) if autoencoder is not None else _find_autoencoder(ckpt.extra["autoencoder"])
        decoder = _latent_autoencoder(path, ckpt, decoder_path, device)
    description = description or describe(path, ckpt)
    return LoadedModel(model, schedule, description, path, ckpt.kind, decoder, decoder_path)


def describe(path: Path, ckpt: Checkpoint) -> str:
    """One line: the file, its kind, training steps and (diffusion models) schedule."""
    schedule = f", {ckpt.schedule['name']} schedule, T = {ckpt.schedule['T']}" if ckpt.schedule else ""
    return f"{ckpt.kind} {path} ({ckpt.step} training steps{schedule})"


def load_course_model(
    name: str = "mnist-unet", device: torch.device | str = "cpu", prefer_own: bool = True
) -> LoadedModel:
    """The learner's runs/<name>.pt if it exists (and ``prefer_own``), else the shipped model.

    The classifier always comes from the package: FID numbers are comparable only with its features.
    """
    if name not in COURSE_MODELS:
        raise ValueError(f"no course model named {name!r}; choose one of {sorted(COURSE_MODELS)}")
    kind = COURSE_MODELS[name]
    own = runs_dir() / f"{name}.pt"
    if prefer_own and kind != "classifier" and own.is_file():
        return load_model(own, device, (kind,), description=f"your own model: {describe(own, load_checkpoint(own))}")
    path, record = pretrained_path(name), manifest()[name]
    ckpt = load_checkpoint(path, (kind,))
    description = f"the shipped model: {describe(path, ckpt)}; trained with: {record['command']}"
    if record.get("resumed_with"):  # the last resume set the step count the model reached
        description += f"; resumed with: {record['resumed_with'][-1]}"
    if earlier := earlier_runs(record):
        steps = sum(run["steps"] for run in earlier)
        description += f"; started from the weights of {len(earlier)} earlier run(s), {steps} steps in all (manifest)"
    return load_model(path, device, (kind,), description=description)


def earlier_runs(record: dict) -> list[dict]:
    """The runs a shipped model was fine-tuned from (train --init-from), newest first, from its "started_from" chain."""
    runs = []
    while (record := record.get("started_from")) is not None:
        runs.append(record)
    return runs


class FeatureSpace(NamedTuple):
    """FID's yardstick: the shipped classifier, the id its cached features go by, the test set's features (N, 128)."""

    classifier: MnistClassifier
    classifier_id: str
    reference: Tensor


def course_feature_space(device: torch.device | str = "cpu") -> FeatureSpace:
    """The shipped classifier and the MNIST test set's features in it (cached once per classifier)."""
    classifier = load_course_model("mnist-classifier", device).model
    classifier_id = manifest()["mnist-classifier"]["sha256"]
    return FeatureSpace(classifier, classifier_id, reference_features(classifier, classifier_id, "test"))


def course_fid(images: np.ndarray, device: torch.device | str = "cpu") -> dict:
    """FID and KID of uint8 digits (N, 28, 28) against the MNIST test set in the shipped classifier's features."""
    space = course_feature_space(device)
    return {**evaluate(images, space.classifier, space.reference), "classifier_sha256": space.classifier_id[:16]}


def objective_for(ckpt: Checkpoint, device: torch.device | str = "cpu"):
    """The training objective a checkpoint was made with, rebuilt from its settings (for resuming)."""
    if ckpt.kind in ("unet", "latent-unet"):
        schedule = make_schedule(ckpt.schedule["name"], ckpt.schedule["T"]).to(device)
        return DiffusionObjective(schedule, **ckpt.objective)
    if ckpt.kind == "autoencoder":
        return AutoencoderObjective.from_dict(ckpt.objective)
    return ClassifierObjective.from_dict(ckpt.objective)


def resume_training(
    path: str | os.PathLike, device: torch.device | str = "cpu", config: TrainConfig | None = None
) -> TrainState:
    """Rebuild a run of any kind from its checkpoint so that ``training.train`` continues it exactly.

    ``config`` may replace the saved TrainConfig (e.g. more steps); the model always comes from the file.
    """
    ckpt = load_checkpoint(path)
    if ckpt.optimizer is None:
        raise CheckpointError(f"{path} holds only weights (a shipped model?), not a training run that can be resumed")
    config = config or TrainConfig.from_dict(ckpt.train_config)
    model = build_model(ckpt.kind, ckpt.model_config)
    state = start_training(model, objective_for(ckpt, device), config, device, ckpt.kind)
    return restore_training(state, ckpt)


def _latent_autoencoder(path: Path, ckpt: Checkpoint, source: Path, device: torch.device | str) -> Autoencoder:
    """The autoencoder in ``source``, checked by the latent scale the model in ``path`` was trained on."""
    autoencoder = load_model(source, device, ("autoencoder",)).model
    expected, found = ckpt.extra["latent_scale"], autoencoder.latent_scale.item()
    if not math.isclose(expected, found, rel_tol=1e-4):
        raise CheckpointError(
            f"{path} was trained on latents scaled by {expected:.5g}, but the autoencoder {source} "
            f"scales by {found:.5g}: they do not belong together"
        )
    return autoencoder


def _find_autoencoder(recorded: str) -> Path:
    """The autoencoder a latent checkpoint names: a shipped model's name, a path, or a path in the checkout."""
    if recorded in manifest():
        return pretrained_path(recorded)
    for candidate in (Path(recorded), runs_dir().parent / recorded):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"the autoencoder this latent model was trained with, {recorded}, is not there; pass it with --autoencoder"
    )
