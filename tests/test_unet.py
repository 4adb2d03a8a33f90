"""The U-Net: output shapes on images and latents, class conditioning, config round trips, bad inputs."""

import pytest
import torch

from diffusion_lesson.unet import UNet, UNetConfig, timestep_embedding

SMALL = {"base_channels": 8, "norm_groups": 4}  # narrow models keep these tests fast

CASES = [
    # (name, config, input shape (C, H, W))
    ("mnist default", UNetConfig(), (1, 28, 28)),
    ("mnist no stem", UNetConfig(patch_size=1, channel_mults=(1, 2, 2), **SMALL), (1, 28, 28)),
    ("mnist two blocks", UNetConfig(blocks_per_level=2, attention=False, **SMALL), (1, 28, 28)),
    ("latent 4x7x7", UNetConfig(in_channels=4, image_size=7, patch_size=1, **SMALL), (4, 7, 7)),
    (
        "latent 4x7x7 three levels",
        UNetConfig(in_channels=4, image_size=7, patch_size=1, channel_mults=(1, 2, 2)),
        (4, 7, 7),
    ),
    ("latent 4x8x8", UNetConfig(in_channels=4, image_size=8, patch_size=1, **SMALL), (4, 8, 8)),
    (
        "latent 4x8x8 stem",
        UNetConfig(in_channels=4, image_size=8, patch_size=2, channel_mults=(1,), **SMALL),
        (4, 8, 8),
    ),
]


def _randomize(model: UNet) -> UNet:
    """Zero-initialised output layers make eps_pred == 0 at first; random weights test the real wiring."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    return model


@pytest.mark.parametrize("name, config, shape", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("num_classes", [None, 10])
def test_output_has_the_shape_of_the_input(name, config, shape, num_classes):
    config = UNetConfig.from_dict({**config.to_dict(), "num_classes": num_classes})
    model = _randomize(UNet(config))
    xt = torch.randn(3, *shape)
    t = torch.tensor([0, 500, 999])
    labels = torch.tensor([0, 9, 10]) if num_classes else None
    eps_pred = model(xt, t, labels)
    assert eps_pred.shape == xt.shape
    assert torch.isfinite(eps_pred).all()
    assert eps_pred.abs().sum() > 0


def test_fresh_model_predicts_zero_and_gradients_reach_every_parameter():
    """The zero-initialised output conv gives eps_pred = 0 at first (loss starts at E[eps^2] = 1)."""
    model = UNet(UNetConfig(num_classes=10, **SMALL))
    xt, t, labels = torch.randn(4, 1, 28, 28), torch.tensor([1, 2, 3, 4]), torch.tensor([0, 1, 2, 10])
    assert model(xt, t, labels).abs().max() == 0
    _randomize(model)
    model(xt, t, labels).square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert no_grad == []


def test_time_and_label_change_the_output():
    model = _randomize(UNet(UNetConfig(num_classes=10, **SMALL)))
    xt = torch.randn(1, 1, 28, 28).expand(2, -1, -1, -1)
    by_time = model(xt, torch.tensor([10, 900]), torch.tensor([3, 3]))
    by_label = model(xt, torch.tensor([10, 10]), torch.tensor([3, 7]))
    assert not torch.allclose(by_time[0], by_time[1])
    assert not torch.allclose(by_label[0], by_label[1])


def test_no_labels_means_the_no_class_entry():
    model = _randomize(UNet(UNetConfig(num_classes=10, **SMALL)))
    xt, t = torch.randn(2, 1, 28, 28), torch.tensor([5, 50])
    torch.testing.assert_close(model(xt, t), model(xt, t, torch.tensor([10, 10])), rtol=0, atol=0)


def test_batch_items_are_independent():
    """GroupNorm normalises per sample, so one image's prediction does not depend on its batch mates."""
    model = _randomize(UNet(UNetConfig(**SMALL))).eval()
    xt, t = torch.randn(4, 1, 28, 28), torch.tensor([3, 30, 300, 999])
    together = model(xt, t)
    alone = torch.cat([model(xt[i : i + 1], t[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_timestep_embedding_values():
    emb = timestep_embedding(torch.tensor([0, 7]), dim=6)  # frequencies 1, 10000^(-1/3), 10000^(-2/3)
    freqs = torch.tensor([1.0, 10_000 ** (-1 / 3), 10_000 ** (-2 / 3)])
    expected = torch.stack([torch.cat([torch.cos(s * freqs), torch.sin(s * freqs)]) for s in (0.0, 7.0)])
    torch.testing.assert_close(emb, expected)
    assert timestep_embedding(torch.tensor([3]), dim=5).shape == (1, 5)


def test_config_round_trip_through_a_plain_dict():
    config = UNetConfig(channel_mults=(1, 2, 3), num_classes=10, attention=False)
    d = config.to_dict()
    assert d["channel_mults"] == [1, 2, 3]
    assert all(isinstance(v, (int, bool, list, type(None))) for v in d.values())
    assert UNetConfig.from_dict(d) == config
    with pytest.raises(ValueError, match="unknown UNetConfig keys \\['base_chanels'\\]"):
        UNetConfig.from_dict({**d, "base_chanels": 16})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image_size": 28, "patch_size": 3}, "patch_size 3 must divide image_size 28"),
        ({"channel_mults": ()}, "channel_mults must be a non-empty"),
        ({"base_channels": 12, "norm_groups": 8}, "norm_groups 8 must divide"),
        ({"num_classes": 0}, "num_classes must be None or >= 1"),
        ({"blocks_per_level": 0}, "blocks_per_level must be >= 1"),
    ],
)
def test_bad_configs_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UNetConfig(**kwargs)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((2, 1, 32, 32), r"xt must have shape \(B, 1, 28, 28\) for this UNetConfig, got \(2, 1, 32, 32\)"),
        ((2, 3, 28, 28), r"xt must have shape \(B, 1, 28, 28\)"),
        ((1, 28, 28), r"xt must have shape \(B, 1, 28, 28\)"),
    ],
)
def test_input_shapes_that_do_not_match_the_config(shape, message):
    model = UNet(UNetConfig(**SMALL))
    with pytest.raises(ValueError, match=message):
        model(torch.randn(shape), torch.zeros(shape[0], dtype=torch.long))


def test_bad_timesteps():
    model, xt = UNet(UNetConfig(**SMALL)), torch.randn(2, 1, 28, 28)
    with pytest.raises(ValueError, match=r"t must be a \(B,\) = \(2,\) integer tensor, got \(3,\)"):
        model(xt, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer tensor"):
        model(xt, torch.zeros(2))


def test_bad_labels():
    conditional = UNet(UNetConfig(num_classes=10, **SMALL))
    xt, t = torch.randn(2, 1, 28, 28), torch.tensor([1, 2])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\] \(10 = no class\), got values from 3 to 11"):
        conditional(xt, t, torch.tensor([3, 11]))
    with pytest.raises(ValueError, match="got values from -1"):
        conditional(xt, t, torch.tensor([-1, 2]))
    with pytest.raises(ValueError, match=r"labels must be a \(2,\) long tensor"):
        conditional(xt, t, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="labels were given to an unconditional model"):
        UNet(UNetConfig(**SMALL))(xt, t, torch.tensor([1, 2]))
