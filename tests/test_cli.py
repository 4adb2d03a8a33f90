"""The command-line tools end to end on tiny settings, and their refusal of bad flags."""

import json
import subprocess
import sys

import numpy as np
import pytest

from diffusion_lesson import autoencoder as autoencoder_cli
from diffusion_lesson import pretrained
from diffusion_lesson import sample as sample_cli
from diffusion_lesson import train as train_cli
from diffusion_lesson.checkpoints import load_checkpoint
from diffusion_lesson.data import DATA_ENV_VAR, data_root

needs_mnist = pytest.mark.skipif(
    not (data_root() / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file(), reason=f"MNIST not under {DATA_ENV_VAR}"
)
TINY = ["--base-channels", "8", "--batch-size", "4", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "tiny.pt"
    if not (data_root() / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.skip("MNIST not available")
    assert train_cli.main(["--steps", "3", "--out", str(out), *TINY]) == 0
    return out


@needs_mnist
def test_train_writes_checkpoint_and_sidecar(tiny_run):
    assert load_checkpoint(tiny_run).step == 3
    record = json.loads(tiny_run.with_suffix(".json").read_text())
    assert record["steps"] == 3 and record["command"].startswith("python -m diffusion_lesson.train --steps 3")
    assert record["wall_time_s"] > 0 and record["device"].startswith("cpu")


@needs_mnist
def test_train_resumes_and_refuses_to_clobber(tiny_run, tmp_path, capsys):
    copy = tmp_path / "copy.pt"
    copy.write_bytes(tiny_run.read_bytes())
    with pytest.raises(SystemExit) as info:
        train_cli.main(["--steps", "5", "--out", str(copy), *TINY])
    assert info.value.code == 2 and "exists: pass --resume" in capsys.readouterr().err
    assert train_cli.main(["--steps", "5", "--out", str(copy), "--resume", *TINY]) == 0
    assert load_checkpoint(copy).step == 5


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--steps", "0"], "must be a positive integer"),
        (["--steps", "many"], "invalid positive_int value"),
        (["--schedule", "quadratic"], "invalid choice"),
        (["--dataset", "cifar10"], "invalid choice"),
        (["--device", "gpu"], "unknown device"),
        (["--resume", "--out", "/nonexistent/run.pt"], "no checkpoint at"),
    ],
)
def test_train_rejects_bad_flags(flags, message, capsys):
    with pytest.raises(SystemExit) as info:
        train_cli.main(flags)
    assert info.value.code == 2 and message in capsys.readouterr().err


@needs_mnist
def test_sample_from_a_checkpoint(tiny_run, tmp_path):
    out = tmp_path / "s.npz"
    args = ["--n", "3", "--seed", "1", "--checkpoint", str(tiny_run), "--sampler", "ddim", "--steps", "2"]
    assert sample_cli.main([*args, "--out", str(out), "--device", "cpu"]) == 0
    images = np.load(out)["images"]
    assert images.shape == (3, 28, 28) and images.dtype == np.uint8
    again = tmp_path / "again.npz"
    sample_cli.main([*args, "--out", str(again), "--device", "cpu"])
    assert np.array_equal(images, np.load(again)["images"])  # same seed, same digits


def test_sample_from_the_shipped_model_with_ddpm(tmp_path):
    out = tmp_path / "shipped.npz"
    assert sample_cli.main(["--n", "2", "--seed", "0", "--out", str(out), "--sampler", "ddpm", "--device", "cpu"]) == 0
    images = np.load(out)["images"]
    assert images.shape == (2, 28, 28) and images.dtype == np.uint8 and images.max() > 128


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--n", "0"], "must be a positive integer"),
        (["--out", "samples.png"], "must end in .npz"),
        (["--out", "/nonexistent/folder/s.npz"], "does not exist"),
        (["--steps", "1001"], "at most T = 1000"),
        (["--eta", "-1"], "must be a number >= 0"),
        (["--sampler", "euler"], "invalid choice"),
        (["--checkpoint", "/nonexistent.pt"], "no file at"),
    ],
)
def test_sample_rejects_bad_flags(flags, message, capsys, tmp_path):
    base = {"--n": "2", "--seed": "0", "--out": str(tmp_path / "s.npz")}
    for flag, value in zip(flags[::2], flags[1::2], strict=True):
        base[flag] = value
    with pytest.raises(SystemExit) as info:
        sample_cli.main([item for pair in base.items() for item in pair] + ["--device", "cpu"])
    assert info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    "module", ["diffusion_lesson.train", "diffusion_lesson.sample", "diffusion_lesson.autoencoder"]
)
def test_help_runs_as_a_module(module):
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith(f"usage: python -m {module}")


def test_sample_latent_from_the_shipped_pair(tmp_path):
    out = tmp_path / "latent.npz"
    args = ["--model", "latent", "--n", "3", "--seed", "0", "--steps", "5", "--device", "cpu"]
    assert sample_cli.main([*args, "--out", str(out)]) == 0
    images = np.load(out)["images"]
    assert images.shape == (3, 28, 28) and images.dtype == np.uint8 and images.max() > 128
    again = tmp_path / "again.npz"
    sample_cli.main([*args, "--out", str(again)])
    assert np.array_equal(images, np.load(again)["images"])  # same seed, same digits


def test_sample_refuses_to_mix_up_pixel_and_latent_files(tmp_path, capsys):
    shipped_ae = str(pretrained.pretrained_path("mnist-autoencoder"))
    shipped_latent = str(pretrained.pretrained_path("mnist-latent-unet"))
    base = ["--n", "2", "--seed", "0", "--out", str(tmp_path / "s.npz"), "--device", "cpu"]
    for flags, message in [
        (["--autoencoder", shipped_ae], "--autoencoder needs --model latent"),
        (["--checkpoint", shipped_ae], "holds an autoencoder, not a pixel-space model"),
        (["--checkpoint", shipped_latent], "for a latent model pass --model latent"),
        (["--model", "latent", "--checkpoint", shipped_ae], "is not a latent diffusion model"),
        (["--model", "latent", "--autoencoder", str(tmp_path / "none.pt")], "--autoencoder: no file at"),
    ]:
        with pytest.raises(SystemExit) as info:
            sample_cli.main(base + flags)
        assert info.value.code == 2 and message in capsys.readouterr().err, flags


@pytest.mark.slow
@needs_mnist
def test_train_latent_with_the_shipped_autoencoder(tmp_path, monkeypatch):
    monkeypatch.setenv(pretrained.RUNS_ENV_VAR, str(tmp_path))  # no runs/mnist-autoencoder.pt: the shipped one
    out = tmp_path / "latent.pt"
    assert train_cli.main(["--model", "latent", "--steps", "2", "--out", str(out), *TINY]) == 0
    ckpt = load_checkpoint(out)
    assert ckpt.step == 2 and ckpt.model_config["in_channels"] == 4 and ckpt.model_config["image_size"] == 7
    assert ckpt.extra["kind"] == "latent-unet" and ckpt.extra["autoencoder"] == "mnist-autoencoder"
    sample = ["--model", "latent", "--checkpoint", str(out), "--n", "2", "--seed", "0", "--steps", "2"]
    assert sample_cli.main([*sample, "--out", str(tmp_path / "s.npz"), "--device", "cpu"]) == 0
    assert np.load(tmp_path / "s.npz")["images"].shape == (2, 28, 28)


def test_autoencoder_cli_refuses_to_clobber_and_bad_flags(tmp_path, capsys):
    existing = tmp_path / "ae.pt"
    existing.write_bytes(b"keep me")
    for flags, message in [
        (["--out", str(existing)], "exists: pass --overwrite"),
        (["--steps", "0"], "must be a positive integer"),
        (["--device", "gpu", "--out", str(tmp_path / "new.pt")], "unknown device"),
    ]:
        with pytest.raises(SystemExit) as info:
            autoencoder_cli.main(flags)
        assert info.value.code == 2 and message in capsys.readouterr().err
    assert existing.read_bytes() == b"keep me"
    with pytest.raises(SystemExit) as info:
        train_cli.main(["--autoencoder", str(existing), "--out", str(tmp_path / "x.pt")])
    assert info.value.code == 2 and "--autoencoder needs --model latent" in capsys.readouterr().err
