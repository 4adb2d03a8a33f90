"""Schedules: published endpoints, monotonicity, the 0-based convention, and diffusers as an oracle."""

import math

import pytest
import torch
from diffusers import DDPMScheduler

from diffusion_lesson.forward import q_sample
from diffusion_lesson.schedules import Schedule, cosine_betas, linear_betas, make_schedule


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_alpha_bar_strictly_decreasing_inside_unit_interval(name):
    s = make_schedule(name)
    assert s.T == 1000
    assert ((s.alpha_bar > 0) & (s.alpha_bar < 1)).all()
    assert (s.alpha_bar[1:] < s.alpha_bar[:-1]).all()
    assert (s.snr[1:] < s.snr[:-1]).all()


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_zero_based_time_convention(name):
    s = make_schedule(name)
    assert s.alpha_bar_prev[0].item() == 1.0  # x0 is the data: nothing added before step 0
    torch.testing.assert_close(s.alpha_bar_prev[1:], s.alpha_bar[:-1], rtol=0, atol=0)
    torch.testing.assert_close(s.alpha_bar[0], s.alpha[0], rtol=0, atol=0)  # paper alpha_bar_1 = alpha_1
    torch.testing.assert_close(s.alpha, 1 - s.beta, rtol=0, atol=1e-7)


def test_linear_endpoints_from_ddpm():
    beta = linear_betas()
    assert beta.dtype == torch.float64
    assert beta[0].item() == pytest.approx(1e-4, abs=1e-15)  # paper beta_1
    assert beta[-1].item() == pytest.approx(0.02, abs=1e-15)  # paper beta_T
    # DDPM reports alpha_bar_T ~ 4e-5 (L_T ~ 1e-5 bits/dim); the product gives 4.036e-5.
    assert make_schedule("linear").alpha_bar[-1].item() == pytest.approx(4.0358e-5, rel=1e-3)


def test_cosine_matches_improved_ddpm_formula():
    T, s = 1000, 0.008
    f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    beta = cosine_betas(T)
    alpha_bar = torch.cumprod(1 - beta, 0)
    for t in [0, 1, 500, 900]:  # before any clipping, alpha_bar_t = f((t+1)/T) / f(0)
        assert alpha_bar[t].item() == pytest.approx(f((t + 1) / T) / f(0), rel=1e-9)
    assert beta.max().item() == pytest.approx(0.999)  # clipped at the end
    assert beta[-1].item() == pytest.approx(0.999)
    assert beta[0].item() == pytest.approx(1 - f(1 / T) / f(0), rel=1e-12)


@pytest.mark.parametrize(("ours", "theirs"), [("linear", "linear"), ("cosine", "squaredcos_cap_v2")])
def test_agrees_with_diffusers(ours, theirs):
    schedule = make_schedule(ours)
    oracle = DDPMScheduler(num_train_timesteps=1000, beta_schedule=theirs, clip_sample=False)
    torch.testing.assert_close(schedule.beta, oracle.betas, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(schedule.alpha_bar, oracle.alphas_cumprod, rtol=1e-4, atol=1e-9)

    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand(16, 1, 8, 8, generator=generator) * 2 - 1
    noise = torch.randn(x0.shape, generator=generator)
    t = torch.tensor([0, 1, 2, 10, 100, 250, 499, 500, 501, 700, 900, 990, 997, 998, 999, 999])
    torch.testing.assert_close(
        q_sample(x0, t, schedule, noise=noise), oracle.add_noise(x0, noise, t), rtol=1e-4, atol=1e-5
    )


def test_schedule_to_device_keeps_values():
    s = make_schedule("cosine")
    moved = s.to("cpu")
    assert moved.name == "cosine" and moved.T == s.T
    torch.testing.assert_close(moved.alpha_bar, s.alpha_bar)


def test_unknown_schedule_name():
    with pytest.raises(ValueError, match="unknown schedule 'quadratic'.*linear.*cosine"):
        make_schedule("quadratic")


@pytest.mark.parametrize("T", [0, -5, 2.5, True])
def test_bad_T(T):
    with pytest.raises(ValueError, match="T .* must be an integer >= 1"):
        make_schedule("linear", T=T)


@pytest.mark.parametrize(
    ("beta", "message"),
    [
        (torch.tensor([0.1, float("nan")]), "NaN or infinity"),
        (torch.tensor([0.1, float("inf")]), "NaN or infinity"),
        (torch.tensor([0.1, 0.0]), r"strictly inside \(0, 1\)"),
        (torch.tensor([0.1, 1.0]), r"strictly inside \(0, 1\)"),
        (torch.tensor([-0.1, 0.5]), r"strictly inside \(0, 1\)"),
        (torch.ones(2, 3) * 0.1, "1-D"),
        (torch.tensor([]), "1-D"),
    ],
)
def test_bad_betas(beta, message):
    with pytest.raises(ValueError, match=message):
        Schedule.from_betas(beta)


def test_custom_schedule_of_one_step():
    s = Schedule.from_betas(torch.tensor([0.5]))
    assert s.T == 1 and s.alpha_bar.item() == 0.5 and s.alpha_bar_prev.item() == 1.0
