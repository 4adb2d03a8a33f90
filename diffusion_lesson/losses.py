"""DDPM's training objective: the simple loss of Algorithm 1 (taught in notebook 03).

Algorithm 1 of DDPM, one step:  x0 ~ data,  t ~ Uniform{0, ..., T-1},  eps ~ N(0, I),
    take a gradient step on  || eps - eps_theta(sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps, t) ||^2

``DiffusionObjective`` wraps it for the training loop (``training.train``) with its settings: the
noise schedule it trains for and the label dropout of classifier-free guidance (chapter 07). For a
text-conditioned model the batch's labels are caption codes (``prompts.caption_codes``), turned into
a freshly drawn caption per image at every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from diffusion_lesson.data import LabeledImages
from diffusion_lesson.forward import q_sample
from diffusion_lesson.prompts import random_captions
from diffusion_lesson.runtime import randn_like
from diffusion_lesson.schedules import Schedule


def simple_loss(
    model: nn.Module,
    x0: Tensor,
    schedule: Schedule,
    generator: torch.Generator | None = None,
    labels: Tensor | None = None,
    label_dropout: float = 0.0,
) -> Tensor:
    """L_simple = E ||eps - eps_theta(x_t, t)||^2 with t uniform in [0, T), DDPM eq. 14 / Algorithm 1.

    x0: (B, C, H, W); labels: (B,) long or None. With label_dropout > 0 each label is replaced by
    the model's "no class" index (num_classes) with that probability (classifier-free guidance).
    Returns a scalar: the mean over the batch and every pixel.
    """
    return eps_errors(model, x0, schedule, generator, labels, label_dropout).mse.mean()


class EpsErrors(NamedTuple):
    """Per-sample squared error of the predicted noise, mse (B,), at the steps t (B,) drawn for them."""

    mse: Tensor
    t: Tensor


def eps_errors(
    model: nn.Module,
    x0: Tensor,
    schedule: Schedule,
    generator: torch.Generator | None = None,
    labels: Tensor | None = None,
    label_dropout: float = 0.0,
) -> EpsErrors:
    """Algorithm 1 up to the loss: draw t and eps, form x_t (eq. 4), return each sample's mean (eps - eps_pred)^2."""
    B = x0.shape[0]
    t = torch.randint(0, schedule.T, (B,), generator=generator, device=x0.device)  # (B,)
    eps = randn_like(x0, generator)
    xt = q_sample(x0, t, schedule, noise=eps)
    if labels is not None and label_dropout > 0:
        num_classes = model.config.num_classes
        drop = torch.rand(B, generator=generator, device=x0.device) < label_dropout
        labels = torch.where(drop, torch.full_like(labels, num_classes), labels)
    eps_pred = model(xt, t, labels)
    return EpsErrors((eps_pred.float() - eps).square().flatten(1).mean(1), t)


def min_snr_weight(t: Tensor, schedule: Schedule, gamma: float = 5.0) -> Tensor:
    """min(SNR_t, gamma) / SNR_t, the Min-SNR-gamma weighting for eps prediction (Hang et al. 2023, eq. 8).

    An eps error e at step t is an x0 error e / sqrt(SNR_t); weighting the eps loss so is weighting
    the x0 loss by min(SNR_t, gamma): the nearly clean steps (huge SNR, small t), whose noise is
    hard to see and easy to ignore, stop pulling the network away from the steps that shape a digit.
    t: (B,) long -> (B,) float in (0, 1]; 1 wherever SNR_t <= gamma.
    """
    snr = schedule.snr[t]
    return snr.clamp(max=gamma) / snr


@dataclass(frozen=True, eq=False)
class DiffusionObjective:
    """The simple loss for the training loop: ``schedule`` (on the data's device), ``label_dropout``, and
    ``min_snr_gamma`` (None: DDPM's plain average over t; a number: the Min-SNR-gamma weighting).

    Labels reach the model only when it is class-conditional (config.num_classes is set).
    """

    schedule: Schedule
    label_dropout: float = 0.0
    min_snr_gamma: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.label_dropout < 1:
            raise ValueError(f"label_dropout must lie in [0, 1), got {self.label_dropout}")
        if self.min_snr_gamma is not None and not self.min_snr_gamma > 0:
            raise ValueError(f"min_snr_gamma must be None or > 0, got {self.min_snr_gamma}")

    def loss(self, model: nn.Module, batch: LabeledImages, generator: torch.Generator) -> Tensor:
        if model.config.vocabulary is not None:
            tokens = self.prompt_tokens(model, batch.labels, generator)
            errors = eps_errors(model, batch.images, self.schedule, generator, tokens)
        else:
            labels = batch.labels if model.config.num_classes is not None else None
            errors = eps_errors(model, batch.images, self.schedule, generator, labels, self.label_dropout)
        if self.min_snr_gamma is None:
            return errors.mse.mean()
        return (min_snr_weight(errors.t, self.schedule, self.min_snr_gamma) * errors.mse).mean()

    def prompt_tokens(self, model: nn.Module, codes: Tensor, generator: torch.Generator) -> Tensor:
        """A text model's condition: a fresh caption per image (``prompts``), "" with prob label_dropout."""
        captions = random_captions(codes, generator)
        drop = torch.rand(len(captions), generator=generator, device=generator.device) < self.label_dropout
        captions = ["" if d else c for c, d in zip(captions, drop.tolist(), strict=True)]
        return model.tokenizer.encode(captions).to(codes.device)  # (B, max_tokens)

    def to_dict(self) -> dict:
        """The settings beside the schedule (which checkpoints store on their own)."""
        return {"label_dropout": self.label_dropout, "min_snr_gamma": self.min_snr_gamma}
