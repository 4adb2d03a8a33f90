"""The model registry: shipped files and their sha256, the learner's own run first, any checkpoint by its kind."""

import shutil

import pytest
import torch

from diffusion_lesson import models
from diffusion_lesson.autoencoder import Autoencoder, AutoencoderConfig
from diffusion_lesson.checkpoints import CheckpointError, save_checkpoint, sha256_of
from diffusion_lesson.unet import UNet, UNetConfig

SMALL = UNetConfig(base_channels=8)


@pytest.mark.parametrize("name", sorted(models.COURSE_MODELS))
def test_every_shipped_model_matches_its_sha256_and_loads_with_its_kind(name):
    record = models.manifest()[name]
    path = models.pretrained_path(name)
    assert sha256_of(path) == record["sha256"] and path.stat().st_size == record["bytes"] < 20_000_000
    assert record["command"].startswith("python -m diffusion_lesson.train") and record["steps"] > 0
    loaded = models.load_course_model(name, prefer_own=False)
    assert loaded.kind == models.COURSE_MODELS[name] and not loaded.model.training
    assert "shipped" in loaded.description and record["command"] in loaded.description
    assert all(command in loaded.description for command in record.get("resumed_with", [])[-1:])
    earlier = models.earlier_runs(record)
    assert (f"{len(earlier)} earlier run(s)" in loaded.description) == bool(earlier)
    assert (loaded.schedule is not None) == (loaded.kind in ("unet", "latent-unet"))
    assert (loaded.autoencoder is not None) == (loaded.kind == "latent-unet")


def test_damaged_checkpoint_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / "pretrained"
    shutil.copytree(models.PRETRAINED_DIR, copy)
    monkeypatch.setattr(models, "PRETRAINED_DIR", copy)
    monkeypatch.setattr(models, "MANIFEST_PATH", copy / "manifest.json")
    target = copy / models.manifest()["mnist-unet"]["file"]
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match its sha256"):
        models.pretrained_path("mnist-unet")
    with pytest.raises(ValueError, match="no shipped model named 'cifar'"):
        models.pretrained_path("cifar")


def _own_unet(folder, schedule="linear", step=7):
    save_checkpoint(folder / "mnist-unet.pt", kind="unet", model=UNet(SMALL), model_config=SMALL.to_dict(),
                    schedule={"name": schedule, "T": 1000}, step=step)  # fmt: skip


def test_the_learners_own_run_comes_first_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv(models.RUNS_ENV_VAR, str(tmp_path))
    assert models.runs_dir() == tmp_path
    _own_unet(tmp_path)
    loaded = models.load_course_model("mnist-unet")
    assert loaded.path == tmp_path / "mnist-unet.pt" and loaded.description.startswith("your own model")
    assert "7 training steps" in loaded.description and loaded.model.config.base_channels == 8
    assert models.load_course_model("mnist-unet", prefer_own=False).path.parent == models.PRETRAINED_DIR


def test_a_cosine_trained_learners_model_comes_back_with_its_cosine_schedule(tmp_path, monkeypatch):
    """The bug this registry fixes: chapters 03-06 used to build a linear schedule for any model."""
    monkeypatch.setenv(models.RUNS_ENV_VAR, str(tmp_path))
    _own_unet(tmp_path, schedule="cosine")
    loaded = models.load_course_model("mnist-unet")
    assert loaded.schedule.name == "cosine" and "cosine schedule" in loaded.description
    assert models.load_course_model("mnist-unet", prefer_own=False).schedule.name == "linear"


def test_the_learners_own_autoencoder_comes_first(tmp_path, monkeypatch):
    monkeypatch.setenv(models.RUNS_ENV_VAR, str(tmp_path))
    config = AutoencoderConfig(widths=(16, 32))
    save_checkpoint(tmp_path / "mnist-autoencoder.pt", kind="autoencoder", model=Autoencoder(config),
                    model_config=config.to_dict(), step=3)  # fmt: skip
    loaded = models.load_course_model("mnist-autoencoder")
    assert loaded.path == tmp_path / "mnist-autoencoder.pt" and "3 training steps" in loaded.description
    assert loaded.model.config.widths == (16, 32)


def test_the_classifier_always_comes_from_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv(models.RUNS_ENV_VAR, str(tmp_path))
    (tmp_path / "mnist-classifier.pt").write_bytes(b"a learner's classifier")  # never read
    assert models.load_course_model("mnist-classifier").path.parent == models.PRETRAINED_DIR


def test_a_latent_model_with_a_different_autoencoder_is_refused(tmp_path):
    other = tmp_path / "other-ae.pt"
    ae = Autoencoder()
    ae.latent_scale.fill_(3.0)
    save_checkpoint(other, kind="autoencoder", model=ae, model_config=ae.config.to_dict())
    with pytest.raises(CheckpointError, match="do not belong together"):
        models.load_model(models.pretrained_path("mnist-latent-unet"), autoencoder=other)


def test_unknown_names_and_kinds_are_refused():
    with pytest.raises(ValueError, match="no course model named 'mnist-gan'"):
        models.load_course_model("mnist-gan")
    with pytest.raises(ValueError, match="unknown model kind 'gan'"):
        models.build_model("gan", {})


def test_shipped_weights_cannot_be_resumed():
    with pytest.raises(CheckpointError, match="holds only weights"):
        models.resume_training(models.pretrained_path("mnist-unet"))


def test_loaded_models_run_on_their_inputs():
    loaded = models.load_course_model("mnist-unet", prefer_own=False)
    x = torch.zeros(2, 1, 28, 28)
    assert loaded.model(x, torch.tensor([0, 999])).shape == x.shape


def test_earlier_runs_follow_the_started_from_chain_newest_first():
    record = {"steps": 5, "started_from": {"steps": 3, "file": "b.pt", "started_from": {"steps": 2, "file": "a.pt"}}}
    assert [run["file"] for run in models.earlier_runs(record)] == ["b.pt", "a.pt"]
    assert models.earlier_runs({"steps": 5}) == []
