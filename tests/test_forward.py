"""Forward process: closed form against iteration, posterior against Bayes' rule, exact inverses."""

import math

import pytest
import torch

from diffusion_lesson.forward import (
    closed_form_path,
    forward_chain,
    predict_eps_from_x0,
    predict_x0_from_eps,
    q_posterior,
    q_sample,
    q_step,
)
from diffusion_lesson.schedules import extract, linear_betas, make_schedule

SCHEDULES = {name: make_schedule(name) for name in ("linear", "cosine")}


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_closed_form_matches_iterated_process(name):
    """Iterate q_step N times from one x0 and compare per-pixel mean and variance with q(x_t | x0).

    Tolerances come from the sample size: the mean of N draws has standard error sqrt(var / N), the
    sample variance sqrt(2 / (N - 1)) * var. We allow 5 standard errors per pixel; with 4 steps x 32
    pixels x 2 statistics, a correct implementation fails with probability below 1e-4 (and the seed
    is fixed, so the test is deterministic).
    """
    schedule, n, checked = SCHEDULES[name], 20_000, [0, 1, 500, 999]
    generator = torch.Generator().manual_seed(1)
    x0 = torch.linspace(-1, 1, 32).expand(n, 32).contiguous()  # (N, D): N chains from one x0
    x = x0
    for t in range(checked[-1] + 1):
        x = q_step(x, t, schedule, generator=generator)
        if t not in checked:
            continue
        alpha_bar = schedule.alpha_bar[t].double()
        mean, var = x.double().mean(0), x.double().var(0)
        expected_mean, expected_var = alpha_bar.sqrt() * x0[0].double(), 1 - alpha_bar
        mean_tol = 5 * (expected_var / n).sqrt()
        var_tol = 5 * math.sqrt(2 / (n - 1)) * expected_var
        assert ((mean - expected_mean).abs() < mean_tol).all(), (
            f"t={t}: mean off by {(mean - expected_mean).abs().max()}"
        )
        assert ((var - expected_var).abs() < var_tol).all(), (
            f"t={t}: variance off by {(var - expected_var).abs().max()}"
        )


def _bayes_posterior_on_grid(x0: float, xt: float, t: int, schedule) -> tuple[float, float]:
    """Mean and variance of p(x_prev | xt, x0) ∝ q(xt | x_prev) q(x_prev | x0), by numerical integration."""
    grid = torch.linspace(-6, 6, 400_001, dtype=torch.float64)
    alpha, beta = schedule.alpha[t].double(), schedule.beta[t].double()
    alpha_bar_prev = schedule.alpha_bar_prev[t].double()
    log_likelihood = -((xt - alpha.sqrt() * grid) ** 2) / (2 * beta)  # q(x_t | x_{t-1}), eq. 2
    log_prior = -((grid - alpha_bar_prev.sqrt() * x0) ** 2) / (2 * (1 - alpha_bar_prev))  # q(x_{t-1} | x0), eq. 4
    log_post = log_likelihood + log_prior
    weights = (log_post - log_post.max()).exp()
    weights = weights / weights.sum()
    mean = (weights * grid).sum()
    return mean.item(), (weights * (grid - mean) ** 2).sum().item()


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("t", [1, 2, 50, 500, 999])
def test_posterior_agrees_with_bayes_rule(name, t):
    # float64 schedule: this checks the formula; float32 storage is checked against it below.
    schedule = make_schedule(name, dtype=torch.float64)
    x0 = torch.tensor([[-1.0], [0.3], [0.9]], dtype=torch.float64)
    xt = torch.tensor([[-0.8], [0.1], [1.7]], dtype=torch.float64) * (1 if t < 900 else 1.5)
    posterior = q_posterior(x0, xt, t, schedule)
    for i in range(3):
        mean, var = _bayes_posterior_on_grid(x0[i].item(), xt[i].item(), t, schedule)
        assert posterior.mean[i].item() == pytest.approx(mean, rel=1e-4, abs=1e-6)
        assert posterior.var[i].item() == pytest.approx(var, rel=1e-3)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_float32_posterior_close_to_float64(name):
    """Stored float32, 1 - alpha_bar has absolute error ~6e-8, so relative error ~6e-8 / (1 - alpha_bar)."""
    s32, s64 = SCHEDULES[name], make_schedule(name, dtype=torch.float64)
    t = torch.arange(1, 1000)
    x0, xt = torch.full((999, 1), 0.7, dtype=torch.float64), torch.full((999, 1), -0.4, dtype=torch.float64)
    p32, p64 = q_posterior(x0.float(), xt.float(), t, s32), q_posterior(x0, xt, t, s64)
    rel_tol = 1e-6 + 4 * 6e-8 / (1 - s64.alpha_bar_prev[t].unsqueeze(1))
    assert ((p32.var.double() - p64.var).abs() <= rel_tol * p64.var).all()
    assert ((p32.mean.double() - p64.mean).abs() <= rel_tol * (p64.mean.abs() + 1)).all()


def test_posterior_at_t0_is_x0_with_zero_variance():
    """At t = 0 the 'previous' state is x0 itself: the posterior is a point mass at x0."""
    for schedule in SCHEDULES.values():
        x0 = torch.linspace(-1, 1, 12).reshape(3, 1, 2, 2)
        xt = q_step(x0, 0, schedule, generator=torch.Generator().manual_seed(0))
        posterior = q_posterior(x0, xt, 0, schedule)
        assert (posterior.var == 0).all()
        # float32 cancellation in 1 - alpha_bar[0] (alpha_bar[0] ~ 0.9999) limits this to ~1e-3.
        torch.testing.assert_close(posterior.mean, x0, rtol=1e-3, atol=1e-6)


def test_posterior_variance_lies_between_zero_and_beta():
    for schedule in SCHEDULES.values():
        t = torch.arange(1, schedule.T)
        var = q_posterior(torch.zeros(t.shape[0], 1), torch.zeros(t.shape[0], 1), t, schedule).var.squeeze(1)
        assert ((var > 0) & (var <= schedule.beta[1:] * (1 + 1e-6))).all()


def test_q_step_is_the_paper_formula():
    schedule = make_schedule("linear")
    beta = linear_betas().double()  # independent float64 route to the same betas
    x_prev = torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    noise = torch.randn(x_prev.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    t = torch.tensor([0, 1, 10, 500, 999])
    expected = (1 - beta[t]).sqrt().view(-1, 1, 1, 1) * x_prev + beta[t].sqrt().view(-1, 1, 1, 1) * noise
    torch.testing.assert_close(q_step(x_prev, t, schedule, noise=noise), expected, rtol=1e-6, atol=1e-7)


def test_first_step_and_closed_form_coincide_at_t0():
    for schedule in SCHEDULES.values():
        x0 = torch.rand(4, 1, 5, 5) * 2 - 1
        noise = torch.randn_like(x0)
        torch.testing.assert_close(q_step(x0, 0, schedule, noise=noise), q_sample(x0, 0, schedule, noise=noise))


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_x0_and_eps_recovered_exactly(name):
    schedule = SCHEDULES[name]
    generator = torch.Generator().manual_seed(4)
    t = torch.arange(0, 1000, 37)
    x0 = torch.rand(t.shape[0], 1, 6, 6, generator=generator, dtype=torch.float64) * 2 - 1
    eps = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    xt = q_sample(x0, t, schedule, noise=eps)
    torch.testing.assert_close(predict_x0_from_eps(xt, t, eps, schedule), x0, rtol=0, atol=1e-9)
    torch.testing.assert_close(predict_eps_from_x0(xt, t, x0, schedule), eps, rtol=0, atol=1e-9)
    # float32, where sqrt(alpha_bar) is not tiny: to float32 precision
    x0_32, eps_32, mid = x0.float()[:14], eps.float()[:14], t[:14]
    xt_32 = q_sample(x0_32, mid, schedule, noise=eps_32)
    torch.testing.assert_close(predict_x0_from_eps(xt_32, mid, eps_32, schedule), x0_32, rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", [(7,), (7, 2), (7, 1, 28, 28), (7, 4, 7, 7), (7, 2, 3, 4, 5)])
def test_extract_broadcasts_for_any_number_of_dims(shape):
    schedule = SCHEDULES["linear"]
    x = torch.zeros(shape)
    t = torch.arange(7) * 100
    out = extract(schedule.alpha_bar, t, x)
    assert out.shape == (7,) + (1,) * (len(shape) - 1)
    torch.testing.assert_close(out.flatten(), schedule.alpha_bar[t])
    assert q_sample(x, t, schedule).shape == shape


def test_same_generator_same_noise():
    schedule, x0 = SCHEDULES["linear"], torch.zeros(3, 1, 4, 4)
    a = q_sample(x0, 500, schedule, generator=torch.Generator().manual_seed(7))
    b = q_sample(x0, 500, schedule, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("t", "error", "message"),
    [
        (-1, ValueError, r"t must lie in \[0, 1000\)"),
        (1000, ValueError, r"t must lie in \[0, 1000\)"),
        (torch.tensor([0, 1, 1000]), ValueError, r"t must lie in \[0, 1000\)"),
        (torch.tensor([0.0, 1.0, 2.0]), TypeError, "t must hold integers"),
        (torch.tensor([[0], [1], [2]]), ValueError, r"shape \(B,\)"),
        (torch.tensor([0, 1]), ValueError, "2 timesteps but the batch has 3"),
        (2.0, TypeError, "t must be an int or a"),
        ("5", TypeError, "t must be an int or a"),
    ],
)
def test_bad_timesteps_raise_clear_errors(t, error, message):
    x0 = torch.zeros(3, 1, 4, 4)
    for call in (
        lambda: q_sample(x0, t, SCHEDULES["linear"]),
        lambda: q_step(x0, t, SCHEDULES["linear"]),
        lambda: q_posterior(x0, x0, t, SCHEDULES["linear"]),
    ):
        with pytest.raises(error, match=message):
            call()


def test_bad_tensors_raise_clear_errors():
    schedule = SCHEDULES["linear"]
    with pytest.raises(TypeError, match="floating-point"):
        q_sample(torch.zeros(2, 4, dtype=torch.uint8), 0, schedule)
    with pytest.raises(ValueError, match="noise must have the same shape"):
        q_sample(torch.zeros(2, 4), 0, schedule, noise=torch.zeros(2, 5))
    with pytest.raises(ValueError, match="x0 and xt must have the same shape"):
        q_posterior(torch.zeros(2, 4), torch.zeros(2, 3), 1, schedule)
    with pytest.raises(ValueError, match="leading batch dimension"):
        q_sample(torch.tensor(1.0), 0, schedule)


def test_forward_chain_repeats_q_step():
    schedule = make_schedule("cosine", T=20)
    x0 = torch.rand(3, 1, 4, 4) * 2 - 1
    states = forward_chain(x0, schedule, torch.Generator().manual_seed(5))
    assert states.shape == (20, 3, 1, 4, 4)
    generator, x = torch.Generator().manual_seed(5), x0
    for t in range(20):
        x = q_step(x, t, schedule, generator=generator)
        assert torch.equal(states[t], x)


def test_closed_form_path_is_q_sample_at_every_t():
    schedule = SCHEDULES["linear"]
    x0, noise = torch.rand(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    path = closed_form_path(x0, schedule, noise)
    assert path.shape == (1000, 2, 1, 4, 4)
    for t in (0, 1, 321, 999):
        torch.testing.assert_close(path[t], q_sample(x0, t, schedule, noise=noise))
