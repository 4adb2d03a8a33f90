"""The 2-D mixture: its closed-form score against autograd, and samplers driven by its exact eps."""

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from diffusion_lesson.samplers import sample_ddim, sample_ddpm
from diffusion_lesson.schedules import make_schedule
from diffusion_lesson.toy import ring_mixture

SCHEDULE = make_schedule("linear")


def _noised_log_density(mixture, x, t):
    """log q_t(x) with torch.distributions, independently of toy.py's formula."""
    alpha_bar = SCHEDULE.alpha_bar[t].double()
    scale = (alpha_bar * mixture.std**2 + 1 - alpha_bar).sqrt()
    components = Independent(Normal(alpha_bar.sqrt() * mixture.means.double(), scale), 1)
    return MixtureSameFamily(Categorical(mixture.weights.double()), components).log_prob(x)


@pytest.mark.parametrize("t", [0, 10, 200, 999])
def test_score_matches_autograd_of_the_noised_density(t):
    mixture = ring_mixture()
    x = (torch.randn(64, 2, generator=torch.Generator().manual_seed(t), dtype=torch.float64) * 1.2).requires_grad_()
    (expected,) = torch.autograd.grad(_noised_log_density(mixture, x, t).sum(), x)
    torch.testing.assert_close(mixture.score(x.detach(), t, SCHEDULE), expected, rtol=1e-6, atol=1e-8)
    eps = mixture.eps(x.detach(), t, SCHEDULE)
    torch.testing.assert_close(eps, -(1 - SCHEDULE.alpha_bar[t].double()).sqrt() * expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_samplers_with_the_exact_eps_reproduce_the_mixture(sampler):
    """Each mode should get 1/6 of 6,000 samples: binomial standard error 0.0048, we allow 4 of them;
    points should lie near a centre: the mean distance to the nearest one is about std * sqrt(pi/2) = 0.10."""
    mixture = ring_mixture()

    def model(xt, t, labels):
        return mixture.eps(xt, t, SCHEDULE)

    generator = torch.Generator().manual_seed(0)
    if sampler == "ddim":
        x = sample_ddim(model, (6000, 2), SCHEDULE, steps=100, generator=generator).x0
    else:
        x = sample_ddpm(model, (6000, 2), SCHEDULE, generator=generator).x0
    distances = torch.cdist(x.double(), mixture.means.double())
    nearest = distances.argmin(1)
    fractions = torch.bincount(nearest, minlength=6).double() / len(x)
    assert ((fractions - 1 / 6).abs() < 4 * 0.0048).all(), fractions
    assert distances.min(1).values.mean() < 0.13
