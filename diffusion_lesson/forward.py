"""The forward (noising) process and its closed forms (taught in notebooks 01 and 02).

Shapes: x0, x_prev, xt, eps are (B, ...) with any trailing shape (images (B, C, H, W), latents,
2-D toy points); t is an int or a (B,) long tensor in [0, T) (0-based: code t = paper t + 1).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from diffusion_lesson.runtime import randn_like
from diffusion_lesson.schedules import Schedule, check_timesteps, extract


class Posterior(NamedTuple):
    """Mean and variance of q(x_{t-1} | x_t, x0); var is (B, 1, ..., 1), broadcastable to mean."""

    mean: Tensor
    var: Tensor


def q_step(
    x_prev: Tensor,
    t: Tensor | int,
    schedule: Schedule,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One forward step q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t I), DDPM eq. 2.

    x_prev: (B, ...) is x_{t-1} (x0 when t = 0). Returns x_t, shaped like x_prev.
    """
    t = _timesteps(x_prev, t, schedule)
    eps = _noise(x_prev, noise, generator)
    alpha = extract(schedule.alpha, t, x_prev)
    beta = extract(schedule.beta, t, x_prev)
    return alpha.sqrt() * x_prev + beta.sqrt() * eps


def q_sample(
    x0: Tensor,
    t: Tensor | int,
    schedule: Schedule,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Closed-form forward process q(x_t | x0) = N(sqrt(alpha_bar_t) x0, (1 - alpha_bar_t) I), DDPM eq. 4.

    x0: (B, ...); noise: the eps to use, shaped like x0 (drawn from ``generator`` if None).
    """
    t = _timesteps(x0, t, schedule)
    eps = _noise(x0, noise, generator)
    alpha_bar = extract(schedule.alpha_bar, t, x0)
    return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps


def q_posterior(x0: Tensor, xt: Tensor, t: Tensor | int, schedule: Schedule) -> Posterior:
    """Posterior q(x_{t-1} | x_t, x0): mean and variance, DDPM eqs. 6-7.

    mean = sqrt(alpha_bar_prev) beta / (1 - alpha_bar) x0 + sqrt(alpha) (1 - alpha_bar_prev) / (1 - alpha_bar) x_t
    var  = (1 - alpha_bar_prev) / (1 - alpha_bar) beta            (exactly 0 at t = 0: x_{t-1} is x0)
    """
    _same_shape(x0, xt, "x0", "xt")
    t = _timesteps(xt, t, schedule)
    beta = extract(schedule.beta, t, xt)
    alpha = extract(schedule.alpha, t, xt)
    alpha_bar = extract(schedule.alpha_bar, t, xt)
    alpha_bar_prev = extract(schedule.alpha_bar_prev, t, xt)
    mean = (alpha_bar_prev.sqrt() * beta * x0 + alpha.sqrt() * (1 - alpha_bar_prev) * xt) / (1 - alpha_bar)
    var = (1 - alpha_bar_prev) / (1 - alpha_bar) * beta
    return Posterior(mean, var)


def predict_x0_from_eps(xt: Tensor, t: Tensor | int, eps: Tensor, schedule: Schedule) -> Tensor:
    """x0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t): eq. 4 solved for x0, DDPM eq. 15."""
    _same_shape(xt, eps, "xt", "eps")
    t = _timesteps(xt, t, schedule)
    alpha_bar = extract(schedule.alpha_bar, t, xt)
    return (xt - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()


def predict_eps_from_x0(xt: Tensor, t: Tensor | int, x0: Tensor, schedule: Schedule) -> Tensor:
    """eps = (x_t - sqrt(alpha_bar_t) x0) / sqrt(1 - alpha_bar_t): eq. 4 solved for eps."""
    _same_shape(xt, x0, "xt", "x0")
    t = _timesteps(xt, t, schedule)
    alpha_bar = extract(schedule.alpha_bar, t, xt)
    return (xt - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()


@torch.no_grad()
def forward_chain(x0: Tensor, schedule: Schedule, generator: torch.Generator | None = None) -> Tensor:
    """Iterate q_step from x0 through all T steps: (T, B, ...) whose [t] is x_t (for plots and scrubbing)."""
    states = torch.empty((schedule.T, *x0.shape), dtype=x0.dtype, device=x0.device)
    x = x0
    for t in range(schedule.T):
        x = q_step(x, t, schedule, generator=generator)
        states[t] = x
    return states


@torch.no_grad()
def closed_form_path(x0: Tensor, schedule: Schedule, noise: Tensor) -> Tensor:
    """q_sample(x0, t, noise) for every t with one fixed noise: (T, B, ...), a smooth path to scrub over."""
    _same_shape(x0, noise, "x0", "noise")
    alpha_bar = schedule.alpha_bar.to(device=x0.device, dtype=x0.dtype).reshape(-1, *([1] * x0.ndim))
    return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise  # (T, 1, ...) broadcasts over (B, ...)


def _timesteps(x: Tensor, t: Tensor | int, schedule: Schedule) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim < 1:
        raise ValueError("x must be a tensor with a leading batch dimension, shape (B, ...)")
    if not x.dtype.is_floating_point:
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}; convert images with to_unit_range")
    return check_timesteps(t, schedule.T, x.shape[0], x.device)


def _noise(x: Tensor, noise: Tensor | None, generator: torch.Generator | None) -> Tensor:
    if noise is None:
        return randn_like(x, generator)
    _same_shape(x, noise, "x", "noise")
    return noise


def _same_shape(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
