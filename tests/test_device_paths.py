"""The CUDA paths, run on a CPU: no read-back from the device inside a sampling loop, channels_last and bf16.

No GPU has run these tests. What a GPU needs of the code is checked here by other means:
- A sampling loop that reads a value back from the device (``.item()``, ``if tensor:``,
  ``.cpu()``) makes the host wait for the GPU at every step. On the "meta" device a tensor has no
  data, so any such read raises: the loops must run there end to end.
- channels_last must give the same training run as the default layout, and bf16 autocast must
  really run the convolutions in bf16 while the weights stay float32.
"""

from __future__ import annotations

import pytest
import torch

from diffusion_lesson import training
from diffusion_lesson.data import LabeledImages
from diffusion_lesson.guidance import Guided
from diffusion_lesson.losses import DiffusionObjective
from diffusion_lesson.prompts import all_captions
from diffusion_lesson.samplers import sample_ddim, sample_ddpm
from diffusion_lesson.schedules import make_schedule
from diffusion_lesson.text import VOCABULARY, Tokenizer
from diffusion_lesson.training import TrainConfig, start_training, train, train_step
from diffusion_lesson.unet import UNet, UNetConfig

META = torch.device("meta")
SAMPLERS = {
    "ddim eta 0": lambda model, shape, s, **kw: sample_ddim(model, shape, s, steps=4, **kw),
    "ddim eta 1, x0 clipped": lambda model, shape, s, **kw: sample_ddim(
        model, shape, s, steps=4, eta=1.0, clip_x0=True, **kw
    ),  # fmt: skip
    "ddpm": lambda model, shape, s, **kw: sample_ddpm(model, shape, s, **kw),
    "ddpm posterior, x0 clipped": lambda model, shape, s, **kw: sample_ddpm(
        model, shape, s, variance="posterior", clip_x0=True, **kw
    ),  # fmt: skip
}


def _tiny(**changes) -> UNet:
    return UNet(UNetConfig(base_channels=8, norm_groups=4, **changes))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sampling_loops_never_read_back_from_the_device(sampler):
    schedule = make_schedule(T=20).to(META)
    model = _tiny().to(META).eval()
    x0 = SAMPLERS[sampler](model, (3, 1, 28, 28), schedule, device=META, batch_size=2).x0
    assert x0.device == META and x0.shape == (3, 1, 28, 28)


@pytest.mark.parametrize("condition", ["class", "prompt"])
def test_guided_sampling_never_reads_back_from_the_device(condition):
    schedule = make_schedule(T=20).to(META)
    if condition == "class":
        model, labels = _tiny(num_classes=10), torch.tensor([3, 7, 1])
    else:
        model = _tiny(in_channels=4, image_size=7, patch_size=1, vocabulary=VOCABULARY)
        labels = Tokenizer(VOCABULARY, model.config.max_tokens).encode(all_captions()[:3])
    guided = Guided(model.to(META).eval(), scale=2.0)
    shape = (3, model.config.in_channels, model.config.image_size, model.config.image_size)
    x0 = sample_ddim(guided, shape, schedule, steps=4, labels=labels, device=META).x0
    assert x0.device == META


def test_the_meta_check_catches_a_read_back():
    """The tests above can fail: a model that asks the device for a number is caught."""

    def reads_back(xt, t, labels):
        return xt * 0 if float(xt.abs().max()) > 1e9 else xt

    # torch 2.2 says "Meta tensors" (a NotImplementedError, itself a RuntimeError), later ones "meta tensor"
    with pytest.raises(RuntimeError, match="(?i)meta"):
        sample_ddim(reads_back, (2, 1, 28, 28), make_schedule(T=20).to(META), steps=2, device=META)


def _run(images: torch.Tensor, **flags) -> training.TrainState:
    torch.manual_seed(0)
    model = _tiny()
    config = TrainConfig(steps=3, batch_size=8, lr=1e-3, warmup_steps=0, seed=0, **flags)
    state = start_training(model, DiffusionObjective(make_schedule()), config, device="cpu")
    return train(state, LabeledImages(images, torch.zeros(len(images), dtype=torch.long)), progress=False)


def _images(n: int = 32) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_channels_last_trains_like_the_default_layout():
    plain, last = _run(_images()), _run(_images(), channels_last=True)
    conv = next(m for m in last.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not next(m for m in plain.model.modules() if isinstance(m, torch.nn.Conv2d)).weight.is_contiguous(
        memory_format=torch.channels_last
    )
    assert last.losses == pytest.approx(plain.losses, rel=1e-4)
    for name, value in plain.model.state_dict().items():
        torch.testing.assert_close(last.model.state_dict()[name], value, rtol=1e-3, atol=1e-5, msg=name)


def test_bf16_autocast_runs_convolutions_in_bf16_and_keeps_float32_weights():
    seen = []
    state = _run(_images(), bf16_autocast=True)
    conv = next(m for m in state.model.modules() if isinstance(m, torch.nn.Conv2d))
    hook = conv.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    train_step(state, LabeledImages(_images(), torch.zeros(32, dtype=torch.long)))
    hook.remove()
    assert seen == [torch.bfloat16]
    assert all(p.dtype == torch.float32 for p in state.model.parameters())
    assert all(torch.isfinite(torch.tensor(state.losses)))
    plain = _run(_images())
    assert state.losses == pytest.approx(plain.losses, rel=0.05)  # bf16 keeps 8 bits of mantissa


def test_autocast_is_not_entered_when_it_is_off(monkeypatch):
    """torch before 2.5 raises for torch.autocast("mps", enabled=False): the default path must not enter it."""

    def refuses(*args, **kwargs):
        raise RuntimeError("User specified an unsupported autocast device_type 'mps'")

    monkeypatch.setattr(torch, "autocast", refuses)
    assert len(_run(_images()).losses) == 3
    with pytest.raises(RuntimeError, match="unsupported autocast"):
        _run(_images(), bf16_autocast=True)
