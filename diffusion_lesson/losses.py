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
from diffusion_lesson.unet import null_condition


def simple_loss(
    model: nn.Module,
    x0: Tensor,
    schedule: Schedule,
    generator: torch.Generator | None = None,
    labels: Tensor | None = None,
    label_dropout: float = 0.0,
) -> Tensor:
    """L_simple = E ||eps - eps_theta(x_t, t)||^2 with t uniform in [0, T), DDPM eq. 14 / Algorithm 1.

    x0: (B, C, H, W); labels: (B,) long, (B, L) prompt tokens, or None. With label_dropout > 0 each
    label (or whole prompt) is replaced by the model's "no condition" with that probability: the "no
    class" index num_classes, or the empty prompt (``unet.null_condition``; classifier-free guidance).
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
        drop = torch.rand(B, generator=generator, device=x0.device) < label_dropout
        drop = drop.reshape(B, *[1] * (labels.ndim - 1))  # (B,) or (B, 1) for prompt tokens
        labels = torch.where(drop, null_condition(model, B, x0.device), labels)
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
        cfg = model.config
        condition = batch.labels if cfg.num_classes is not None else None
        if cfg.vocabulary is not None:  # the labels are caption codes: a fresh caption per image
            captions = random_captions(batch.labels, generator)
            condition = model.tokenizer.encode(captions).to(batch.labels.device)  # (B, max_tokens)
        errors = eps_errors(model, batch.images, self.schedule, generator, condition, self.label_dropout)
        if self.min_snr_gamma is None:
            return errors.mse.mean()
        return (min_snr_weight(errors.t, self.schedule, self.min_snr_gamma) * errors.mse).mean()

    def to_dict(self) -> dict:
        """The settings beside the schedule (which checkpoints store on their own)."""
        return {"label_dropout": self.label_dropout, "min_snr_gamma": self.min_snr_gamma}
