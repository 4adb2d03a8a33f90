"""Argument helpers shared by every command: typed flags that refuse bad values with a clear message."""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from diffusion_lesson.interrupts import stop_on_sigterm
from diffusion_lesson.runtime import get_device


def _number(text: str, cast: type, expected: str) -> int | float:
    """cast(text), or argparse's error 'must be <expected>, got ...' (non-numbers quoted)."""
    try:
        return cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}") from None


def positive_int(text: str) -> int:
    """An int >= 1, for counts such as --steps, --n and --batch-size."""
    value = _number(text, int, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A finite float >= 0, for --eta and guidance scales."""
    value = _number(text, float, "a number >= 0")
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite float > 0, for learning rates and weights."""
    value = _number(text, float, "a number > 0")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def fraction(text: str) -> float:
    """A float in [0, 1), for decays and dropout rates."""
    value = non_negative_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1), got {text}")
    return value


def add_device_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: the best available)")


def device_from(parser: argparse.ArgumentParser, name: str | None) -> torch.device:
    """get_device(name), or the parser's error message (not a traceback) when it cannot be had."""
    try:
        return get_device(name)
    except (ValueError, RuntimeError) as err:
        parser.error(str(err))


def check_new_output(parser: argparse.ArgumentParser, out: Path, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse to replace an existing file unless asked to, and refuse a folder that does not exist."""
    if out.exists() and out.is_dir():
        parser.error(f"{out} is a folder; give a file name such as {out / 'run.pt'}")
    if out.exists() and not (resume or overwrite):
        parser.error(f"{out} exists: pass --resume to continue that run, --overwrite to replace it, or another --out")
    if resume and not out.exists():
        parser.error(f"--resume: no checkpoint at {out} to continue")
    check_writable(parser, "--out", out.parent)


def check_writable(parser: argparse.ArgumentParser, flag: str, folder: Path) -> None:
    """Refuse a folder that cannot be written, before any work: tried by creating (and removing) a file in it.

    A folder that does not exist yet is judged by the nearest one that does (the command creates the rest).
    """
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        parser.error(f"{flag}: {folder} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
    except OSError as err:
        parser.error(f"{flag}: cannot write in {folder} ({err.strerror or err}); choose a writable folder")
    os.close(fd)
    os.unlink(probe)


def fail(parser: argparse.ArgumentParser, message: str) -> None:
    """Exit 2 with ``prog: error: message`` (no usage line): for failures after the flags were accepted."""
    parser.exit(2, f"{parser.prog}: error: {message}\n")


def existing_file(parser: argparse.ArgumentParser, flag: str, path: Path | None) -> None:
    if path is not None and not path.is_file():
        parser.error(f"{flag}: no file at {path}")


def run(main: Callable[[list[str] | None], int]) -> None:
    """Start a command: its exit code; Ctrl-C outside a training loop exits 130 with one line, no traceback.

    ``kill PID`` (SIGTERM) stops a command as Ctrl-C does: a training run saves the step it reached.
    """
    stop_on_sigterm()
    try:
        sys.exit(main(None))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
