"""Noise schedules: beta_t and the quantities derived from it (taught in notebook 01).

Time is 0-based everywhere in the course: code step ``t`` in ``[0, T)`` is paper step ``t + 1``.
So ``beta[0]`` is the paper's beta_1, ``alpha_bar[t] = prod(alpha[: t + 1])`` and
``alpha_bar_prev[0] == 1`` (the clean data x0 has seen no noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

SCHEDULE_NAMES = ("linear", "cosine")


def linear_betas(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """Linear schedule of DDPM (Ho et al. 2020, sec. 4): beta from 1e-4 to 0.02 over T steps.

    Returns (T,) float64.
    """
    _check_T(T)
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def cosine_betas(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Cosine schedule of Improved DDPM (Nichol & Dhariwal 2021, eq. 17), betas clipped at 0.999.

    alpha_bar(u) = f(u) / f(0) with f(u) = cos((u + s) / (1 + s) * pi / 2) ** 2 and u = t / T;
    beta_t = min(1 - alpha_bar((t + 1) / T) / alpha_bar(t / T), max_beta).
    Returns (T,) float64.
    """
    _check_T(T)
    u = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


@dataclass(frozen=True)
class Schedule:
    """Per-timestep coefficients, computed in float64 and stored float32, each (T,).

    beta[t]           variance added at step t (paper beta_{t+1})
    alpha[t]          1 - beta[t]
    alpha_bar[t]      prod(alpha[0..t]): x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps
    alpha_bar_prev[t] alpha_bar[t - 1], with alpha_bar_prev[0] = 1
    snr[t]            signal-to-noise ratio alpha_bar / (1 - alpha_bar)
    """

    name: str
    beta: Tensor
    alpha: Tensor
    alpha_bar: Tensor
    alpha_bar_prev: Tensor
    snr: Tensor

    @property
    def T(self) -> int:
        return self.beta.shape[0]

    @property
    def device(self) -> torch.device:
        return self.beta.device

    @classmethod
    def from_betas(cls, beta: Tensor, name: str = "custom", dtype: torch.dtype = torch.float32) -> Schedule:
        """Build a schedule from betas; they must be 1-D, finite and strictly inside (0, 1).

        Everything is computed in float64 and stored as ``dtype``: float32 runs everywhere (MPS has
        no float64); float64 is for tests, since 1 - alpha_bar loses digits in float32 when t is small.
        """
        beta = torch.as_tensor(beta, dtype=torch.float64)
        if beta.ndim != 1 or beta.numel() < 1:
            raise ValueError(f"betas must be a 1-D tensor of length T >= 1, got shape {tuple(beta.shape)}")
        if not torch.isfinite(beta).all():
            raise ValueError("betas contain NaN or infinity; every beta must be a finite number in (0, 1)")
        if not ((beta > 0) & (beta < 1)).all():
            bad = beta[(beta <= 0) | (beta >= 1)]
            raise ValueError(f"every beta must lie strictly inside (0, 1); found {bad[:3].tolist()}")
        alpha = 1 - beta
        alpha_bar = torch.cumprod(alpha, dim=0)
        alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
        snr = alpha_bar / (1 - alpha_bar)
        return cls(
            name=name,
            beta=beta.to(dtype),
            alpha=alpha.to(dtype),
            alpha_bar=alpha_bar.to(dtype),
            alpha_bar_prev=alpha_bar_prev.to(dtype),
            snr=snr.to(dtype),
        )

    def to(self, device: torch.device | str) -> Schedule:
        """The same schedule with every tensor on ``device``."""
        moved = {k: getattr(self, k).to(device) for k in ("beta", "alpha", "alpha_bar", "alpha_bar_prev", "snr")}
        return Schedule(name=self.name, **moved)


def make_schedule(name: str = "linear", T: int = 1000, dtype: torch.dtype = torch.float32) -> Schedule:
    """The named schedule ("linear" from DDPM or "cosine" from Improved DDPM) with T steps."""
    if name == "linear":
        return Schedule.from_betas(linear_betas(T), name, dtype)
    if name == "cosine":
        return Schedule.from_betas(cosine_betas(T), name, dtype)
    raise ValueError(f"unknown schedule {name!r}; choose one of {SCHEDULE_NAMES}")


def check_timesteps(t: Tensor | int, T: int, batch_size: int, device: torch.device) -> Tensor:
    """Validate timesteps and return them as a (B,) long tensor on ``device``.

    ``t`` is an int (one step for the whole batch) or a (B,) integer tensor, each in [0, T).
    """
    if isinstance(t, bool) or not isinstance(t, (int, Tensor)):
        raise TypeError(f"t must be an int or a (B,) integer tensor, got {type(t).__name__}")
    if isinstance(t, int):  # checked as a Python int: no tensor to read back from the device at every step
        if not 0 <= t < T:
            raise ValueError(f"t must lie in [0, {T}) (0-based), got {t}")
        return torch.full((batch_size,), t, dtype=torch.long, device=device)
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"t must hold integers (torch.long), got dtype {t.dtype}; use t.long() if whole")
    if t.ndim != 1:
        raise ValueError(f"t must have shape (B,), got {tuple(t.shape)}")
    if t.shape[0] != batch_size:
        raise ValueError(f"t has {t.shape[0]} timesteps but the batch has {batch_size} samples")
    if t.numel() and (t.min() < 0 or t.max() >= T):
        raise ValueError(f"t must lie in [0, {T}) (0-based), got values from {t.min().item()} to {t.max().item()}")
    return t.to(device=device, dtype=torch.long)


def extract(coeff: Tensor, t: Tensor, x: Tensor) -> Tensor:
    """coeff[t] shaped to broadcast against x: (T,) and (B,) -> (B, 1, ..., 1) with x.ndim dims."""
    values = coeff[t.to(coeff.device)].to(device=x.device, dtype=x.dtype)
    return values.reshape(t.shape[0], *([1] * (x.ndim - 1)))


def _check_T(T: int) -> None:
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T (the number of diffusion steps) must be an integer >= 1, got {T!r}")
