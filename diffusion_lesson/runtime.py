"""Where the course runs: device choice, seeding, reproducible noise and quick mode (all notebooks)."""

from __future__ import annotations

import os
import random

import numpy as np
import torch
from torch import Tensor

DEVICE_ENV_VAR = "DIFFUSION_LESSON_DEVICE"
QUICK_ENV_VAR = "DIFFUSION_LESSON_QUICK"


def get_device(override: str | torch.device | None = None) -> torch.device:
    """cuda if available, then mps, then cpu; ``override`` or $DIFFUSION_LESSON_DEVICE picks one."""
    choice = override if override is not None else os.environ.get(DEVICE_ENV_VAR) or None
    if choice is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    source = "" if override is not None else f" (from ${DEVICE_ENV_VAR})"
    try:
        device = torch.device(choice)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"unknown device {choice!r}{source}; use 'cpu', 'cuda', 'cuda:N' or 'mps'") from err
    if device.type not in ("cpu", "cuda", "mps"):  # torch knows more (xla, meta...) that the course cannot run on
        raise ValueError(f"unknown device {choice!r}{source}; use 'cpu', 'cuda', 'cuda:N' or 'mps'")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {choice!r}{source} was asked for but CUDA is not available; use 'cpu' or unset it")
    if device.type == "cuda" and (device.index or 0) >= (count := torch.cuda.device_count()):
        raise RuntimeError(f"device {choice!r}{source} was asked for but this machine has {count} CUDA "
                           f"device(s); use one of cuda:0 to cuda:{count - 1}")  # fmt: skip
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"device {choice!r}{source} was asked for but MPS is not available; use 'cpu' or unset it")
    return device


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns a CPU generator seeded the same, for explicit use."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch.Generator on ``device`` (random ops need one on the device they run on)."""
    return torch.Generator(device=device).manual_seed(seed)


def randn_like(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard normal noise shaped like x, drawn from ``generator`` so runs reproduce."""
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def quick_mode() -> bool:
    """True when $DIFFUSION_LESSON_QUICK is 1/true/yes: notebooks run small (CI), same code path."""
    value = os.environ.get(QUICK_ENV_VAR, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ValueError(f"{QUICK_ENV_VAR}={value!r} is not understood; set it to 1 (quick) or 0 (full)")


def bf16_pays(device: torch.device | str) -> bool:
    """Whether bf16 autocast was measured to speed training up on a device like this one.

    Only CPUs were measured (README, Time to quality): on one with AVX-512 bf16 instructions notebook
    03's run did 1.3 times the steps in the same minutes, with the same FID at equal steps; on one
    without them autocast only adds conversions (0.3-0.6 times the speed). GPUs were not measured, so: no.
    """
    if torch.device(device).type != "cpu":
        return False
    has_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", None)  # private, so looked up with care
    return bool(has_bf16 is not None and has_bf16())
