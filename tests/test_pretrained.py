"""The shipped checkpoint: sha256, loading, and the learner's own run taking precedence."""

import shutil

import pytest
import torch

from diffusion_lesson import pretrained
from diffusion_lesson.checkpoints import save_checkpoint, sha256_of
from diffusion_lesson.unet import UNet, UNetConfig


def test_shipped_checkpoint_matches_its_sha256_and_loads():
    record = pretrained.manifest()["mnist-unet"]
    path = pretrained.pretrained_path("mnist-unet")
    assert sha256_of(path) == record["sha256"] and path.stat().st_size == record["bytes"]
    assert record["command"].startswith("python -m diffusion_lesson.train") and record["steps"] > 0
    loaded = pretrained.load_course_model("mnist-unet", prefer_own=False)
    assert not loaded.model.training and "shipped" in loaded.description
    x = torch.zeros(2, 1, 28, 28)
    assert loaded.model(x, torch.tensor([0, 999])).shape == x.shape


def test_damaged_checkpoint_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / "pretrained"
    shutil.copytree(pretrained.PRETRAINED_DIR, copy)
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", copy)
    monkeypatch.setattr(pretrained, "MANIFEST_PATH", copy / "manifest.json")
    target = copy / pretrained.manifest()["mnist-unet"]["file"]
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match its sha256"):
        pretrained.pretrained_path("mnist-unet")
    with pytest.raises(ValueError, match="no shipped model named 'cifar'"):
        pretrained.pretrained_path("cifar")


def test_the_learners_own_run_comes_first(tmp_path, monkeypatch):
    monkeypatch.setenv(pretrained.RUNS_ENV_VAR, str(tmp_path))
    assert pretrained.runs_dir() == tmp_path
    config = UNetConfig(base_channels=8)
    save_checkpoint(tmp_path / "mnist-unet.pt", model=UNet(config), model_config=config.to_dict(),
                    schedule_name="linear", T=1000, step=7)  # fmt: skip
    loaded = pretrained.load_course_model("mnist-unet")
    assert loaded.path == tmp_path / "mnist-unet.pt" and "7 training steps" in loaded.description
    assert loaded.model.config.base_channels == 8
    assert pretrained.load_course_model("mnist-unet", prefer_own=False).path.parent == pretrained.PRETRAINED_DIR


@pytest.mark.parametrize("name", ["mnist-autoencoder", "mnist-latent-unet"])
def test_shipped_chapter05_models_are_recorded_and_small(name):
    record = pretrained.manifest()[name]
    path = pretrained.pretrained_path(name)
    assert sha256_of(path) == record["sha256"] and record["bytes"] < 4_000_000
    program = "autoencoder" if name == "mnist-autoencoder" else "train --model latent"
    assert record["command"].startswith(f"python -m diffusion_lesson.{program}") and record["steps"] > 0


def test_the_learners_own_autoencoder_comes_first(tmp_path, monkeypatch):
    from diffusion_lesson.autoencoder import Autoencoder, AutoencoderConfig

    monkeypatch.setenv(pretrained.RUNS_ENV_VAR, str(tmp_path))
    config = AutoencoderConfig(widths=(16, 32))
    save_checkpoint(tmp_path / "mnist-autoencoder.pt", model=Autoencoder(config), model_config=config.to_dict(),
                    step=3, extra={"kind": "autoencoder"})  # fmt: skip
    loaded = pretrained.load_course_autoencoder()
    assert loaded.path == tmp_path / "mnist-autoencoder.pt" and "3 steps" in loaded.description
    assert loaded.model.config.widths == (16, 32)
    shipped = pretrained.load_course_autoencoder(prefer_own=False)
    assert shipped.path.parent == pretrained.PRETRAINED_DIR and "shipped" in shipped.description
