"""Classifier-free guidance (Ho & Salimans 2022), and how to measure what it buys (notebook 07).

Bayes' rule on scores, for a condition y (a digit, a prompt):

    grad log p(x | y) = grad log p(x) + grad log p(y | x)

Guidance raises the second term to a power w:  p_w(x | y) ∝ p(x) p(y | x)^w, whose score is

    grad log p(x) + w grad log p(y | x) = (1 - w) grad log p(x) + w grad log p(x | y)

and since eps_theta(x_t, t) = -sqrt(1 - alpha_bar_t) * score, the same mix holds for the noise:

    eps_guided = eps_uncond + w (eps_cond - eps_uncond)              (Ho & Salimans 2022, eq. 6)

w = 0 is the unconditional model, w = 1 the conditional one, w > 1 pushes each sample towards
digits the condition fits best: more often the asked digit, less variety. One network gives both
predictions (the condition is dropped to "none" for a fraction of training steps), and both come
from one batched forward pass of 2B samples per step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from diffusion_lesson.classifier import MnistClassifier
from diffusion_lesson.unet import null_condition

# The course's default scale: the smallest of the measured scales (0, 1, 2, 3, 5, 8) at which both shipped
# models draw the asked digit at least 98% of the time; FID rises beyond it (notebook 07, the manifest).
DEFAULT_GUIDANCE = 2.0


def guide(eps_cond: Tensor, eps_uncond: Tensor, scale: float) -> Tensor:
    """eps_uncond + scale (eps_cond - eps_uncond), Ho & Salimans 2022, eq. 6; any shape, both alike.

    Computed as lerp(eps_uncond, eps_cond, scale), which gives exactly eps_uncond at 0 and exactly
    eps_cond at 1 (the plain formula can miss eps_cond by a rounding error).
    """
    if not scale >= 0:
        raise ValueError(f"the guidance scale must be >= 0, got {scale}")
    return torch.lerp(eps_uncond, eps_cond, scale)


def guided_eps(model: nn.Module, xt: Tensor, t: Tensor, condition: Tensor, scale: float) -> Tensor:
    """Guided noise prediction, both predictions from one forward pass over 2B samples.

    xt: (B, C, H, W); t: (B,) long; condition: (B,) labels or (B, L) tokens -> (B, C, H, W).
    """
    null = null_condition(model, xt.shape[0], xt.device)
    eps = model(torch.cat([xt, xt]), torch.cat([t, t]), torch.cat([condition, null]))  # (2B, C, H, W)
    eps_cond, eps_uncond = eps.chunk(2)
    return guide(eps_cond, eps_uncond, scale)


class Guided:
    """A conditional model with guidance, usable wherever a model is: ``Guided(model, 3.0)(xt, t, condition)``."""

    def __init__(self, model: nn.Module, scale: float) -> None:
        null_condition(model, 1, "cpu")  # refuses an unconditional model now, not at the first step
        if not scale >= 0:
            raise ValueError(f"the guidance scale must be >= 0, got {scale}")
        self.model, self.scale, self.config = model, scale, model.config

    def __call__(self, xt: Tensor, t: Tensor, condition: Tensor | None) -> Tensor:
        if condition is None:
            raise ValueError("a guided model needs a condition (labels or prompt tokens) for every sample")
        return guided_eps(self.model, xt, t, condition, self.scale)


class CountingModel:
    """Wraps a model and counts its forward passes and the samples they carried (the cost of guidance)."""

    def __init__(self, model: Callable[..., Tensor]) -> None:
        self.model, self.config = model, model.config
        self.calls, self.samples = 0, 0

    def __call__(self, xt: Tensor, t: Tensor, condition: Tensor | None = None) -> Tensor:
        self.calls, self.samples = self.calls + 1, self.samples + xt.shape[0]
        return self.model(xt, t, condition)


@torch.no_grad()
def classify(classifier: MnistClassifier, images: Tensor, batch_size: int = 1000) -> Tensor:
    """The classifier's digit for each image: images (N, 1, 28, 28) in [-1, 1] -> (N,) long."""
    device = next(classifier.parameters()).device
    return torch.cat([classifier(images[i : i + batch_size].to(device)).argmax(1).cpu()
                      for i in range(0, len(images), batch_size)])  # fmt: skip


def per_digit_accuracy(predicted: Tensor, asked: Tensor) -> Tensor:
    """Fraction of the samples asked to be digit d that the classifier reads as d, for d = 0..9: (10,).

    NaN for a digit that was never asked for.
    """
    hits = (predicted == asked).float()
    counts = torch.bincount(asked, minlength=10).float()
    return torch.bincount(asked, weights=hits, minlength=10) / counts.where(counts > 0, torch.nan)
