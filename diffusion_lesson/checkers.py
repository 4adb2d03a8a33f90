"""Checkers for the notebooks' exercises: each runs your function on cases with known answers (notebooks 01-07).

    from diffusion_lesson.checkers import check_q_sample
    result = check_q_sample(q_sample_yours)   # prints the verdict; result.passed, result.message

The known answers come from the package's own functions (``forward``, ``samplers``, ``losses``,
``metrics``), in float64. A wrong answer is compared with what each classic mistake would give, and
a match is named: a variance used as a standard deviation (or the other way round), t off by one
(paper time against code time), the sampler's noise forgotten or added at the last step, the
posterior variance swapped for beta, an element-wise square root in FID, guidance with its two
predictions swapped, the latent scale applied the wrong way round. How a verdict is reached:
``diffusion_lesson.checking``. How the exercises sit in the notebooks, and how student copies are
made from them: ``python -m diffusion_lesson.exercises --help``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from diffusion_lesson.checking import (
    Case,
    CheckResult,
    Mistake,
    WrongAnswer,
    canonical,
    float64_schedule,
    judge,
    per_sample,
    randn,
)
from diffusion_lesson.forward import predict_x0_from_eps, q_posterior, q_sample, q_step
from diffusion_lesson.guidance import guide
from diffusion_lesson.losses import simple_loss
from diffusion_lesson.metrics import FeatureStats, frechet_distance
from diffusion_lesson.samplers import ddim_step, ddpm_step

OFF_BY_ONE = "t off by one (paper time against code time): code step t is the paper's step t + 1, so "
STD_FOR_VAR = "a variance used as a standard deviation: "


def check_q_step(fn: Callable) -> CheckResult:
    """fn(x_prev, t, eps, schedule) -> x_t, one forward step (DDPM eq. 2); t is one int code step."""
    s = float64_schedule()
    cases = [Case(f"t = {t}", (randn(t, 4, 1, 6, 6), t, randn(100 + t, 4, 1, 6, 6), s)) for t in (0, 1, 500, 999)]
    mistakes = [
        Mistake(STD_FOR_VAR + "beta_t is the variance of the added noise, so eps is scaled by sqrt(beta_t)",
                lambda x, t, e, s: s.alpha[t].sqrt() * x + s.beta[t] * e),
        Mistake("the signal is not shrunk: x_{t-1} is scaled by sqrt(alpha_t) = sqrt(1 - beta_t), which keeps "
                "the variance at 1", lambda x, t, e, s: x + s.beta[t].sqrt() * e),
        Mistake("alpha_t used where sqrt(alpha_t) belongs: the mean of q(x_t | x_{t-1}) is sqrt(alpha_t) x_{t-1}",
                lambda x, t, e, s: s.alpha[t] * x + s.beta[t].sqrt() * e),
        Mistake(OFF_BY_ONE + "step t adds beta[t], not beta[t - 1] (at t = 0 that is beta[-1], the last one)",
                lambda x, t, e, s: s.alpha[t - 1].sqrt() * x + s.beta[t - 1].sqrt() * e),
    ]  # fmt: skip
    hint = ("x_t = sqrt(alpha_t) x_prev + sqrt(beta_t) eps with alpha_t = schedule.alpha[t] and "
            "beta_t = schedule.beta[t], one number each for the whole batch")  # fmt: skip
    return judge(fn, cases, lambda x, t, e, s: q_step(x, t, s, noise=e), mistakes, hint)


def check_q_sample(fn: Callable) -> CheckResult:
    """fn(x0, t, eps, schedule) -> x_t, the closed form q(x_t | x0) (DDPM eq. 4); t is a (B,) long tensor."""
    s = float64_schedule()
    steps = ([0, 1, 10, 300, 998], [999, 500, 2, 0, 50])
    cases = [Case(f"t = {t}", (randn(i, 5, 1, 6, 6), torch.tensor(t), randn(10 + i, 5, 1, 6, 6), s))
             for i, t in enumerate(steps)]  # fmt: skip

    def closed_form(signal: Callable, noise: Callable, shift: int = 0) -> Callable:
        def wrong(x0, t, eps, s):
            return per_sample(signal(s, t + shift), x0) * x0 + per_sample(noise(s, t + shift), x0) * eps

        return wrong

    root_ab, root_1mab = (lambda s, t: s.alpha_bar[t].sqrt()), (lambda s, t: (1 - s.alpha_bar[t]).sqrt())
    mistakes = [
        Mistake("sqrt(1 - alpha_bar_t) used as a variance: it is already the standard deviation of the noise, "
                "so eps is scaled by sqrt(1 - alpha_bar_t), not by its square root",
                closed_form(root_ab, lambda s, t: (1 - s.alpha_bar[t]) ** 0.25)),
        Mistake(STD_FOR_VAR + "1 - alpha_bar_t is the variance of the noise in x_t, so eps is scaled by "
                "sqrt(1 - alpha_bar_t)", closed_form(root_ab, lambda s, t: 1 - s.alpha_bar[t])),
        Mistake("alpha_bar_t used where sqrt(alpha_bar_t) belongs: the mean of q(x_t | x0) is sqrt(alpha_bar_t) x0",
                closed_form(lambda s, t: s.alpha_bar[t], root_1mab)),
        Mistake("the two coefficients are swapped: x0 is scaled by sqrt(alpha_bar_t), the noise by "
                "sqrt(1 - alpha_bar_t)", closed_form(root_1mab, root_ab)),
        Mistake("the noise of one step: beta_t is what step t adds (eq. 2); after all the steps up to t the "
                "noise's variance is 1 - alpha_bar_t", closed_form(root_ab, lambda s, t: s.beta[t].sqrt())),
        Mistake("one step of eq. 2 (alpha_t, beta_t) instead of all of them at once: use alpha_bar_t",
                closed_form(lambda s, t: s.alpha[t].sqrt(), lambda s, t: s.beta[t].sqrt())),
        Mistake(OFF_BY_ONE + "x_t uses alpha_bar[t]; you used alpha_bar[t - 1] (that is alpha_bar_prev[t], and at "
                "t = 0 it is alpha_bar[-1], the last entry)", closed_form(root_ab, root_1mab, shift=-1)),
        Mistake(OFF_BY_ONE + "x_t uses alpha_bar[t]; alpha_bar_prev[t] belongs to the step before",
                closed_form(lambda s, t: s.alpha_bar_prev[t].sqrt(), lambda s, t: (1 - s.alpha_bar_prev[t]).sqrt())),
    ]  # fmt: skip
    hint = ("x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps; schedule.alpha_bar[t] has shape (B,), so "
            "reshape it to (B, 1, 1, 1) to multiply each image by its own number")  # fmt: skip
    return judge(fn, cases, lambda x0, t, e, s: q_sample(x0, t, s, noise=e), mistakes, hint)


def check_posterior(fn: Callable) -> CheckResult:
    """fn(x0, xt, t, schedule) -> (mean, var) of q(x_{t-1} | x_t, x0) (DDPM eqs. 6-7); t is one int code step."""
    s = float64_schedule()
    cases = []
    for t in (0, 1, 5, 500, 999):
        x0 = randn(t, 3, 1, 6, 6).clamp(-1, 1)
        cases.append(Case(f"t = {t}", (x0, q_sample(x0, t, s, noise=randn(50 + t, 3, 1, 6, 6)), t, s)))

    def posterior(t_of: Callable, prev_of: Callable, swap: bool = False, var_of: Callable | None = None) -> Callable:
        def wrong(x0, xt, t, s):
            beta, alpha, ab, abp = s.beta[t_of(t)], s.alpha[t_of(t)], s.alpha_bar[t_of(t)], prev_of(s, t)
            c0, ct = abp.sqrt() * beta / (1 - ab), alpha.sqrt() * (1 - abp) / (1 - ab)
            mean = ct * x0 + c0 * xt if swap else c0 * x0 + ct * xt
            return mean, (1 - abp) / (1 - ab) * beta if var_of is None else var_of(s, t)

        return wrong

    same, prev = (lambda t: t), (lambda s, t: s.alpha_bar_prev[t])
    mistakes = [
        Mistake("the posterior variance swapped for beta_t: eq. 7's variance is (1 - alpha_bar_{t-1}) / "
                "(1 - alpha_bar_t) beta_t, smaller than beta_t and 0 at t = 0",
                posterior(same, prev, var_of=lambda s, t: s.beta[t])),
        Mistake("a standard deviation returned as the variance: return (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) "
                "beta_t itself, not its square root",
                posterior(same, prev, var_of=lambda s, t: ((1 - s.alpha_bar_prev[t]) / (1 - s.alpha_bar[t])
                                                           * s.beta[t]).sqrt())),
        Mistake("alpha_bar[t - 1] at t = 0 is alpha_bar[-1], the schedule's last entry: use "
                "schedule.alpha_bar_prev[t], which is 1 at t = 0 (one step back from there is x0 itself)",
                posterior(same, lambda s, t: s.alpha_bar[t - 1])),
        Mistake(OFF_BY_ONE + "the state at code step t uses beta[t], alpha_bar[t] and alpha_bar_prev[t]; you used "
                "the entries one step earlier", posterior(lambda t: t - 1, lambda s, t: s.alpha_bar[t - 2])),
        Mistake("the mean's two coefficients are swapped: x0 gets sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t), "
                "x_t gets sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)", posterior(same, prev, swap=True)),
    ]  # fmt: skip
    hint = ("eqs. 6-7 with alpha_bar_{t-1} = schedule.alpha_bar_prev[t], which is 1 at t = 0: there the posterior "
            "is a point mass at x0 (mean x0, variance 0); return the pair (mean, var)")  # fmt: skip
    return judge(fn, cases, lambda x0, xt, t, s: q_posterior(x0, xt, t, s), mistakes, hint, canon=_mean_and_var)


def check_simple_loss(fn: Callable) -> CheckResult:
    """fn(model, x0, t, eps, schedule) -> the simple loss (Algorithm 1) for these t (B,) and eps, a scalar.

    The model here is a stand-in: any fixed function eps_pred = model(x_t, t) checks the loss as well
    as a trained U-Net. The known answer is the package's simple_loss, with t and eps drawn in its order.
    """
    s, cases = float64_schedule(), []
    for seed in (1, 2):
        x0, g = randn(seed, 6, 1, 6, 6).clamp(-1, 1), torch.Generator().manual_seed(seed)
        t = torch.randint(0, s.T, (6,), generator=g)
        eps = torch.randn(x0.shape, generator=g, dtype=x0.dtype)  # the draws simple_loss makes, in its order
        expected = simple_loss(_toy_eps_model, x0, s, torch.Generator().manual_seed(seed))
        cases.append(Case(f"t = {t.tolist()}", (_toy_eps_model, x0, t, eps, s), expected))

    def loss_of(target, inputs: Callable = q_sample, shift: int = 0, reduce=lambda e: e.square().mean()) -> Callable:
        def wrong(model, x0, t, eps, s):
            goal = eps if target == "eps" else x0
            return reduce(goal - model(inputs(x0, t, s, noise=eps), t + shift))

        return wrong

    mistakes = [
        Mistake("the target is x0: the simple loss compares the prediction with the noise eps that made x_t",
                loss_of("x0")),
        Mistake("the model was shown x0: it must see the noisy x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps",
                loss_of("eps", inputs=lambda x0, t, s, noise: x0)),
        Mistake("summed instead of averaged: the simple loss is the mean over the batch and every pixel",
                loss_of("eps", reduce=lambda e: e.square().sum())),
        Mistake("the mean absolute error: the simple loss squares the error",
                loss_of("eps", reduce=lambda e: e.abs().mean())),
        Mistake("t off by one (paper time against code time): the model is asked at the same code step t that "
                "noised x0, not at t + 1", loss_of("eps", shift=1)),
    ]  # fmt: skip
    hint = ("x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps (your q_sample), then the mean of "
            "(eps - model(x_t, t))^2 over the batch and every pixel")  # fmt: skip
    return judge(fn, cases, None, mistakes, hint)


def check_x0_from_eps(fn: Callable) -> CheckResult:
    """fn(xt, t, eps, schedule) -> x0 implied by x_t and eps (DDPM eq. 15); t is a (B,) long tensor."""
    s = float64_schedule()
    steps = ([0, 1, 10, 300, 998], [999, 500, 2, 0, 50])
    cases = [Case(f"t = {t}", (randn(i, 5, 1, 6, 6), torch.tensor(t), randn(10 + i, 5, 1, 6, 6), s))
             for i, t in enumerate(steps)]  # fmt: skip

    def solved(root_ab: Callable, noise: Callable, sign: int = -1, shift: int = 0, divide: bool = True) -> Callable:
        def wrong(xt, t, eps, s):
            a, n = per_sample(root_ab(s, t + shift), xt), per_sample(noise(s, t + shift), xt)
            return (xt + sign * n * eps) / a if divide else (xt + sign * n * eps) * a

        return wrong

    root_ab, root_1mab = (lambda s, t: s.alpha_bar[t].sqrt()), (lambda s, t: (1 - s.alpha_bar[t]).sqrt())
    mistakes = [
        Mistake("multiplied by sqrt(alpha_bar_t) where eq. 15 divides by it", solved(root_ab, root_1mab, divide=False)),
        Mistake("the noise added instead of subtracted: x0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)",
                solved(root_ab, root_1mab, sign=1)),
        Mistake(STD_FOR_VAR + "the noise in x_t is sqrt(1 - alpha_bar_t) eps, not (1 - alpha_bar_t) eps",
                solved(root_ab, lambda s, t: 1 - s.alpha_bar[t])),
        Mistake("alpha_bar_t used where sqrt(alpha_bar_t) belongs: divide by sqrt(alpha_bar_t)",
                solved(lambda s, t: s.alpha_bar[t], root_1mab)),
        Mistake(OFF_BY_ONE + "x_t at code step t uses alpha_bar[t]; you used alpha_bar[t - 1]",
                solved(root_ab, root_1mab, shift=-1)),
    ]  # fmt: skip
    hint = ("solve x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps for x0; reshape schedule.alpha_bar[t], "
            "shape (B,), to (B, 1, 1, 1)")  # fmt: skip
    return judge(fn, cases, lambda xt, t, e, s: predict_x0_from_eps(xt, t, e, s), mistakes, hint)


def check_ddpm_step(fn: Callable) -> CheckResult:
    """fn(xt, t, eps_pred, schedule, noise) -> x_{t-1}, one step of DDPM's Algorithm 2 with sigma_t^2 = beta_t.

    t is one int code step; noise is the z to add (shaped like xt), which the last step (t = 0) leaves out.
    """
    s = float64_schedule()
    cases = [Case(f"t = {t}", (randn(t, 4, 1, 6, 6), t, randn(10 + t, 4, 1, 6, 6), s, randn(20 + t, 4, 1, 6, 6)))
             for t in (999, 500, 10, 1, 0)]  # fmt: skip

    def step(
        coef: Callable = lambda s, t: s.beta[t] / (1 - s.alpha_bar[t]).sqrt(),
        root_alpha: bool = True,
        sigma: Callable = lambda s, t: s.beta[t].sqrt(),
        last: int = 0,
        shift: int = 0,
    ) -> Callable:
        def wrong(xt, t, eps_pred, s, noise):
            u = t + shift
            mean = (xt - coef(s, u) * eps_pred) / (s.alpha[u].sqrt() if root_alpha else s.alpha[u])
            return mean + sigma(s, u) * noise if t > last else mean

        return wrong

    posterior_sd = lambda s, t: ((1 - s.alpha_bar_prev[t]) / (1 - s.alpha_bar[t]) * s.beta[t]).sqrt()  # noqa: E731
    mistakes = [
        Mistake("the sampler's noise is forgotten: Algorithm 2 adds sigma_t z (sigma_t = sqrt(beta_t)) at every "
                "step but the last; without it the samples collapse (notebook 04, the wrong sampler)",
                step(sigma=lambda s, t: 0 * s.beta[t])),
        Mistake("noise added at the last step: at t = 0 (the paper's t = 1) Algorithm 2 sets z = 0, and the mean "
                "is the sample x0", step(last=-1)),
        Mistake("the noise left out at t = 1 as well (paper time against code time): the paper's 'z = 0 if t = 1' "
                "is code step t = 0, so code step 1 still adds noise", step(last=1)),
        Mistake(STD_FOR_VAR + "sigma_t^2 = beta_t, so the noise is scaled by sqrt(beta_t)",
                step(sigma=lambda s, t: s.beta[t])),
        Mistake("the posterior variance used as sigma_t^2: a fine choice too (variance='posterior' in the "
                "package), but this exercise asks for sigma_t^2 = beta_t", step(sigma=posterior_sd)),
        Mistake("the mean subtracts sqrt(1 - alpha_bar_t) eps_pred, as x0's formula (eq. 15) does; eq. 11 "
                "subtracts beta_t / sqrt(1 - alpha_bar_t) eps_pred",
                step(coef=lambda s, t: (1 - s.alpha_bar[t]).sqrt())),
        Mistake("divided by alpha_t where eq. 11 divides by sqrt(alpha_t)", step(root_alpha=False)),
        Mistake(OFF_BY_ONE + "step t uses alpha[t], beta[t] and alpha_bar[t]; you used the entries of step t - 1",
                step(shift=-1)),
    ]  # fmt: skip
    hint = ("mean = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_pred) / sqrt(alpha_t) (eq. 11); return "
            "mean + sqrt(beta_t) noise, or the mean alone at t = 0")  # fmt: skip
    return judge(fn, cases, lambda xt, t, e, s, z: ddpm_step(xt, t, e, s, noise=z).x_prev, mistakes, hint)


def check_ddim_step(fn: Callable) -> CheckResult:
    """fn(xt, t, t_prev, eps_pred, schedule) -> x_{t_prev}, one deterministic DDIM step (eta = 0, Song et al. eq. 12).

    t_prev < t may skip steps; t_prev = -1 means the clean x0, whose alpha_bar is 1.
    """
    s = float64_schedule()
    pairs = ((999, 979), (500, 400), (40, 20), (20, -1), (5, 4))
    cases = [Case(f"t = {t}, t_prev = {p}", (randn(t, 4, 1, 6, 6), t, p, randn(10 + t, 4, 1, 6, 6), s))
             for t, p in pairs]  # fmt: skip

    def step(
        ab: Callable = lambda s, t: s.alpha_bar[t] if t >= 0 else torch.ones((), dtype=s.alpha_bar.dtype),
        prev: Callable | None = None,
        direction_at_t: bool = False,
    ) -> Callable:
        def wrong(xt, t, t_prev, eps_pred, s):
            ab_t, ab_prev = ab(s, t), ab(s, t_prev) if prev is None else prev(s, t, t_prev)
            x0_pred = (xt - (1 - ab_t).sqrt() * eps_pred) / ab_t.sqrt()
            return ab_prev.sqrt() * x0_pred + (1 - (ab_t if direction_at_t else ab_prev)).sqrt() * eps_pred

        return wrong

    mistakes = [
        Mistake("t_prev = -1 means the clean x0, where alpha_bar is 1; alpha_bar[-1] is the schedule's last entry",
                step(prev=lambda s, t, p: s.alpha_bar[p])),
        Mistake("alpha_bar_prev[t] is the step just before t, but DDIM jumps to t_prev: use alpha_bar[t_prev]",
                step(prev=lambda s, t, p: s.alpha_bar_prev[t])),
        Mistake("DDIM's alpha_t is our alpha_bar_t (the product over all steps), not alpha[t]",
                step(ab=lambda s, t: s.alpha[t] if t >= 0 else torch.ones((), dtype=s.alpha.dtype))),
        Mistake("the direction term uses sqrt(1 - alpha_bar_t); it carries eps_pred to the new noise level: "
                "sqrt(1 - alpha_bar_prev) eps_pred", step(direction_at_t=True)),
    ]  # fmt: skip
    hint = ("x0_pred = (x_t - sqrt(1 - alpha_bar_t) eps_pred) / sqrt(alpha_bar_t), then "
            "sqrt(alpha_bar_prev) x0_pred + sqrt(1 - alpha_bar_prev) eps_pred, with "
            "alpha_bar_prev = alpha_bar[t_prev] (1 if t_prev = -1)")  # fmt: skip
    return judge(fn, cases, lambda xt, t, p, e, s: ddim_step(xt, t, p, e, s).x_prev, mistakes, hint)


def check_latent_scale(fn: Callable) -> CheckResult:
    """fn(mean) -> z = s * mean with s = 1 / std(mean): encoder means (N, C, h, w) scaled to unit variance."""
    offsets, spreads = torch.tensor([0.5, -1.0, 2.0, 0.0]), torch.tensor([0.3, 1.0, 2.5, 0.1])
    cases = []
    for seed, size in ((0, 0.2), (1, 3.0)):  # one set much narrower than unit variance, one much wider
        mean = size * (offsets + spreads * randn(seed, 16, 7, 7, 4)).permute(0, 3, 1, 2)  # (16, 4, 7, 7)
        cases.append(Case(f"means with std {mean.std():.2f}", (mean,)))
    channel_std = lambda m: m.std(dim=(0, 2, 3), keepdim=True)  # noqa: E731
    mistakes = [
        Mistake("the latent scale applied the wrong way round: you multiplied by std(mean); s = 1 / std(mean), "
                "so that z = s * mean has unit variance (and decoding divides by s)", lambda m: m * m.std()),
        Mistake("the latents were also centred: latent diffusion only rescales, z = s * mean with no shift",
                lambda m: (m - m.mean()) / m.std()),
        Mistake("one scale per channel: latent diffusion uses one number s = 1 / std over all the latents",
                lambda m: m / channel_std(m)),
        Mistake("divided by the variance: s = 1 / std(mean), the standard deviation", lambda m: m / m.var()),
    ]  # fmt: skip
    hint = "s = 1 / mean.std(), one number over all the latents; return s * mean, shaped like mean"
    # the package's fit_latent_scale and Autoencoder.encode, in one line; either std (n or n - 1) passes
    return judge(fn, cases, lambda m: m * (1.0 / m.float().std().item()), mistakes, hint, rtol=2e-3, atol=1e-6)


def check_frechet_distance(fn: Callable) -> CheckResult:
    """fn(mu_1, cov_1, mu_2, cov_2) -> the Frechet distance between two Gaussians, a float (numpy float64 inputs)."""
    rng, cases = np.random.default_rng(0), []
    for d in (3, 5):
        a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
        args = (rng.normal(size=d), a @ a.T + 0.1 * np.eye(d), rng.normal(size=d), b @ b.T + 0.1 * np.eye(d))
        cases.append(Case(f"two {d}-dimensional Gaussians", args))
    cases.append(Case("diagonal covariances", (np.zeros(4), np.diag([1.0, 4.0, 9.0, 0.5]), np.ones(4), np.eye(4))))

    def fid(root: Callable, factor: float = 2.0, mean_term: Callable = lambda d: np.sum(d**2)) -> Callable:
        def wrong(mu_1, cov_1, mu_2, cov_2):
            return float(mean_term(mu_1 - mu_2) + np.trace(cov_1 + cov_2 - factor * root(cov_1, cov_2).real))

        return wrong

    sqrtm = lambda c1, c2: _sqrtm(c1 @ c2)  # noqa: E731
    mistakes = [
        Mistake("an element-wise square root: np.sqrt(cov_1 @ cov_2) takes the root of each entry; FID needs the "
                "matrix square root (scipy.linalg.sqrtm, or an eigendecomposition)",
                fid(lambda c1, c2: np.sqrt(c1 @ c2))),
        Mistake("the product of two square roots: sqrtm(cov_1) @ sqrtm(cov_2) is not sqrtm(cov_1 @ cov_2) unless "
                "the two matrices commute", fid(lambda c1, c2: _sqrtm(c1) @ _sqrtm(c2))),
        Mistake("the factor 2 is missing: tr(cov_1 + cov_2 - 2 sqrtm(cov_1 @ cov_2))", fid(sqrtm, factor=1.0)),
        Mistake("the mean term is not squared: it is ||mu_1 - mu_2||^2", fid(sqrtm, mean_term=np.linalg.norm)),
    ]  # fmt: skip
    hint = ("||mu_1 - mu_2||^2 + tr(cov_1 + cov_2 - 2 sqrtm(cov_1 @ cov_2)) with a matrix square root "
            "(scipy.linalg.sqrtm; take .real), returned as a float")  # fmt: skip

    def package(mu_1, cov_1, mu_2, cov_2):
        return frechet_distance(FeatureStats(mu_1, cov_1, 0), FeatureStats(mu_2, cov_2, 0))

    return judge(fn, cases, package, mistakes, hint, rtol=1e-6, atol=1e-8)


def check_guidance(fn: Callable) -> CheckResult:
    """fn(eps_cond, eps_uncond, w) -> the classifier-free guided eps_uncond + w (eps_cond - eps_uncond).

    w is the guidance scale as diffusers counts it: w = 0 is the unconditional model, w = 1 the
    conditional one, w > 1 pushes further away from the unconditional prediction.
    """
    cases = [Case(f"w = {w}", (randn(i, 4, 1, 6, 6), randn(10 + i, 4, 1, 6, 6), w))
             for i, w in enumerate((0.0, 1.0, 3.0, 7.5))]  # fmt: skip
    mistakes = [
        Mistake("the two predictions are swapped: guidance starts from the unconditional prediction and moves "
                "towards the conditional one, eps_uncond + w (eps_cond - eps_uncond)",
                lambda c, u, w: c + w * (u - c)),
        Mistake("the guidance paper's w: (1 + w) eps_cond - w eps_uncond counts w from the conditional model; "
                "here w = 1 is the conditional model, eps_uncond + w (eps_cond - eps_uncond)",
                lambda c, u, w: c + w * (c - u)),
        Mistake("the unconditional prediction is missing: eps_uncond + w (eps_cond - eps_uncond), not only "
                "w (eps_cond - eps_uncond)", lambda c, u, w: w * (c - u)),
    ]  # fmt: skip
    hint = "eps = eps_uncond + w (eps_cond - eps_uncond), shaped like eps_cond"
    return judge(fn, cases, guide, mistakes, hint)


def _toy_eps_model(xt: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
    """A stand-in eps_theta: a fixed, t-dependent function of x_t (what it predicts does not matter here)."""
    return 0.8 * torch.tanh(xt) * (1 + per_sample(t.to(xt.dtype), xt) / 1000)


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    """General matrix square root by eigendecomposition (matrix diagonalisable with eigenvalues >= 0)."""
    values, vectors = np.linalg.eig(matrix)
    return (vectors * np.sqrt(values.real.clip(0))) @ np.linalg.inv(vectors)


def _mean_and_var(answer) -> tuple[Tensor, Tensor]:
    if not (isinstance(answer, (tuple, list)) and len(answer) == 2):
        raise WrongAnswer(f"returned {type(answer).__name__}, expected the pair (mean, var)")
    mean, var = canonical(answer)
    try:
        return mean, torch.broadcast_to(var, mean.shape)
    except RuntimeError:
        raise WrongAnswer(f"returned a variance of shape {tuple(var.shape)}, which does not broadcast to the "
                          f"mean's shape {tuple(mean.shape)}") from None  # fmt: skip
