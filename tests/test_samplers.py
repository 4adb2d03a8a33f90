"""Samplers: agreement with diffusers' DDPM and DDIM schedulers, oracle runs, the visiting order."""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from diffusion_lesson.forward import predict_eps_from_x0, q_sample
from diffusion_lesson.samplers import ddim_step, ddim_timesteps, ddpm_step, denoise_at, sample_ddim, sample_ddpm
from diffusion_lesson.schedules import make_schedule

SCHEDULES = {"linear": make_schedule("linear"), "cosine": make_schedule("cosine")}
DIFFUSERS_NAMES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
SHAPE = (6, 1, 5, 5)


def _random_pair(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(SHAPE, generator=generator), torch.randn(SHAPE, generator=generator)


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize(("variance", "variance_type"), [("posterior", "fixed_small"), ("beta", "fixed_large")])
def test_ddpm_step_matches_diffusers(name, variance, variance_type):
    schedule = SCHEDULES[name]
    oracle = DDPMScheduler(beta_schedule=DIFFUSERS_NAMES[name], variance_type=variance_type, clip_sample=False)
    oracle.set_timesteps(1000)
    for t in [999, 998, 900, 500, 100, 10, 2, 1, 0]:
        xt, eps_pred = _random_pair(t)
        theirs = oracle.step(eps_pred, t, xt, generator=torch.Generator().manual_seed(t)).prev_sample
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(t))  # the draw diffusers makes
        ours = ddpm_step(xt, t, eps_pred, schedule, variance, noise=noise)
        # diffusers forms beta_t as 1 - alpha_bar_t / alpha_bar_prev in float32, hence not bit-exact
        torch.testing.assert_close(ours.x_prev, theirs, rtol=1e-4, atol=1e-4 if t > 900 else 2e-5)


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_step_matches_diffusers(name, spacing, eta):
    schedule, steps = SCHEDULES[name], 20
    oracle = DDIMScheduler(beta_schedule=DIFFUSERS_NAMES[name], clip_sample=False, timestep_spacing=spacing)
    oracle.set_timesteps(steps)
    timesteps = ddim_timesteps(1000, steps, spacing)
    assert timesteps.tolist() == oracle.timesteps.tolist()
    for i, t in enumerate(timesteps.tolist()):
        t_prev = timesteps[i + 1].item() if i + 1 < steps else -1
        xt, eps_pred = _random_pair(1000 + t)
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(t))
        theirs = oracle.step(eps_pred, t, xt, eta=eta, variance_noise=noise).prev_sample
        ours = ddim_step(xt, t, t_prev, eps_pred, schedule, eta, noise=noise)
        torch.testing.assert_close(ours.x_prev, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize(("variance", "variance_type"), [("posterior", "fixed_small"), ("beta", "fixed_large")])
def test_ddpm_step_with_clipped_x0_matches_diffusers_clip_sample(name, variance, variance_type):
    schedule = SCHEDULES[name]
    oracle = DDPMScheduler(beta_schedule=DIFFUSERS_NAMES[name], variance_type=variance_type, clip_sample=True)
    oracle.set_timesteps(1000)
    clipped_somewhere = False
    for t in [999, 900, 500, 100, 10, 1, 0]:
        xt, eps_pred = _random_pair(t)
        theirs = oracle.step(eps_pred, t, xt, generator=torch.Generator().manual_seed(t)).prev_sample
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(t))
        ours = ddpm_step(xt, t, eps_pred, schedule, variance, noise=noise, clip_x0=True)
        # Here beta_t multiplies x0 directly (eq. 7), and diffusers forms it as 1 - alpha_bar_t / alpha_bar_prev
        # in float32: a relative error of about 6e-8 / beta_t, up to 6e-4 at beta_t = 1e-4.
        torch.testing.assert_close(ours.x_prev, theirs, rtol=1e-3, atol=1e-3)
        assert ours.x0_pred.abs().max() <= 1
        clipped_somewhere |= not torch.allclose(
            ours.x_prev, ddpm_step(xt, t, eps_pred, schedule, variance, noise).x_prev
        )
    assert clipped_somewhere  # the random eps pushes x0_pred out of [-1, 1]: clipping changed the step


@pytest.mark.parametrize("t", [999, 500, 20, 1, 0])
def test_clipping_changes_nothing_when_x0_pred_is_inside_the_data_range(t):
    """Eq. 7's posterior mean from x0_pred is eq. 11's mean: exact when nothing is clipped (float64)."""
    schedule = make_schedule("linear", dtype=torch.float64)
    generator = torch.Generator().manual_seed(t)
    x0 = torch.rand(SHAPE, generator=generator, dtype=torch.float64) * 1.8 - 0.9
    xt, eps = (
        q_sample(x0, t, schedule, generator=generator),
        torch.randn(SHAPE, generator=generator, dtype=torch.float64),
    )
    eps_pred = predict_eps_from_x0(xt, t, x0, schedule)  # implies exactly x0, inside [-1, 1]
    for clipped, plain in [
        (
            ddpm_step(xt, t, eps_pred, schedule, "posterior", eps, clip_x0=True),
            ddpm_step(xt, t, eps_pred, schedule, "posterior", eps),
        ),
        (
            ddim_step(xt, t, t - 1, eps_pred, schedule, 0.5, eps, clip_x0=True),
            ddim_step(xt, t, t - 1, eps_pred, schedule, 0.5, eps),
        ),
    ]:
        torch.testing.assert_close(clipped.x_prev, plain.x_prev, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_step_with_clipped_x0_matches_diffusers_clip_sample(name, eta):
    schedule, steps = SCHEDULES[name], 20
    oracle = DDIMScheduler(beta_schedule=DIFFUSERS_NAMES[name], clip_sample=True, timestep_spacing="trailing")
    oracle.set_timesteps(steps)
    timesteps = ddim_timesteps(1000, steps)
    for i, t in enumerate(timesteps.tolist()):
        t_prev = timesteps[i + 1].item() if i + 1 < steps else -1
        xt, eps_pred = _random_pair(2000 + t)
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(t))
        theirs = oracle.step(eps_pred, t, xt, eta=eta, variance_noise=noise, use_clipped_model_output=True)
        ours = ddim_step(xt, t, t_prev, eps_pred, schedule, eta, noise=noise, clip_x0=True)
        torch.testing.assert_close(ours.x_prev, theirs.prev_sample, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ours.x0_pred, theirs.pred_original_sample, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("steps", [10, 20, 50, 100])
def test_ddim_timesteps_match_diffusers_for_both_spacings(steps):
    for spacing in ("leading", "trailing"):
        oracle = DDIMScheduler(clip_sample=False, timestep_spacing=spacing)
        oracle.set_timesteps(steps)
        assert ddim_timesteps(1000, steps, spacing).tolist() == oracle.timesteps.tolist()


def _oracle_model(x0: torch.Tensor, schedule):
    """A perfect eps predictor for a known x0, plus a log of the timesteps it was called with."""
    calls = []

    def model(xt, t, labels):
        calls.append(t[0].item())
        assert (t == t[0]).all()
        return predict_eps_from_x0(xt, t, x0.to(xt.dtype), schedule)

    return model, calls


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_deterministic_ddim_step_with_oracle_lands_on_closed_form(name):
    schedule = make_schedule(name, dtype=torch.float64)
    x0 = torch.rand(SHAPE, dtype=torch.float64) * 2 - 1
    eps = torch.randn(SHAPE, dtype=torch.float64)
    model, _ = _oracle_model(x0, schedule)
    for t, t_prev in [(999, 979), (999, 0), (500, 499), (500, 100), (1, 0), (0, -1), (37, 5)]:
        xt = q_sample(x0, t, schedule, noise=eps)
        step = ddim_step(xt, t, t_prev, model(xt, torch.full((SHAPE[0],), t), None), schedule, eta=0.0)
        expected = x0 if t_prev == -1 else q_sample(x0, t_prev, schedule, noise=eps)
        torch.testing.assert_close(step.x_prev, expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("steps", [1, 10, 50, 1000])
def test_oracle_ddim_loop_ends_at_x0(steps):
    """From pure noise, DDIM driven by the true eps reaches x0; float32, so within 1e-3 (the worst
    case is the first step at t = 999, where x0 = (xt - ...) / sqrt(alpha_bar) with sqrt(alpha_bar) ~ 6e-3)."""
    schedule = SCHEDULES["linear"]
    x0 = torch.rand(SHAPE) * 2 - 1
    model, calls = _oracle_model(x0, schedule)
    result = sample_ddim(model, SHAPE, schedule, steps=steps, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(result.x0, x0, rtol=0, atol=1e-3)
    assert calls == ddim_timesteps(1000, steps).tolist()


def test_ddpm_visits_every_step_once_descending():
    schedule = make_schedule("linear", T=50)
    x0 = torch.zeros(SHAPE)
    model, calls = _oracle_model(x0, schedule)
    sample_ddpm(model, SHAPE, schedule, generator=torch.Generator().manual_seed(0))
    assert calls == list(range(49, -1, -1))


@pytest.mark.parametrize("steps", [7, 33, 250, 999])
def test_strided_timesteps_are_distinct_and_descending(steps):
    for spacing in ("leading", "trailing"):
        ts = ddim_timesteps(1000, steps, spacing)
        assert len(ts) == steps and len(set(ts.tolist())) == steps
        assert (ts[1:] < ts[:-1]).all() and ts.min() >= 0 and ts.max() <= 999
    assert ddim_timesteps(1000, steps, "trailing")[0] == 999


@pytest.mark.parametrize(
    ("steps", "error", "message"),
    [
        (0, ValueError, "between 1 and T"),
        (1001, ValueError, "between 1 and T"),
        (2.5, TypeError, "must be an int"),
        (True, TypeError, "must be an int"),
    ],
)
def test_bad_step_counts(steps, error, message):
    with pytest.raises(error, match=message):
        ddim_timesteps(1000, steps)


def test_bad_step_arguments():
    schedule, x = SCHEDULES["linear"], torch.zeros(SHAPE)
    with pytest.raises(ValueError, match="unknown variance"):
        ddpm_step(x, 5, x, schedule, variance="large")
    with pytest.raises(ValueError, match="t_prev must satisfy"):
        ddim_step(x, 5, 5, x, schedule)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1000\)"):
        ddpm_step(x, 1000, x, schedule)
    with pytest.raises(ValueError, match="unknown spacing"):
        ddim_timesteps(1000, 10, "linspace")


def _noise_model(xt, t, labels):
    return 0.1 * xt + 0.01 * t.view(-1, *([1] * (xt.ndim - 1))).float() / 1000


def test_same_seed_same_samples_and_trajectory_only_when_asked():
    schedule = make_schedule("linear", T=100)
    run = lambda **kw: sample_ddpm(_noise_model, SHAPE, schedule, generator=torch.Generator().manual_seed(3), **kw)  # noqa: E731
    a, b = run(), run(return_trajectory=True)
    assert torch.equal(a.x0, b.x0) and a.trajectory is None
    assert b.trajectory.xt.shape == (100, *SHAPE) and b.trajectory.x0_pred.shape == (100, *SHAPE)
    assert b.trajectory.timesteps.tolist() == list(range(99, -1, -1))
    stochastic = sample_ddim(
        _noise_model, SHAPE, schedule, steps=10, eta=1.0, generator=torch.Generator().manual_seed(3)
    )
    again = sample_ddim(_noise_model, SHAPE, schedule, steps=10, eta=1.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(stochastic.x0, again.x0)


def test_batched_requests_and_labels_reach_the_model():
    schedule, seen = make_schedule("linear", T=20), []

    def model(xt, t, labels):
        seen.append(labels.tolist())
        return torch.zeros_like(xt)

    labels = torch.arange(10)
    result = sample_ddim(model, (10, 4, 7, 7), schedule, steps=2, labels=labels, batch_size=4, return_trajectory=True)
    assert result.x0.shape == (10, 4, 7, 7) and result.trajectory.xt.shape == (2, 10, 4, 7, 7)
    assert seen == [[0, 1, 2, 3]] * 2 + [[4, 5, 6, 7]] * 2 + [[8, 9]] * 2
    with pytest.raises(ValueError, match="labels must have shape"):
        sample_ddim(model, (10, 1, 4, 4), schedule, steps=2, labels=torch.arange(3))


def test_denoise_at_with_a_perfect_model_recovers_x0():
    schedule = SCHEDULES["cosine"]
    x0, noise = torch.rand(SHAPE) * 2 - 1, torch.randn(SHAPE)
    model, _ = _oracle_model(x0, schedule)
    xt, eps_pred, x0_pred = denoise_at(model, x0, 300, schedule, noise)
    torch.testing.assert_close(xt, q_sample(x0, 300, schedule, noise=noise))
    torch.testing.assert_close(eps_pred, noise, rtol=0, atol=1e-5)
    torch.testing.assert_close(x0_pred, x0, rtol=0, atol=1e-5)


def test_the_wrong_sampler_is_the_mean_without_noise():
    schedule = SCHEDULES["linear"]
    xt, eps_pred = _random_pair(9)
    noise = torch.randn(SHAPE)
    wrong = ddpm_step(xt, 500, eps_pred, schedule, "none")
    right = ddpm_step(xt, 500, eps_pred, schedule, "beta", noise=noise)
    torch.testing.assert_close(right.x_prev - wrong.x_prev, schedule.beta[500].sqrt() * noise)
