"""The study's experimental options (benchmarks/recipe_options.py) against brute force and their definitions."""

import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from recipe_options import assign_noise, sample_timesteps  # noqa: E402


def test_assigned_noise_is_the_batchs_noise_paired_at_the_least_total_distance():
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(6, 1, 4, 4, generator=g)
    x0 = 0.5 * eps.flip(0) + 0.3 * torch.randn(6, 1, 4, 4, generator=g)  # images nearest to the noise reversed
    assigned = assign_noise(x0, eps)
    rows = {tuple(r.tolist()) for r in eps.flatten(1)}
    assert {tuple(r.tolist()) for r in assigned.flatten(1)} == rows and assigned.shape == eps.shape  # a permutation
    distance = torch.cdist(x0.flatten(1).double(), eps.flatten(1).double())  # (6, 6)
    best = min(sum(distance[i, p[i]].item() for i in range(6)) for p in itertools.permutations(range(6)))
    total = (x0.double() - assigned.double()).flatten(1).norm(dim=1).sum().item()
    assert abs(total - best) < 1e-9 and total < (x0.double() - eps.double()).flatten(1).norm(dim=1).sum().item()


def test_timesteps_lie_in_range_and_logit_normal_favours_the_middle():
    g = torch.Generator().manual_seed(0)
    uniform = sample_timesteps(100_000, 1000, "uniform", g)
    middle = sample_timesteps(100_000, 1000, "logit_normal", g)
    for t in (uniform, middle):
        assert t.dtype == torch.long and 0 <= t.min() and t.max() <= 999
    # P(400 <= t < 600): 0.2 for uniform t; for t = T sigmoid(n), n ~ N(0, 1), it is
    # P(|n| < logit(0.6)) = erf(ln 1.5 / sqrt 2) = 0.3149
    share = lambda t: ((t >= 400) & (t < 600)).float().mean().item()  # noqa: E731
    assert abs(share(uniform) - 0.2) < 0.005 and abs(share(middle) - 0.3149) < 0.005
