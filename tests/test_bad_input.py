"""Bad input, one table: every row gets a message that names what was wrong, and nothing is written.

Each row is data: what is wrong (``input``), how it reaches the course (a command line or a call,
in a world where something else may be broken: see bad_input_worlds.py), and fragments of the
message it must get (``message``; " ... " separates fragments that appear in that order). A
command must exit 2 (130 after Ctrl-C) with the message and no traceback; the rows marked
``subprocess`` run as ``python -m diffusion_lesson.<command>`` in a fresh process. README.md's
"Bad input" section shows this same table; test_the_readme_shows_this_table keeps them equal.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from bad_input_worlds import (
    SHARED_MNIST,
    Call,
    Command,
    classifier_features,
    enter,
    fid,
    link_or_copy,
    make_files,
    sample,
    save_small_unet,
    snapshot,
    train,
)

from diffusion_lesson import metrics, models
from diffusion_lesson.cli.args import run
from diffusion_lesson.data import load_mnist
from diffusion_lesson.metrics import check_image_array

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


class Row(NamedTuple):
    input: str  # what is wrong
    how: Command | Call  # where it goes in
    message: str  # what the message says: fragments joined by " ... "
    world: str = ""  # what else is broken (bad_input_worlds.enter)
    code: int = 2  # a command's exit code
    subprocess: bool = False  # run the command in a fresh python process
    needs: str = ""  # "mnist": the good copy under $DIFFUSION_LESSON_DATA; "no-cuda": a machine without CUDA


# fmt: off
ROWS = [
    # checkpoint files
    Row("no file at the --checkpoint path", sample("--checkpoint", "missing.pt"),
        "--checkpoint: no file at missing.pt"),
    Row("an empty checkpoint file", sample("--checkpoint", "empty.pt"),
        "--checkpoint: ... the file is empty (0 bytes)"),
    Row("a garbage checkpoint file", sample("--checkpoint", "garbage.pt"),
        "--checkpoint: ... it is not a file written by torch.save", subprocess=True),
    Row("a truncated checkpoint file", sample("--checkpoint", "cut.pt"),
        "--checkpoint: ... it is truncated or damaged"),
    Row("the classifier given as a U-Net", sample("--checkpoint", "classifier.pt"),
        "holds a model of kind 'classifier', but this needs unet"),
    Row("the autoencoder given as a U-Net", sample("--checkpoint", "autoencoder.pt"),
        "holds a model of kind 'autoencoder', but this needs unet ... for a latent model pass --model latent"),
    Row("a checkpoint that lacks fields", sample("--checkpoint", "incomplete.pt"),
        "incomplete checkpoint: it lacks schedule, objective"),
    Row("a U-Net checkpoint without a noise schedule", sample("--checkpoint", "no-schedule.pt"),
        "without a usable noise schedule"),
    Row("no file at the --autoencoder path", sample("--model", "latent", "--autoencoder", "missing.pt"),
        "--autoencoder: no file at missing.pt"),
    Row("an empty --autoencoder file", sample("--model", "latent", "--autoencoder", "empty.pt"),
        "--autoencoder: ... the file is empty (0 bytes)"),
    Row("a garbage --autoencoder file", sample("--model", "latent", "--autoencoder", "garbage.pt"),
        "--autoencoder: ... it is not a file written by torch.save"),
    Row("a truncated --autoencoder file", sample("--model", "latent", "--autoencoder", "cut.pt"),
        "--autoencoder: ... it is truncated or damaged"),
    Row("a U-Net given as the autoencoder", sample("--model", "latent", "--autoencoder", "shipped-unet.pt"),
        "--autoencoder: ... holds a model of kind 'unet', but this needs autoencoder"),
    Row("--resume of a shipped model (weights only)", train("--resume", "--out", "shipped-unet.pt"),
        "holds only weights"),
    # schedule
    Row("DDIM-50 on a checkpoint trained with T = 20", sample("--checkpoint", "t20.pt"),
        "--steps must be at most T = 20 ... pass --steps 20 or fewer"),
    # data
    Row("a truncated MNIST file", Call(load_mnist, ("test",), text='load_mnist("test")'),
        "t10k-images-idx3-ubyte has 3,920,008 bytes instead of 7,840,016 ... delete the damaged file",
        "mnist-truncated:t10k-images-idx3-ubyte", needs="mnist"),
    Row("an MNIST file with a wrong checksum", Call(load_mnist, ("test",), text='load_mnist("test")'),
        "t10k-labels-idx1-ubyte has the wrong md5 checksum ... DIFFUSION_LESSON_DATA",
        "mnist-md5:t10k-labels-idx1-ubyte", needs="mnist"),
    Row("a truncated MNIST file, in a command", fid("--real-train", "200"),
        "train-labels-idx1-ubyte has 30,004 bytes instead of 60,008 ... delete the damaged file",
        "mnist-truncated:train-labels-idx1-ubyte", subprocess=True, needs="mnist"),
    Row("an MNIST file with a wrong checksum, in a command", train(),
        "train-labels-idx1-ubyte has the wrong md5 checksum", "mnist-md5:train-labels-idx1-ubyte", needs="mnist"),
    Row("MNIST missing and download=False",
        Call(load_mnist, ("test",), {"download": False}, 'load_mnist("test", download=False)'),
        "mnist is not in ... and download=False", "no-mnist"),
    Row("first run offline: no MNIST, the download fails", Call(load_mnist, ("test",), text='load_mnist("test")'),
        "the download failed, are you offline? ... DIFFUSION_LESSON_DATA", "offline"),
    # images
    Row("images with a channel axis", fid("channel-axis.npz"), "drop the channel axis with images[:, 0]"),
    Row("images of the wrong size", fid("32x32.npz"), "images must be shaped (N, 28, 28), got (200, 32, 32)"),
    Row("float images given to FID", fid("floats.npz"), "images must be uint8 in [0, 255], got float32"),
    Row("too few images for FID", fid("50-digits.npz"), "need at least 129 images, got 50"),
    Row("a file that is not an .npz archive", fid("text.npz"),
        "text.npz is not a readable .npz file: it is not a numpy archive"),
    Row("digits of unknown origin recorded as a shipped model's FID", fid("200-digits.npz", "--record", "mnist-unet"),
        "200-digits.npz does not say which model made its digits ... sample the shipped model"),
    Row("another model's digits recorded as a shipped model's FID",
        fid("old-run-digits.npz", "--record", "mnist-unet"),
        "old-run-digits.npz was made by old.pt (sha256 ... not by the shipped mnist-unet ... sample the shipped model"),
    Row("floats with NaN given to check_image_array",
        Call(check_image_array, (np.full((200, 28, 28), np.nan),), text="check_image_array(200 x 28 x 28 NaNs)"),
        "images must be uint8 in [0, 255], got float64; from floats in [-1, 1] use data.to_uint8"),
    Row("a torch tensor given to check_image_array",
        Call(check_image_array, (torch.zeros(200, 28, 28),), text="check_image_array(torch.zeros(200, 28, 28))"),
        "images must be a numpy array, got Tensor: from a torch tensor use images.cpu().numpy()"),
    Row("pixels in [0, 255] given to the classifier",
        Call(classifier_features, (torch.full((2, 1, 28, 28), 255.0),), text="classifier.features(255 * ones)"),
        "pixels must lie in [-1, 1], got values from 255 to 255"),
    Row("images with NaN given to the classifier",
        Call(classifier_features, (torch.full((2, 1, 28, 28), torch.nan),), text="classifier.features(NaNs)"),
        "the images contain NaN"),
    # numbers out of range
    Row("0 sampling steps", sample("--steps", "0"), "argument --steps: must be a positive integer, got 0"),
    Row("a negative number of digits", sample("--n", "-3"), "argument --n: must be a positive integer, got -3"),
    Row("a number of digits that is not a number", sample("--n", "many"),
        "argument --n: must be a positive integer, got 'many'"),
    Row("eta = NaN", sample("--eta", "nan"), "argument --eta: must be a finite number >= 0, got nan", subprocess=True),
    Row("eta = infinity", sample("--eta", "inf"), "argument --eta: must be a finite number >= 0, got inf"),
    Row("a negative eta", sample("--eta", "-1"), "argument --eta: must be a finite number >= 0, got -1"),
    Row("a sampling batch size of 0", sample("--batch-size", "0"),
        "argument --batch-size: must be a positive integer, got 0"),
    # conditioning (notebook 07)
    Row("a digit outside 0-9", sample("--digit", "12"),
        "argument --digit: invalid choice: 12 (choose from 0, 1, 2, 3, 4, 5, 6, 7, 8, 9)"),
    Row("a negative guidance scale", sample("--digit", "3", "--guidance", "-2"),
        "argument --guidance: must be a finite number >= 0, got -2"),
    Row("a word outside the vocabulary", sample("--prompt", "a purple seven"),
        "--prompt: unknown word(s) 'purple' in the prompt 'a purple seven'; the model knows only these words: "
        ", a the digit zero one two"),
    Row("a prompt too long for the model", sample("--prompt", "a thin seven a thin seven a thin"),
        "--prompt: the prompt 'a thin seven a thin seven a thin' has 8 words; at most 7 fit"),
    Row("a prompt given to an unconditional pixel model", sample("--checkpoint", "shipped-unet.pt", "--prompt", "7"),
        "holds a model of kind 'unet', but this needs latent-unet ... --prompt needs a text-conditioned latent model"),
    Row("a digit given to an unconditional model", sample("--checkpoint", "shipped-unet.pt", "--digit", "7"),
        "--digit: this model does not take a digit (it is unconditional: it takes neither a digit nor a prompt)"),
    Row("a guidance scale with nothing to guide towards", sample("--guidance", "2"),
        "--guidance needs a condition to guide towards: add --digit D or --prompt TEXT"),
    Row("NaN training steps", train("--steps", "nan"), "argument --steps: must be a positive integer, got 'nan'"),
    Row("a negative training batch size", train("--batch-size", "-1"),
        "argument --batch-size: must be a positive integer, got -1"),
    Row("an infinite learning rate", train("--lr", "inf"), "argument --lr: must be a finite number > 0, got inf"),
    Row("0 training minutes", train("--minutes", "0"), "argument --minutes: must be a number > 0, got 0"),
    Row("a training time and a step count", train("--minutes", "1", "--steps", "10"),
        "give --steps or --minutes, not both"),
    Row("0 real digits for FID", fid("--real-train", "0"), "argument --real-train: must be a positive integer, got 0"),
    # devices
    Row("an unknown device", sample("--device", "gpu"), "unknown device 'gpu'; use 'cpu', 'cuda', 'cuda:N' or 'mps'"),
    Row("a device torch knows but the course cannot use", fid("--real-train", "200", "--device", "xla"),
        "unknown device 'xla'", subprocess=True),
    Row("an unknown device in the environment", sample(), "unknown device 'gpu' (from $DIFFUSION_LESSON_DEVICE)",
        "device-env"),
    Row("cuda on a machine without CUDA", train("--device", "cuda"), "CUDA is not available; use 'cpu' or unset it",
        needs="no-cuda"),
    # writing files
    Row("a full disk during a checkpoint write",
        Call(save_small_unet, ("old.pt",), text='save_checkpoint("old.pt", ...)'),
        "cannot write old.pt (No space left on device); old.pt was left as it was", "disk-full"),
    Row("a read-only folder for a checkpoint",
        Call(save_small_unet, ("read-only/run.pt",), text='save_checkpoint("read-only/run.pt", ...)'),
        "cannot write in read-only (Permission denied); choose a writable folder", "read-only"),
    Row("a full disk while training saves", train("--overwrite", "--out", "old.pt"),
        "cannot write old.pt (No space left on device); old.pt was left as it was ... --resume", "disk-full",
        needs="mnist"),
    Row("Ctrl-C while training saves", train("--overwrite", "--out", "old.pt"), "interrupted", "ctrl-c-in-save",
        code=130, needs="mnist"),
    Row("Ctrl-C while sample writes --out",
        sample("--out", "samples.npz", "--steps", "1", "--n", "1", "--device", "cpu"),
        "interrupted", "ctrl-c-in-npz", code=130),
    Row("train --out in a read-only folder", train("--out", "read-only/run.pt"),
        "--out: cannot write in read-only (Permission denied)", "read-only"),
    Row("sample --out in a read-only folder", sample("--out", "read-only/s.npz"),
        "--out: cannot write in read-only (Permission denied)", "read-only"),
    # output paths
    Row("sample --out in a missing folder", sample("--out", "nowhere/s.npz"), "--out: folder nowhere does not exist"),
    Row("sample --out not ending in .npz", sample("--out", "s.png"), "--out must end in .npz, got s.png"),
    Row("train --out that exists", train("--out", "old.pt"),
        "old.pt exists: pass --resume to continue that run, --overwrite to replace it", subprocess=True),
    Row("train --out that is a folder", train("--out", "a-folder.pt"), "a-folder.pt is a folder; give a file name"),
    Row("train --init-from another network", train("--init-from", "run-b2.pt", "--blocks-per-level", "2"),
        "--init-from run-b2.pt: the weights to start from are another network (unet; blocks_per_level 1 there, 2 here)"
        " ... build the same network", needs="mnist"),
    Row("train --resume with another network", train("--resume", "--out", "run-b2.pt", "--blocks-per-level", "2"),
        "--blocks-per-level: run-b2.pt was trained with blocks_per_level = 1, and a resumed run keeps it ... --out"),
]
# fmt: on


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad-files")
    make_files(folder)
    return folder


@pytest.mark.parametrize("row", ROWS, ids=[row.input for row in ROWS])
def test_bad_input_gets_a_message_and_writes_nothing(row, files, tmp_path, monkeypatch, capsys):
    if row.needs == "mnist" and not (SHARED_MNIST / "train-images-idx3-ubyte").is_file():
        pytest.skip("needs MNIST under $DIFFUSION_LESSON_DATA")
    if row.needs == "no-cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    shutil.copytree(files, tmp_path, copy_function=link_or_copy, dirs_exist_ok=True)  # a change is still seen
    monkeypatch.chdir(tmp_path)  # the row's file names are relative to its folder
    monkeypatch.setenv(models.RUNS_ENV_VAR, str(tmp_path / "runs"))
    monkeypatch.setenv(metrics.CACHE_ENV_VAR, str(tmp_path / "cache"))  # a refusal must not compute FID features
    enter(row.world, tmp_path, monkeypatch)
    before = snapshot(tmp_path)
    if isinstance(row.how, Call):
        with pytest.raises(Exception) as info:
            row.how.function(*row.how.args, **(row.how.kwargs or {}))
        message = str(info.value)
    else:
        code, message = (run_in_subprocess if row.subprocess else run_in_process)(row.how, monkeypatch, capsys)
        assert code == row.code, message
        assert "Traceback" not in message
    assert_fragments(message, row.message)
    assert snapshot(tmp_path) == before  # nothing written, nothing overwritten, no temporary file left


def run_in_process(command: Command, monkeypatch, capsys) -> tuple[int, str]:
    """The command's main as ``python -m`` starts it (Ctrl-C becomes exit 130): exit code and stderr."""
    main = importlib.import_module(f"diffusion_lesson.cli.{command.name}").main
    monkeypatch.setattr(sys, "argv", [f"python -m diffusion_lesson.{command.name}", *command.base, *command.argv])
    with pytest.raises(SystemExit) as info:
        run(main)
    return info.value.code, capsys.readouterr().err


def run_in_subprocess(command: Command, monkeypatch, capsys) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    argv = [sys.executable, "-m", f"diffusion_lesson.{command.name}", *command.base, *command.argv]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    return result.returncode, result.stderr


def assert_fragments(message: str, expected: str) -> None:
    """Each " ... "-separated fragment of ``expected`` appears in ``message``, in that order."""
    position = 0
    for fragment in expected.split(" ... "):
        found = message.find(fragment, position)
        assert found >= 0, f"{fragment!r} not in the message (after position {position}):\n{message}"
        position = found + len(fragment)


def readme_line(row: Row) -> str:
    """The row as a line of README.md's "Bad input" table."""
    return f"| {row.input} | `{row.how.shown}` | {row.world or '-'} | `{row.message}` |"


def test_the_readme_shows_this_table():
    section = README.read_text().split("\n## Bad input\n", 1)[1].split("\n## ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| input ")]
    expected = [readme_line(row) for row in ROWS]
    missing = [line for line in expected if line not in table]
    stale = [line for line in table if line not in expected]
    assert not missing and not stale, "README.md's Bad input table differs from ROWS; paste:\n" + "\n".join(expected)


def test_the_table_is_large_and_rows_are_distinct():
    assert len(ROWS) >= 25 and len({row.input for row in ROWS}) == len(ROWS)
    assert not any("|" in field or "`" in field for row in ROWS for field in (row.input, row.how.shown, row.message))
