"""Digits from any course model in one call: condition, guidance, sampler, decoding (notebook 07, ``sample``).

    generate(loaded, condition_tensor(loaded.model, 8, digit=7), guidance=3.0)  # eight guided 7s
    generate(loaded, condition_tensor(loaded.model, 8, prompt="a thick seven"), guidance=3.0)

A latent model's samples are decoded by the autoencoder it was trained with, so the result is always
pixels (N, 1, 28, 28) in [-1, 1], on the CPU. ``measure_digit_accuracy`` and ``measure_attribute_shift``
are notebook 07's yardsticks: does the model draw the digit, and the attribute, it was asked for?
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from diffusion_lesson.guidance import Guided, classify, per_digit_accuracy
from diffusion_lesson.latent import decode_states
from diffusion_lesson.models import LoadedModel
from diffusion_lesson.prompts import DIGIT_WORDS, slant, stroke_thickness
from diffusion_lesson.runtime import make_generator
from diffusion_lesson.samplers import sample_ddim, sample_ddpm


def condition_tensor(model: nn.Module, n: int, digit: int | Tensor | None = None, prompt: str | None = None) -> Tensor:
    """What a conditional model reads for n samples: labels (n,) from ``digit`` (an int or (n,) tensor),
    or tokens (n, max_tokens) from ``prompt``. Refuses a condition the model cannot read, naming what it can."""
    cfg = model.config
    if prompt is not None:
        if cfg.vocabulary is None:
            raise ValueError(f"this model does not read prompts ({_what_it_reads(cfg)})")
        return model.tokenizer.encode([prompt] * n)
    if digit is None:
        raise ValueError("give a digit or a prompt")
    if cfg.num_classes is None:
        raise ValueError(f"this model does not take a digit ({_what_it_reads(cfg)})")
    digits = torch.as_tensor(digit, dtype=torch.long).expand(n).clone()
    if digits.min() < 0 or digits.max() >= cfg.num_classes:
        bad = digits[(digits < 0) | (digits >= cfg.num_classes)][0].item()
        raise ValueError(f"a digit must lie in 0-{cfg.num_classes - 1}, got {bad}")
    return digits


def _what_it_reads(cfg) -> str:
    if cfg.vocabulary is not None:
        return "it is text-conditioned: give it a prompt"
    if cfg.num_classes is not None:
        return f"it is class-conditional: give it a digit 0-{cfg.num_classes - 1}"
    return "it is unconditional: it takes neither a digit nor a prompt"


def generate(
    loaded: LoadedModel,
    condition: Tensor | None = None,
    guidance: float | None = None,
    n: int | None = None,
    sampler: str = "ddim",
    steps: int = 50,
    eta: float = 0.0,
    seed: int = 0,
    device: torch.device | str = "cpu",
    batch_size: int = 500,
    progress: bool = False,
) -> Tensor:
    """Samples (N, 1, 28, 28) in [-1, 1] on the CPU; N = len(condition), else ``n`` unconditional ones.

    guidance: None samples the model as it is (conditional when given a condition); a number w
    samples eps_uncond + w (eps_cond - eps_uncond). Same seed, same digits (on one device).
    """
    cfg = loaded.model.config
    n = len(condition) if condition is not None else n
    if n is None:
        raise ValueError("give a condition, or n for unconditional samples")
    model = loaded.model if guidance is None else Guided(loaded.model, guidance)
    options = {"generator": make_generator(seed, device), "device": device, "batch_size": batch_size,
               "progress": progress, "labels": condition}  # fmt: skip
    shape = (n, cfg.in_channels, cfg.image_size, cfg.image_size)
    if sampler == "ddpm":
        x0 = sample_ddpm(model, shape, loaded.schedule, **options).x0
    elif sampler == "ddim":
        x0 = sample_ddim(model, shape, loaded.schedule, steps=steps, eta=eta, **options).x0
    else:
        raise ValueError(f"unknown sampler {sampler!r}; choose 'ddpm' or 'ddim'")
    if loaded.autoencoder is not None:
        x0 = decode_states(loaded.autoencoder, x0, batch_size)
    return x0.cpu()


def digit_conditions(loaded: LoadedModel, per_digit: int, words: tuple[str, ...] = DIGIT_WORDS) -> Tensor:
    """per_digit samples of each digit 0-9, digit-major: labels (10 per_digit,), or the prompts ``words[d]``."""
    digits = torch.arange(10).repeat_interleave(per_digit)
    if loaded.model.config.vocabulary is not None:
        return loaded.model.tokenizer.encode([words[d] for d in digits.tolist()])
    return condition_tensor(loaded.model, len(digits), digits)


class DigitAccuracy(NamedTuple):
    """How often the classifier reads the asked digit: overall, per digit (10,), and the samples (N, 1, 28, 28)."""

    overall: float
    per_digit: Tensor
    images: Tensor


def measure_digit_accuracy(
    loaded: LoadedModel, classifier: nn.Module, scale: float, per_digit: int = 100, **generate_options
) -> DigitAccuracy:
    """Sample per_digit of each digit at guidance ``scale`` (a prompt naming only the digit for a text model)."""
    asked = torch.arange(10).repeat_interleave(per_digit)
    images = generate(loaded, digit_conditions(loaded, per_digit), scale, **generate_options)
    per_digit_hits = per_digit_accuracy(classify(classifier, images), asked)
    return DigitAccuracy(per_digit_hits.mean().item(), per_digit_hits, images)


class AttributeShift(NamedTuple):
    """Per digit (10,): mean thickness of "a thick D" minus "a thin D" samples (pixels), and mean slant of
    "D, slanted right" minus "D, slanted left" samples. Positive everywhere: the words do what they say."""

    thickness: Tensor
    slant: Tensor


def measure_attribute_shift(
    loaded: LoadedModel, scale: float, per_prompt: int = 50, **generate_options
) -> AttributeShift:
    """For each digit, sample the four attribute prompts at guidance ``scale`` and compare the measured attribute."""
    prompts = {"thick": "a thick {}", "thin": "a thin {}", "right": "{}, slanted right", "left": "{}, slanted left"}
    measured = {}
    for key, template in prompts.items():
        texts = [template.format(DIGIT_WORDS[d]) for d in range(10) for _ in range(per_prompt)]
        images = generate(loaded, loaded.model.tokenizer.encode(texts), scale, **generate_options)
        values = stroke_thickness(images) if key in ("thick", "thin") else slant(images)
        measured[key] = values.reshape(10, per_prompt).mean(1)
    return AttributeShift(measured["thick"] - measured["thin"], measured["right"] - measured["left"])
