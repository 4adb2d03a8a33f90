"""A 2-D Gaussian mixture whose noised densities, scores and ideal eps are known exactly (notebook 04).

Noising a mixture keeps it a mixture: under q(x_t | x0), component k with mean mu_k and std s
becomes N(sqrt(alpha_bar_t) mu_k, (alpha_bar_t s^2 + 1 - alpha_bar_t) I). So the score
grad log q_t(x) has a closed form, and so does the best possible noise prediction,
eps*(x_t, t) = -sqrt(1 - alpha_bar_t) * score (the "score view" of the epsilon predictor).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from diffusion_lesson.schedules import Schedule, check_timesteps, extract


class GaussianMixture(NamedTuple):
    """means: (K, D); std: the components' shared standard deviation; weights: (K,) summing to 1."""

    means: Tensor
    std: float
    weights: Tensor

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n points (n, D) from the mixture."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        return self.means[k] + self.std * torch.randn((n, self.means.shape[1]), generator=generator)

    def score(self, xt: Tensor, t: Tensor | int, schedule: Schedule) -> Tensor:
        """grad_x log q_t(x) at x = xt: (B, D), for the mixture noised to step t."""
        t = check_timesteps(t, schedule.T, xt.shape[0], xt.device)
        alpha_bar = extract(schedule.alpha_bar, t, xt).to(torch.float64)  # (B, 1)
        var = alpha_bar * self.std**2 + 1 - alpha_bar  # (B, 1), every component's variance at t
        centres = alpha_bar.sqrt()[:, None] * self.means.double()[None]  # (B, K, D)
        diff = xt.double()[:, None] - centres  # (B, K, D)
        log_r = self.weights.double().log()[None] - (diff**2).sum(-1) / (2 * var)  # (B, K), shared variance
        r = torch.softmax(log_r, dim=1)  # responsibilities
        return (-(r[..., None] * diff).sum(1) / var).to(xt.dtype)

    def eps(self, xt: Tensor, t: Tensor | int, schedule: Schedule) -> Tensor:
        """The ideal noise prediction E[eps | x_t] = -sqrt(1 - alpha_bar_t) * score: (B, D)."""
        t = check_timesteps(t, schedule.T, xt.shape[0], xt.device)
        return -(1 - extract(schedule.alpha_bar, t, xt)).sqrt() * self.score(xt, t, schedule)


def ring_mixture(k: int = 6, radius: float = 1.0, std: float = 0.08) -> GaussianMixture:
    """k equal-weight components evenly spaced on a circle: a 2-D 'data set' with k modes."""
    angles = torch.arange(k) * 2 * torch.pi / k
    means = radius * torch.stack([angles.cos(), angles.sin()], dim=1)
    return GaussianMixture(means, std, torch.full((k,), 1.0 / k))
