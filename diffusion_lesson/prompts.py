"""Captions for MNIST: each digit's label plus attributes measured on the digit itself (notebook 07).

MNIST has no captions, so the course writes them. Two attributes are measured on every image:

    thickness  stroke width in pixels, 2 * ink area / boundary length   (a bar w pixels wide: about w)
    slant      horizontal shift of the ink per pixel of height, from the ink's second moments
               (> 0: the top leans right; the quantity MNIST's classic deskewing removes)

Each is bucketed into words by the tertiles of its own digit class on the training set (a "thick 1"
is thick for a 1): thickness "thin" / (no word) / "thick", slant "slanted left" / "upright" /
"slanted right". A caption names the digit (as a word or a numeral) and, each with probability 1/2,
its attributes, in one of several phrasings: "a thick seven", "7, slanted right", "thin 1". One in
ten captions leaves the digit out ("a thick digit"), so the words for attributes also learn a
meaning of their own. A digit's caption is drawn afresh at every training step.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
THICKNESS_WORDS = ("thin", "", "thick")  # bucket 0, 1, 2; the middle third gets no word
SLANT_WORDS = ("slanted left", "upright", "slanted right")
# {d}: the digit ("seven" or "7"), {a}: "a " or nothing, {t}: a thickness word, {s}: a slant phrase
PHRASINGS = {
    (False, False): ("{d}", "a {d}", "the digit {d}"),
    (True, False): ("{t} {d}", "a {t} {d}"),
    (False, True): ("{d}, {s}", "a {d}, {s}", "{d} {s}"),
    (True, True): ("{t} {d}, {s}", "a {t} {d}, {s}", "a {t} {d} {s}"),
}
NO_DIGIT_RATE = 0.1
ATTRIBUTE_RATE = 0.5


def stroke_thickness(images: Tensor) -> Tensor:
    """Stroke width in pixels: 2 * area / boundary of the ink (pixels above the mid grey).

    images: (B, 1, H, W) in [-1, 1] -> (B,) float. The boundary is the ink that a 3x3 erosion
    removes; a straight bar w >= 2 pixels wide and L long has area w L and boundary about 2 L.
    """
    ink = (images > 0).float()
    eroded = -F.max_pool2d(-ink, 3, stride=1, padding=1)  # 1 where the whole 3x3 neighbourhood is ink
    area = ink.flatten(1).sum(1)
    boundary = (ink - eroded).flatten(1).sum(1)
    return 2 * area / boundary.clamp(min=1)


def slant(images: Tensor) -> Tensor:
    """Shear of the ink: cov(x, up) / var(up), weighted by ink intensity (MNIST's deskewing moment).

    images: (B, 1, H, W) in [-1, 1] -> (B,) float; 0.5 means the top of the digit sits half a pixel
    further right for every pixel of height. ``up`` is the row counted upwards, so > 0 leans right.
    """
    ink = ((images[:, 0] + 1) / 2).clamp(0, 1)  # (B, H, W) in [0, 1]
    H, W = ink.shape[-2:]
    up = -torch.arange(H, dtype=ink.dtype, device=ink.device)[:, None].expand(H, W)
    x = torch.arange(W, dtype=ink.dtype, device=ink.device)[None, :].expand(H, W)
    mass = ink.flatten(1).sum(1).clamp(min=1e-6)  # (B,)

    def mean(v: Tensor) -> Tensor:
        return (ink * v).flatten(1).sum(1) / mass

    up_c = up - mean(up)[:, None, None]
    x_c = x - mean(x)[:, None, None]
    return mean(x_c * up_c) / mean(up_c * up_c).clamp(min=1e-6)


class Attributes(NamedTuple):
    """Per image: thickness (B,) in pixels, slant (B,), and their buckets (B,) long in {0, 1, 2}."""

    thickness: Tensor
    slant: Tensor
    thickness_bucket: Tensor
    slant_bucket: Tensor


def tertiles(values: Tensor, labels: Tensor) -> Tensor:
    """The 1/3 and 2/3 quantiles of ``values`` within each digit class: (10, 2)."""
    return torch.stack([torch.quantile(values[labels == d], torch.tensor([1 / 3, 2 / 3])) for d in range(10)])


def measure_attributes(images: Tensor, labels: Tensor, cuts: tuple[Tensor, Tensor] | None = None) -> Attributes:
    """Thickness and slant of each digit, bucketed by its class's tertiles (from these images, or ``cuts``).

    images: (N, 1, 28, 28) in [-1, 1]; labels: (N,) long. cuts: (thickness (10, 2), slant (10, 2)).
    """
    images, labels = images.cpu(), labels.cpu()
    thick = torch.cat([stroke_thickness(images[i : i + 5000]) for i in range(0, len(images), 5000)])
    lean = torch.cat([slant(images[i : i + 5000]) for i in range(0, len(images), 5000)])
    thick_cuts, lean_cuts = cuts if cuts is not None else (tertiles(thick, labels), tertiles(lean, labels))

    def bucket(v: Tensor, c: Tensor) -> Tensor:
        return (v > c[labels, 0]).long() + (v > c[labels, 1]).long()

    return Attributes(thick, lean, bucket(thick, thick_cuts), bucket(lean, lean_cuts))


def caption_codes(labels: Tensor, attributes: Attributes) -> Tensor:
    """One long per image packing what its captions may say: digit + 10 thickness + 30 slant, in [0, 90)."""
    return labels.cpu() + 10 * attributes.thickness_bucket + 30 * attributes.slant_bucket


def caption(digit: int | None, thickness: int | None = None, slant_bucket: int | None = None,
            numeral: bool = False, phrasing: int = 0) -> str:  # fmt: skip
    """One caption. digit None: "digit"; thickness/slant_bucket None (or thickness 1): not mentioned."""
    has_t = thickness is not None and THICKNESS_WORDS[thickness] != ""
    has_s = slant_bucket is not None
    templates = PHRASINGS[(has_t, has_s)]
    if digit is None:
        word = "digit"
        templates = tuple(p for p in templates if p.startswith("a "))  # "a thick digit", not "thick digit"
    else:
        word = str(digit) if numeral else DIGIT_WORDS[digit]
    template = templates[phrasing % len(templates)]
    return template.format(d=word, t=THICKNESS_WORDS[thickness] if has_t else "",
                           s=SLANT_WORDS[slant_bucket] if has_s else "")  # fmt: skip


def random_captions(codes: Tensor, generator: torch.Generator) -> list[str]:
    """A freshly drawn caption for each code (see ``caption_codes``); draws come from ``generator``."""
    u = torch.rand((len(codes), 5), generator=generator, device=generator.device).cpu()
    codes = codes.cpu()
    out = []
    for code, (r_digit, r_t, r_s, r_numeral, r_phrase) in zip(codes.tolist(), u.tolist(), strict=True):
        digit, thickness, lean = code % 10, (code // 10) % 3, code // 30
        out.append(
            caption(
                None if r_digit < NO_DIGIT_RATE else digit,
                thickness if r_t < ATTRIBUTE_RATE else None,
                lean if r_s < ATTRIBUTE_RATE else None,
                numeral=r_numeral < 0.5,
                phrasing=int(r_phrase * 6),
            )
        )
    return out


def all_captions() -> list[str]:
    """Every caption ``random_captions`` can write (for the tokenizer's round-trip test)."""
    found = set()
    for digit in (None, *range(10)):
        for thickness in (None, 0, 1, 2):
            for lean in (None, 0, 1, 2):
                for numeral in (False, True):
                    for phrasing in range(6):
                        found.add(caption(digit, thickness, lean, numeral, phrasing))
    return sorted(found)
