"""The command-line tools end to end on tiny settings, and their refusal of bad flags."""

import ast
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion_lesson import models
from diffusion_lesson.checkpoints import load_checkpoint, sha256_of
from diffusion_lesson.cli import finish
from diffusion_lesson.cli import sample as sample_cli
from diffusion_lesson.cli import train as train_cli
from diffusion_lesson.data import DATA_ENV_VAR, LabeledImages, data_root, load_mnist
from diffusion_lesson.runtime import bf16_pays
from diffusion_lesson.unet import UNetConfig

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
    notebook = _notebook_parameters("03_training.ipynb")  # the U-Net that notebook 03 builds, by default
    assert load_checkpoint(tiny_run).model_config["blocks_per_level"] == notebook["BLOCKS_PER_LEVEL"]


@needs_mnist
def test_train_for_minutes_fits_the_steps_to_the_time(tmp_path, capsys):
    out = tmp_path / "timed.pt"
    start = time.perf_counter()
    assert train_cli.main(["--minutes", "0.05", "--out", str(out), *TINY]) == 0  # 3 seconds of training
    seconds = time.perf_counter() - start
    assert "as many steps as fit in 0.05 minutes" in capsys.readouterr().out
    saved = load_checkpoint(out)
    assert saved.step > 20 and saved.train_config["steps"] == saved.step  # measured, then ended where it said
    assert seconds < 60, f"3 s of training took {seconds:.0f} s in all"
    with pytest.raises(SystemExit) as info:
        train_cli.main(["--minutes", "1", "--steps", "10", "--out", str(tmp_path / "both.pt"), *TINY])
    assert info.value.code == 2 and "give --steps or --minutes, not both" in capsys.readouterr().err


def test_bf16_is_on_for_a_new_pixel_run_where_it_pays_and_the_flags_decide_otherwise():
    def bf16(*argv: str) -> bool:
        return train_cli._loop_config(train_cli.build_parser().parse_args(list(argv)), "cpu").bf16_autocast

    assert bf16() == bf16_pays("cpu")  # this machine's answer: on with bf16 instructions, off without
    assert (bf16("--bf16"), bf16("--no-bf16")) == (True, False)
    assert bf16("--model", "latent") is False  # measured on the pixel run only


@needs_mnist
def test_train_resumes_and_refuses_to_clobber(tiny_run, tmp_path, capsys):
    copy = tmp_path / "copy.pt"
    copy.write_bytes(tiny_run.read_bytes())
    first = json.loads(tiny_run.with_suffix(".json").read_text())
    # A large earlier wall time, so the check below sees accumulation however fast two steps run.
    copy.with_suffix(".json").write_text(json.dumps(first | {"wall_time_s": 1000.0}))
    with pytest.raises(SystemExit) as info:
        train_cli.main(["--steps", "5", "--out", str(copy), *TINY])
    assert info.value.code == 2 and "exists: pass --resume" in capsys.readouterr().err
    assert train_cli.main(["--steps", "5", "--out", str(copy), "--resume", *TINY]) == 0
    assert load_checkpoint(copy).step == 5
    record = json.loads(copy.with_suffix(".json").read_text())
    assert record["command"] == first["command"] and record["steps"] == 5
    assert record["resumed_with"] == [
        f"python -m diffusion_lesson.train --steps 5 --out {copy} --resume {' '.join(TINY)}"
    ]
    assert 1000.0 <= record["wall_time_s"] < 1000.0 + 60
    for changed in (["--batch-size", "8"], ["--blocks-per-level", "1"], ["--base-channels", "16"], ["--no-attention"]):
        with pytest.raises(SystemExit) as info:  # a resumed run keeps its loop and network
            train_cli.main(["--steps", "6", "--out", str(copy), "--resume", *TINY, *changed])
        assert info.value.code == 2 and "and a resumed run keeps it" in capsys.readouterr().err, changed
    assert load_checkpoint(copy).step == 5


@needs_mnist
@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM and ignored SIGINT are POSIX")
def test_kill_stops_a_background_training_run_cleanly(tmp_path):
    """A run started as `cmd &` ignores Ctrl-C (the shell's doing); `kill PID` still saves the step it reached."""
    out = tmp_path / "background.pt"
    argv = [sys.executable, "-m", "diffusion_lesson.train", "--steps", "100000", "--checkpoint-every", "1",
            "--out", str(out), *TINY]  # fmt: skip
    ignore_ctrl_c = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731  what `&` does
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    with subprocess.Popen(argv, **pipes, preexec_fn=ignore_ctrl_c) as job:
        deadline = time.monotonic() + 120
        while not out.exists() and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.1)
        assert out.exists(), "the run wrote no checkpoint within 120 s"
        job.send_signal(signal.SIGTERM)
        stdout, stderr = job.communicate(timeout=120)
    assert job.returncode == 130 and "Traceback" not in stderr, stderr
    stopped = int(re.search(r"stopped at step (\d+); continue with the same command plus --resume", stdout).group(1))
    assert 1 <= stopped < 100000 and load_checkpoint(out).step == stopped


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--steps", "0"], "must be a positive integer"),
        (["--steps", "many"], "must be a positive integer, got 'many'"),
        (["--lr", "0"], "must be a number > 0"),
        (["--ema-decay", "1"], "must lie in [0, 1)"),
        (["--model", "gan"], "invalid choice"),
        (["--schedule", "quadratic"], "invalid choice"),
        (["--dataset", "cifar10"], "invalid choice"),
        (["--device", "gpu"], "unknown device"),
        (["--resume", "--out", "/nonexistent/run.pt"], "no checkpoint at"),
        (["--blocks-per-level", "0"], "must be a positive integer"),
        (["--model", "classifier", "--blocks-per-level", "2"], "--blocks-per-level: U-Nets only"),
        (["--model", "autoencoder", "--base-channels", "8", "--no-attention"], "--no-attention: U-Nets only"),
        (["--model", "classifier", "--init-from", "mnist-unet"], "--init-from: U-Nets only"),
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
    made_by = json.loads(str(np.load(out)["made_by"]))  # the file says which checkpoint made it, and how
    assert made_by["model"] == str(tiny_run) and made_by["sha256"] == sha256_of(tiny_run)
    assert made_by["device"] == "cpu" and "autoencoder" not in made_by
    expected = {"sampler": "ddim", "steps": 2, "eta": 0.0, "clip_x0": False, "seed": 1, "n": 3}
    assert {k: made_by[k] for k in expected} == expected


def test_sample_from_the_shipped_model_with_ddpm(tmp_path):
    out = tmp_path / "shipped.npz"
    assert sample_cli.main(["--n", "2", "--seed", "0", "--out", str(out), "--sampler", "ddpm", "--device", "cpu"]) == 0
    images = np.load(out)["images"]
    assert images.shape == (2, 28, 28) and images.dtype == np.uint8 and images.max() > 128
    made_by = json.loads(str(np.load(out)["made_by"]))
    assert made_by["model"] == "mnist-unet" and made_by["sha256"] == models.manifest()["mnist-unet"]["sha256"]
    assert (made_by["sampler"], made_by["steps"], made_by["variance"]) == ("ddpm", 1000, "beta")
    assert "eta" not in made_by


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--n", "0"], "must be a positive integer"),
        (["--out", "samples.png"], "must end in .npz"),
        (["--out", "/nonexistent/folder/s.npz"], "does not exist"),
        (["--steps", "1001"], "at most T = 1000"),
        (["--eta", "-1"], "must be a finite number >= 0"),
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
    "module", ["diffusion_lesson.train", "diffusion_lesson.sample", "diffusion_lesson.fid", "diffusion_lesson.ship"]
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
    made_by, shipped = json.loads(str(np.load(out)["made_by"])), models.manifest()
    assert (made_by["model"], made_by["autoencoder"]) == ("mnist-latent-unet", "mnist-autoencoder")
    assert made_by["autoencoder_sha256"] == shipped["mnist-autoencoder"]["sha256"]


def test_sample_refuses_to_mix_up_pixel_and_latent_files(tmp_path, capsys):
    shipped_ae = str(models.pretrained_path("mnist-autoencoder"))
    shipped_latent = str(models.pretrained_path("mnist-latent-unet"))
    base = ["--n", "2", "--seed", "0", "--out", str(tmp_path / "s.npz"), "--device", "cpu"]
    for flags, message in [
        (["--autoencoder", shipped_ae], "--autoencoder needs --model latent"),
        (["--checkpoint", shipped_ae], "holds a model of kind 'autoencoder', but this needs unet"),
        (["--checkpoint", shipped_latent], "for a latent model pass --model latent"),
        (
            ["--model", "latent", "--checkpoint", shipped_ae],
            "holds a model of kind 'autoencoder', but this needs latent-unet",
        ),
        (["--model", "latent", "--autoencoder", str(tmp_path / "none.pt")], "--autoencoder: no file at"),
    ]:
        with pytest.raises(SystemExit) as info:
            sample_cli.main(base + flags)
        assert info.value.code == 2 and message in capsys.readouterr().err, flags


@pytest.mark.slow
@needs_mnist
def test_train_latent_with_the_shipped_autoencoder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(models.RUNS_ENV_VAR, str(tmp_path))  # no runs/mnist-autoencoder.pt: the shipped one
    out = tmp_path / "latent.pt"
    assert train_cli.main(["--model", "latent", "--steps", "2", "--out", str(out), *TINY]) == 0
    ckpt = load_checkpoint(out)
    assert ckpt.step == 2 and ckpt.model_config["in_channels"] == 4 and ckpt.model_config["image_size"] == 7
    assert ckpt.kind == "latent-unet" and ckpt.extra["autoencoder"] == "mnist-autoencoder"
    sample = ["--model", "latent", "--checkpoint", str(out), "--n", "2", "--seed", "0", "--steps", "2"]
    assert sample_cli.main([*sample, "--out", str(tmp_path / "s.npz"), "--device", "cpu"]) == 0
    assert np.load(tmp_path / "s.npz")["images"].shape == (2, 28, 28)
    tuned = ["--model", "latent", "--steps", "1", *TINY]
    assert train_cli.main([*tuned, "--init-from", str(out), "--out", str(tmp_path / "tuned.pt")]) == 0
    other = torch.load(out, weights_only=True)
    other["extra"]["latent_scale"] *= 1.01  # as if trained on another autoencoder's latents
    torch.save(other, tmp_path / "other.pt")
    with pytest.raises(SystemExit) as info:
        train_cli.main([*tuned, "--init-from", str(tmp_path / "other.pt"), "--out", str(tmp_path / "refused.pt")])
    assert info.value.code == 2 and not (tmp_path / "refused.pt").exists()
    assert "trained on another autoencoder's latents; give --autoencoder mnist-autoencoder" in capsys.readouterr().err


def test_autoencoder_cli_refuses_to_clobber_and_bad_flags(tmp_path, capsys):
    existing = tmp_path / "ae.pt"
    existing.write_bytes(b"keep me")
    for flags, message in [
        (["--out", str(existing)], "exists: pass --resume to continue that run, --overwrite to replace it"),
        (["--steps", "0"], "must be a positive integer"),
        (["--device", "gpu", "--out", str(tmp_path / "new.pt")], "unknown device"),
    ]:
        with pytest.raises(SystemExit) as info:
            train_cli.main(["--model", "autoencoder", *flags])
        assert info.value.code == 2 and message in capsys.readouterr().err
    assert existing.read_bytes() == b"keep me"
    with pytest.raises(SystemExit) as info:
        train_cli.main(["--autoencoder", str(existing), "--out", str(tmp_path / "x.pt")])
    assert info.value.code == 2 and "--autoencoder needs --model latent" in capsys.readouterr().err


@pytest.fixture
def first_digits_only(monkeypatch):
    """The commands see the first 2,000 digits of each split. Their finishing steps otherwise pass all
    70,000 digits through the network (the fitted scale, the test accuracy): 80 s of one CPU thread."""

    def first_digits(*args, **kwargs):
        data = load_mnist(*args, **kwargs)
        return LabeledImages(data.images[:2000], data.labels[:2000])

    monkeypatch.setattr(train_cli, "load_mnist", first_digits)
    monkeypatch.setattr(finish, "load_mnist", first_digits)


@needs_mnist
def test_train_the_autoencoder_and_the_classifier_through_the_same_command(tmp_path, first_digits_only):
    ae, clf = tmp_path / "ae.pt", tmp_path / "clf.pt"
    tiny = ["--batch-size", "4", "--device", "cpu", "--quiet", "--steps", "2"]
    assert train_cli.main(["--model", "autoencoder", "--out", str(ae), *tiny]) == 0
    assert train_cli.main(["--model", "classifier", "--out", str(clf), *tiny]) == 0
    assert models.load_model(ae).model.latent_scale.item() != 1.0  # fitted after training
    assert "test_accuracy" in load_checkpoint(clf).extra
    assert train_cli.main(["--model", "autoencoder", "--out", str(ae), "--resume", *tiny[:-1], "4"]) == 0
    assert load_checkpoint(ae).step == 4
    with pytest.raises(SystemExit) as info:
        train_cli.main(["--model", "pixel", "--out", str(ae), "--resume", *tiny])
    assert info.value.code == 2


def test_ship_copies_the_ema_weights_and_records_the_sidecar(tiny_run, tmp_path, monkeypatch):
    from diffusion_lesson.cli import ship

    copy = tmp_path / "pretrained"
    copy.mkdir()
    (copy / "manifest.json").write_text(models.MANIFEST_PATH.read_text())
    monkeypatch.setattr(models, "PRETRAINED_DIR", copy)
    monkeypatch.setattr(models, "MANIFEST_PATH", copy / "manifest.json")
    assert ship.main([str(tiny_run), "--name", "mnist-unet"]) == 0
    record = models.manifest()["mnist-unet"]
    assert record["steps"] == 3 and "fid" not in record  # the old file's FIDs do not describe the new one
    shipped = load_checkpoint(copy / "mnist_unet.pt")
    assert shipped.optimizer is None and shipped.ema is None
    assert all(torch.equal(shipped.model[k], v) for k, v in load_checkpoint(tiny_run).ema.items())


def test_a_fine_tuning_run_records_the_shipped_model_it_started_from():
    from diffusion_lesson.cli.provenance import describe_start

    started_from = describe_start(models.pretrained_path("mnist-unet"))
    shipped = models.manifest()["mnist-unet"]
    assert started_from["model"] == "mnist-unet" and started_from["sha256"] == shipped["sha256"]
    assert started_from["command"] == shipped["command"] and started_from["steps"] == shipped["steps"]
    assert "fid" not in started_from  # the FIDs describe that file, not the fine-tuned one


@needs_mnist
def test_init_from_starts_a_new_run_at_a_trained_models_weights(tiny_run, tmp_path, capsys):
    tuned = tmp_path / "tuned.pt"
    flags = ["--steps", "1", "--lr", "1e-4", "--seed", "1", "--init-from", str(tiny_run)]  # seed 1: another init
    assert train_cli.main([*flags, "--out", str(tuned), *TINY]) == 0
    saved, source = load_checkpoint(tuned), load_checkpoint(tiny_run)
    assert saved.step == 1 and saved.train_config["lr"] == 1e-4  # a new run, on its own schedule
    for weights in (saved.model, saved.ema):  # one small step from the source's EMA weights, not a fresh network
        gaps = [(weights[k] - w).abs().max().item() for k, w in source.ema.items() if w.dtype.is_floating_point]
        assert 0 < max(gaps) < 1e-3
    started_from = json.loads(tuned.with_suffix(".json").read_text())["started_from"]  # its history is kept
    assert started_from["sha256"] == sha256_of(tiny_run) and started_from["command"].startswith("python -m")
    for flags, message in [
        (["--base-channels", "16"], "base_channels 8 there, 16 here"),
        (["--blocks-per-level", "1"], "blocks_per_level 2 there, 1 here"),
        (["--schedule", "cosine"], "give --schedule linear"),
        (["--model", "latent"], "holds a model of kind 'unet'"),
    ]:
        args = ["--steps", "1", "--out", str(tmp_path / "refused.pt"), "--init-from", str(tiny_run), *TINY, *flags]
        with pytest.raises(SystemExit) as info:
            train_cli.main(args)
        assert info.value.code == 2 and message in capsys.readouterr().err, flags
    assert not (tmp_path / "refused.pt").exists()
    with pytest.raises(SystemExit) as info:
        train_cli.main(["--init-from", "mnist-unet-v9", "--out", str(tmp_path / "x.pt"), *TINY])
    assert info.value.code == 2 and "no such file, nor a shipped model (mnist-unet" in capsys.readouterr().err


@needs_mnist
def test_train_uses_min_snr_weighting_unless_told_plain(tiny_run, tmp_path):
    assert load_checkpoint(tiny_run).objective["min_snr_gamma"] == 5.0  # the default recipe
    plain = tmp_path / "plain.pt"
    assert train_cli.main(["--steps", "1", "--out", str(plain), "--plain-loss", *TINY]) == 0
    assert load_checkpoint(plain).objective["min_snr_gamma"] is None


@needs_mnist
@needs_mnist
def test_a_text_model_trains_from_the_command_and_samples_a_prompt(tmp_path, capsys):
    run = tmp_path / "text.pt"
    assert train_cli.main(["--steps", "2", "--out", str(run), "--model", "text", "--label-dropout", "0.1", *TINY]) == 0
    saved = load_checkpoint(run)
    assert saved.kind == "latent-unet" and saved.model_config["vocabulary"] is not None
    out = tmp_path / "s.npz"
    base = ["--n", "3", "--seed", "0", "--out", str(out), "--steps", "2", "--device", "cpu"]
    assert sample_cli.main([*base, "--checkpoint", str(run), "--prompt", "a thick 7", "--guidance", "2"]) == 0
    assert np.load(out)["images"].shape == (3, 28, 28)
    with pytest.raises(SystemExit) as info:
        sample_cli.main([*base, "--checkpoint", str(run), "--model", "latent", "--digit", "7"])
    assert info.value.code == 2 and "does not take a digit (it is text-conditioned: give it a prompt)" in (
        capsys.readouterr().err
    )
    with pytest.raises(SystemExit) as info:
        train_cli.main(["--steps", "6", "--out", str(run), "--resume", *TINY])
    assert info.value.code == 2 and "resume it with --model text" in capsys.readouterr().err


def _notebook_parameters(name: str) -> dict:
    """The constants assigned in a notebook's parameters cell (the one that sets QUICK)."""
    notebook = json.loads((Path(__file__).parents[1] / "notebooks" / name).read_text())
    source = next("".join(c["source"]) for c in notebook["cells"] if "QUICK = " in "".join(c["source"]))
    return {
        node.targets[0].id: node.value.value
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
    }


def test_the_train_command_defaults_to_notebook_03s_run():
    nb = _notebook_parameters("03_training.ipynb")
    args = train_cli.build_parser().parse_args([])
    loop = train_cli._loop_config(args)  # --model pixel, nothing given
    assert (train_cli._minutes(args), nb["TRAIN_STEPS"]) == (nb["TRAIN_MINUTES"], None)  # a time, not a step count
    assert loop.batch_size == nb["BATCH_SIZE"]
    assert (args.bf16, nb["BF16"]) == (None, None)  # both: bf16 autocast where it pays (runtime.bf16_pays)
    assert (loop.lr, loop.seed) == (nb["LR"], nb["SEED"])
    assert (args.min_snr_gamma, args.schedule) == (nb["MIN_SNR_GAMMA"], nb["SCHEDULE"])
    assert (args.base_channels or UNetConfig().base_channels) == nb["BASE_CHANNELS"]
