"""The reverse process: DDPM (Algorithm 2) and DDIM steps and loops (taught in notebook 04).

A model is any callable ``model(xt, t, labels) -> eps_pred`` with xt (B, ...), t (B,) long and
labels (B,) long or None. Loops visit each of their timesteps exactly once, in descending order,
and return the final samples plus, only when asked, the trajectory (x_t and x0_pred at every visit).
DDIM's alpha_t is our alpha_bar.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from diffusion_lesson.forward import predict_eps_from_x0, predict_x0_from_eps, q_posterior, q_sample
from diffusion_lesson.runtime import randn_like
from diffusion_lesson.schedules import Schedule

EpsModel = Callable[[Tensor, Tensor, Tensor | None], Tensor]
VARIANCES = ("beta", "posterior", "none")
SPACINGS = ("trailing", "leading")


class Step(NamedTuple):
    """One reverse step: the new sample x_{t-1} and the x0 the model implied at step t."""

    x_prev: Tensor
    x0_pred: Tensor


class Trajectory(NamedTuple):
    """States at each visited step: xt and x0_pred are (S, B, ...), timesteps is (S,) descending."""

    xt: Tensor
    x0_pred: Tensor
    timesteps: Tensor


class Prediction(NamedTuple):
    """What the model makes of x_t at step t: x_t itself, eps_pred and the implied x0_pred, each (B, ...)."""

    xt: Tensor
    eps_pred: Tensor
    x0_pred: Tensor


class Samples(NamedTuple):
    """Final samples x0 (B, ...) and the trajectory (None unless return_trajectory=True)."""

    x0: Tensor
    trajectory: Trajectory | None


@torch.no_grad()
def denoise_at(
    model: EpsModel, x0: Tensor, t: int, schedule: Schedule, noise: Tensor, labels: Tensor | None = None
) -> Prediction:
    """Noise x0 to step t with the given noise (eq. 4), then ask the model: x_t, eps_pred, x0_pred (eq. 15)."""
    t_batch = torch.full((x0.shape[0],), t, dtype=torch.long, device=x0.device)
    xt = q_sample(x0, t_batch, schedule, noise=noise)
    eps_pred = model(xt, t_batch, labels)
    return Prediction(xt, eps_pred, predict_x0_from_eps(xt, t_batch, eps_pred, schedule))


def ddpm_step(
    xt: Tensor,
    t: int,
    eps_pred: Tensor,
    schedule: Schedule,
    variance: str = "beta",
    noise: Tensor | None = None,
    clip_x0: bool = False,
) -> Step:
    """x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_pred) / sqrt(alpha_t) + sigma_t z, DDPM Algorithm 2.

    variance: "beta" (sigma_t^2 = beta_t), "posterior" (sigma_t^2 = posterior variance, eq. 7) or
    "none", the *wrong* sampler of notebook 04 that drops the noise term; no noise is added at t = 0.
    noise: the z to use, shaped like xt (drawn by the loop). clip_x0: clip the implied x0 to the data
    range [-1, 1] and take the mean of q(x_{t-1} | x_t, clipped x0) (eq. 7), as DDPM's own code does.
    """
    if variance not in VARIANCES:
        raise ValueError(f"unknown variance {variance!r}; choose one of {VARIANCES}")
    _check_step(xt, t, schedule)
    alpha, beta, alpha_bar = schedule.alpha[t], schedule.beta[t], schedule.alpha_bar[t]
    x0_pred = predict_x0_from_eps(xt, t, eps_pred, schedule)
    if clip_x0:  # 1'. the posterior mean from the clipped x0, eq. 7 (equal to eq. 11 when nothing is clipped)
        x0_pred = x0_pred.clamp(-1, 1)
        mean = q_posterior(x0_pred, xt, t, schedule).mean
    else:  # 1. the mean, eq. 11
        mean = (xt - beta / (1 - alpha_bar).sqrt() * eps_pred) / alpha.sqrt()
    if t == 0 or variance == "none":
        return Step(mean, x0_pred)
    # 2. add noise with the chosen variance
    sigma_sq = beta if variance == "beta" else (1 - schedule.alpha_bar_prev[t]) / (1 - alpha_bar) * beta
    z = randn_like(xt) if noise is None else noise
    return Step(mean + sigma_sq.sqrt() * z, x0_pred)


def ddim_step(
    xt: Tensor,
    t: int,
    t_prev: int,
    eps_pred: Tensor,
    schedule: Schedule,
    eta: float = 0.0,
    noise: Tensor | None = None,
    clip_x0: bool = False,
) -> Step:
    """One DDIM step from t to t_prev < t (t_prev = -1 means x0), Song et al. 2021 eq. 12.

    x_prev = sqrt(alpha_bar_prev) x0_pred + sqrt(1 - alpha_bar_prev - sigma^2) eps_pred + sigma z, with
    sigma = eta sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_prev) (eq. 16).
    eta = 0 is deterministic; eta = 1 matches DDPM's posterior variance when t_prev = t - 1.
    clip_x0: clip x0_pred to [-1, 1] and use the eps it implies (diffusers' clip_sample with
    use_clipped_model_output); it keeps a schedule whose alpha_bar nearly vanishes at t = T - 1
    (cosine) from blowing the first x0_pred up.
    """
    _check_step(xt, t, schedule)
    if not -1 <= t_prev < t:
        raise ValueError(f"t_prev must satisfy -1 <= t_prev < t = {t}, got {t_prev}")
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    alpha_bar = schedule.alpha_bar[t]
    alpha_bar_prev = schedule.alpha_bar[t_prev] if t_prev >= 0 else torch.ones_like(alpha_bar)
    # 1. predicted x0, eq. 12's first term
    x0_pred = predict_x0_from_eps(xt, t, eps_pred, schedule)
    if clip_x0:
        x0_pred = x0_pred.clamp(-1, 1)
        eps_pred = predict_eps_from_x0(xt, t, x0_pred, schedule)
    # 2. sigma_t(eta), eq. 16
    sigma = eta * ((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)).sqrt()
    # 3. direction pointing to x_t, then eq. 12
    x_prev = alpha_bar_prev.sqrt() * x0_pred + (1 - alpha_bar_prev - sigma**2).sqrt() * eps_pred
    if eta > 0:
        x_prev = x_prev + sigma * (randn_like(xt) if noise is None else noise)
    return Step(x_prev, x0_pred)


def ddim_timesteps(T: int, steps: int, spacing: str = "trailing") -> Tensor:
    """Descending (steps,) long tensor of distinct steps in [0, T) for a strided sampler.

    "trailing" starts at T - 1 (pure noise) and spaces by T / steps: for T = 1000, 50 steps gives
    [999, 979, ..., 19]. "leading" is the DDIM paper's and diffusers' default: [980, 960, ..., 0].
    """
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise TypeError(f"the number of steps must be an int, got {steps!r}")
    if not 1 <= steps <= T:
        raise ValueError(f"the number of steps must be between 1 and T = {T}, got {steps}")
    if spacing == "trailing":
        return (torch.arange(T, 0, -T / steps, dtype=torch.float64).round().long() - 1)[:steps]
    if spacing == "leading":
        return (torch.arange(steps) * (T // steps)).flip(0)
    raise ValueError(f"unknown spacing {spacing!r}; choose one of {SPACINGS}")


@torch.no_grad()
def sample_ddpm(
    model: EpsModel,
    shape: tuple[int, ...],
    schedule: Schedule,
    generator: torch.Generator | None = None,
    variance: str = "beta",
    clip_x0: bool = False,
    **loop_options,
) -> Samples:
    """Ancestral sampling over all T steps, T - 1 down to 0 (Algorithm 2). See ``run_sampler`` for options."""
    timesteps = torch.arange(schedule.T - 1, -1, -1)

    def step(xt: Tensor, i: int, eps_pred: Tensor) -> Step:
        noise = randn_like(xt, generator) if timesteps[i] > 0 and variance != "none" else None
        return ddpm_step(xt, int(timesteps[i]), eps_pred, schedule, variance, noise, clip_x0)

    return run_sampler(model, shape, timesteps, step, generator, **loop_options)


@torch.no_grad()
def sample_ddim(
    model: EpsModel,
    shape: tuple[int, ...],
    schedule: Schedule,
    steps: int = 50,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    spacing: str = "trailing",
    clip_x0: bool = False,
    **loop_options,
) -> Samples:
    """DDIM over ``steps`` strided timesteps (eta = 0: deterministic). See ``run_sampler`` for options."""
    timesteps = ddim_timesteps(schedule.T, steps, spacing)

    def step(xt: Tensor, i: int, eps_pred: Tensor) -> Step:
        t, t_prev = int(timesteps[i]), int(timesteps[i + 1]) if i + 1 < len(timesteps) else -1
        noise = randn_like(xt, generator) if eta > 0 else None
        return ddim_step(xt, t, t_prev, eps_pred, schedule, eta, noise, clip_x0)

    return run_sampler(model, shape, timesteps, step, generator, **loop_options)


def run_sampler(
    model: EpsModel,
    shape: tuple[int, ...],
    timesteps: Tensor,
    step: Callable[[Tensor, int, Tensor], Step],
    generator: torch.Generator | None,
    labels: Tensor | None = None,
    device: torch.device | str = "cpu",
    batch_size: int | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
) -> Samples:
    """The loop both samplers share: x_T ~ N(0, I), then ``step`` at each of ``timesteps`` in order.

    shape: (N, C, H, W) or any (N, ...); requests larger than ``batch_size`` run in chunks.
    labels: (N,) long class labels (or (N, L) prompt tokens) passed to the model, or None. The trajectory, if asked for,
    is kept on the CPU. Noise is drawn from ``generator``, which must live on ``device``.
    """
    n = shape[0]
    if labels is not None and (labels.ndim == 0 or labels.shape[0] != n):
        raise ValueError(f"labels must have shape ({n},) (or ({n}, L) prompt tokens) to match the {n} samples, "
                         f"got {tuple(labels.shape)}")  # fmt: skip
    chunk = batch_size or n
    outputs, trajectories = [], []
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        chunk_labels = None if labels is None else labels[start : start + size].to(device)
        x = torch.randn((size, *shape[1:]), generator=generator, device=device)
        xs, x0s = [], []
        for i in tqdm(range(len(timesteps)), disable=not progress, desc="sampling", leave=False):
            t = torch.full((size,), int(timesteps[i]), dtype=torch.long, device=device)
            x_t = x
            x, x0_pred = step(x_t, i, model(x_t, t, chunk_labels))
            if return_trajectory:
                xs.append(x_t.cpu())
                x0s.append(x0_pred.cpu())
        outputs.append(x)
        if return_trajectory:
            trajectories.append((torch.stack(xs), torch.stack(x0s)))
    trajectory = _join_chunks(trajectories, timesteps) if return_trajectory else None
    return Samples(torch.cat(outputs), trajectory)


def _join_chunks(trajectories: list[tuple[Tensor, Tensor]], timesteps: Tensor) -> Trajectory:
    """One trajectory from the chunks' (S, b, ...) states, joined along the batch axis."""
    xt_all = torch.cat([xs for xs, _ in trajectories], dim=1)
    x0_all = torch.cat([x0s for _, x0s in trajectories], dim=1)
    return Trajectory(xt_all, x0_all, timesteps.clone())


def _check_step(xt: Tensor, t: int, schedule: Schedule) -> None:
    if isinstance(t, bool) or not isinstance(t, int):
        raise TypeError(
            f"a sampler step takes t as a Python int (one step for the whole batch), got {type(t).__name__}"
        )
    if not 0 <= t < schedule.T:
        raise ValueError(f"t must lie in [0, {schedule.T}), got {t}")
