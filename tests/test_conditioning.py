"""Chapter 07: guidance's limits and cost, cross-attention, the tokenizer, the measured attributes."""

import pytest
import torch

from diffusion_lesson.data import LabeledImages
from diffusion_lesson.guidance import CountingModel, Guided, guide, guided_eps, null_condition, per_digit_accuracy
from diffusion_lesson.losses import DiffusionObjective
from diffusion_lesson.prompts import (
    all_captions,
    caption_codes,
    measure_attributes,
    random_captions,
    slant,
    stroke_thickness,
)
from diffusion_lesson.samplers import sample_ddim, sample_ddpm
from diffusion_lesson.schedules import make_schedule
from diffusion_lesson.text import VOCABULARY, CrossAttention, Tokenizer
from diffusion_lesson.unet import UNet, UNetConfig

SCHEDULE = make_schedule("linear", 20)


def _randomised(model: UNet) -> UNet:
    """Zero-initialised output layers make every fresh model predict 0; give them weights."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def class_model() -> UNet:
    return _randomised(UNet(UNetConfig(base_channels=16, num_classes=10)))


def text_model() -> UNet:
    config = UNetConfig(in_channels=4, image_size=7, patch_size=1, base_channels=16, vocabulary=VOCABULARY)
    return _randomised(UNet(config))


def _inputs(model: UNet, B: int = 3):
    cfg = model.config
    g = torch.Generator().manual_seed(1)
    xt = torch.randn(B, cfg.in_channels, cfg.image_size, cfg.image_size, generator=g)
    t = torch.tensor([0, 7, 19])[:B]
    if cfg.vocabulary is not None:
        return xt, t, model.tokenizer.encode(["a thick seven", "1, slanted left", "thin 4"][:B])
    return xt, t, torch.tensor([7, 1, 4])[:B]


def test_guide_is_eps_uncond_at_0_and_eps_cond_at_1_exactly():
    g = torch.Generator().manual_seed(0)
    eps_cond, eps_uncond = torch.randn(2, 64, 1, 28, 28, generator=g)
    assert torch.equal(guide(eps_cond, eps_uncond, 0.0), eps_uncond)
    assert torch.equal(guide(eps_cond, eps_uncond, 1.0), eps_cond)
    torch.testing.assert_close(guide(eps_cond, eps_uncond, 3.0), eps_uncond + 3 * (eps_cond - eps_uncond))


@pytest.mark.parametrize("make", [class_model, text_model], ids=["class", "text"])
def test_guided_eps_mixes_the_conditional_and_unconditional_predictions_of_the_model(make):
    model = make()
    xt, t, condition = _inputs(model)
    with torch.no_grad():
        cond = model(xt, t, condition)
        uncond = model(xt, t, null_condition(model, len(xt), "cpu"))
        assert not torch.allclose(cond, uncond, atol=1e-3)  # the condition matters, so the test can fail
        # one batched pass of 2B samples rounds differently from two passes of B: equal to float32 precision
        for scale, expected in [(0.0, uncond), (1.0, cond), (3.0, uncond + 3 * (cond - uncond))]:
            torch.testing.assert_close(guided_eps(model, xt, t, condition, scale), expected, rtol=1e-5, atol=1e-5)


def test_the_empty_prompt_and_no_labels_are_the_same_condition():
    model = text_model()
    xt, t, _ = _inputs(model)
    with torch.no_grad():
        assert torch.equal(model(xt, t, None), model(xt, t, model.tokenizer.encode(["", "", ""])))


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_guidance_costs_one_batched_forward_pass_per_step(sampler):
    counter = CountingModel(class_model())
    labels = torch.tensor([3, 5])
    if sampler == "ddim":
        sample_ddim(Guided(counter, 2.0), (2, 1, 28, 28), SCHEDULE, steps=5, labels=labels)
        steps = 5
    else:
        sample_ddpm(Guided(counter, 2.0), (2, 1, 28, 28), SCHEDULE, labels=labels)
        steps = SCHEDULE.T
    assert (counter.calls, counter.samples) == (steps, 2 * 2 * steps)  # one pass of 2B per step


def test_guidance_refuses_an_unconditional_model_and_a_negative_scale():
    with pytest.raises(ValueError, match="needs a conditional model"):
        Guided(UNet(UNetConfig(base_channels=16)), 2.0)
    with pytest.raises(ValueError, match="must be >= 0"):
        Guided(class_model(), -1.0)


def test_cross_attention_with_one_zero_token_is_deterministic_and_shaped_right():
    def run() -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)
        block = CrossAttention(ch=16, context_dim=8, groups=4, heads=4)
        torch.nn.init.normal_(block.out.weight)  # a fresh block is the identity; make it do something
        block.keep_weights = True
        x = torch.randn(2, 16, 5, 5, generator=torch.Generator().manual_seed(1))
        out = block(x, torch.zeros(2, 1, 8), torch.zeros(2, 1, dtype=torch.bool))
        return out, block.weights

    (a, weights), (b, _) = run(), run()
    assert a.shape == (2, 16, 5, 5) and torch.equal(a, b)
    assert weights.shape == (2, 4, 25, 1) and torch.equal(weights, torch.ones_like(weights))  # one token: all on it
    x = torch.randn(2, 16, 5, 5, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(a, x)


def test_cross_attention_gives_padding_no_weight():
    torch.manual_seed(0)
    block = CrossAttention(ch=8, context_dim=8, groups=2, heads=2)
    block.keep_weights = True
    pad = torch.tensor([[False, False, True, True]])
    block(torch.randn(1, 8, 3, 3), torch.randn(1, 4, 8), pad)
    assert torch.equal(block.weights[..., 2:], torch.zeros(1, 2, 9, 2))
    torch.testing.assert_close(block.weights.sum(-1), torch.ones(1, 2, 9))


def test_the_tokenizer_round_trips_every_caption_phrasing():
    tokenizer = Tokenizer()
    captions = all_captions()
    assert len(captions) > 500 and "a thick seven" in captions and "7, slanted right" in captions
    assert "thin 1" in captions and "a thick digit" in captions
    assert tokenizer.decode(tokenizer.encode(captions)) == captions
    assert tokenizer.decode(tokenizer.encode("")) == [""]


@pytest.mark.parametrize(
    ("prompt", "message"),
    [("a purple seven", r"unknown word\(s\) 'purple'.*knows only these words: , a the digit zero"),
     ("eleven", "unknown word"), ("<pad>", "unknown word"), ("a a a a a a a a", "has 8 words; at most 7 fit")],
)  # fmt: skip
def test_the_tokenizer_refuses_unknown_words_and_long_prompts(prompt, message):
    with pytest.raises(ValueError, match=message):
        Tokenizer().encode(prompt)


def _bar(width: int, height: int = 20, shear: float = 0.0) -> torch.Tensor:
    """A vertical bar, width pixels wide, whose top leans right by ``shear`` pixels per row: (1, 1, 28, 28)."""
    image = -torch.ones(1, 1, 28, 28)
    for row in range(4, 4 + height):
        left = 12 + round(shear * (4 + height - 1 - row))
        image[0, 0, row, left : left + width] = 1
    return image


def test_stroke_thickness_is_the_width_of_a_bar():
    widths = torch.cat([stroke_thickness(_bar(w)) for w in (2, 3, 4, 5)])
    assert torch.all(widths[1:] > widths[:-1])
    # a w x 20 bar: area 20 w; its 3x3 erosion keeps (w - 2) x 18, so the boundary is 20 w - 18 (w - 2)
    expected = torch.tensor([2 * 20 * w / (20 * w - 18 * (w - 2)) for w in (2, 3, 4, 5)])
    torch.testing.assert_close(widths, expected)


def test_slant_is_the_shear_of_the_ink():
    assert slant(_bar(3)).item() == pytest.approx(0.0, abs=1e-6)
    assert slant(_bar(3, shear=0.25)).item() == pytest.approx(0.25, abs=0.03)  # rounding to whole pixels
    assert slant(_bar(3, shear=-0.25)).item() == pytest.approx(-0.25, abs=0.03)


def test_attribute_buckets_split_each_digit_in_thirds_and_codes_pack_them():
    g = torch.Generator().manual_seed(0)
    images = torch.cat([_bar(1 + i // 10, shear=(i % 7 - 3) / 10) for i in range(60)])  # widths 1-6 per digit
    labels = torch.arange(60) % 10
    attributes = measure_attributes(images, labels)
    for d in range(10):  # six bars per digit, of six different widths: two per third
        assert torch.equal(
            torch.bincount(attributes.thickness_bucket[labels == d], minlength=3), torch.tensor([2, 2, 2])
        )
    codes = caption_codes(labels, attributes)
    assert torch.equal(codes % 10, labels) and torch.equal(codes // 30, attributes.slant_bucket)
    captions = random_captions(codes, g)
    assert all(isinstance(c, str) for c in captions) and Tokenizer().encode(captions).shape == (60, 8)


class _Spy:
    """A model that keeps the conditions it was given."""

    def __init__(self, model: UNet) -> None:
        self.model, self.config, self.tokenizer, self.seen = model, model.config, model.tokenizer, []

    def __call__(self, xt, t, labels):
        self.seen.append(labels)
        return self.model(xt, t, labels)


def test_a_text_model_trains_on_fresh_captions_and_label_dropout_empties_whole_prompts():
    model, n = text_model(), 400
    batch = LabeledImages(torch.randn(n, 4, 7, 7), torch.arange(n) % 90)  # caption codes
    for dropout in (0.0, 0.3):
        spy = _Spy(model)
        with torch.no_grad():
            DiffusionObjective(SCHEDULE, label_dropout=dropout).loss(spy, batch, torch.Generator().manual_seed(0))
        tokens = spy.seen[0]
        assert tokens.shape == (n, 8)
        empty = (tokens == null_condition(model, n, "cpu")).all(1)  # whole rows: <start> alone
        captions = model.tokenizer.decode(tokens[~empty])
        assert set(captions) <= set(all_captions()) and "" not in captions
        if dropout == 0:
            assert not empty.any()
        else:
            assert abs(empty.float().mean().item() - 0.3) < 5 * (0.3 * 0.7 / n) ** 0.5


def test_per_digit_accuracy_counts_hits_per_asked_digit():
    asked = torch.tensor([0, 0, 1, 1, 1, 3])
    predicted = torch.tensor([0, 5, 1, 1, 2, 3])
    accuracy = per_digit_accuracy(predicted, asked)
    torch.testing.assert_close(accuracy[[0, 1, 3]], torch.tensor([0.5, 2 / 3, 1.0]))
    assert torch.isnan(accuracy[2])
