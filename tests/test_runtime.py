"""Device choice, seeding and quick mode."""

import pytest
import torch

from diffusion_lesson.runtime import (
    DEVICE_ENV_VAR,
    QUICK_ENV_VAR,
    bf16_pays,
    get_device,
    make_generator,
    quick_mode,
    seed_everything,
)


def test_default_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.delenv(DEVICE_ENV_VAR, raising=False)
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert get_device().type == expected


def test_override_by_argument_and_environment(monkeypatch):
    assert get_device("cpu") == torch.device("cpu")
    monkeypatch.setenv(DEVICE_ENV_VAR, "cpu")
    assert get_device() == torch.device("cpu")


def test_bad_device_names(monkeypatch):
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        get_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            get_device("cuda")


def test_seed_everything_reproduces():
    seed_everything(3)
    a = torch.rand(4)
    generator = seed_everything(3)
    assert torch.equal(a, torch.rand(4))
    assert torch.equal(torch.rand(2, generator=generator), torch.rand(2, generator=make_generator(3)))


@pytest.mark.parametrize(("value", "expected"), [("", False), ("0", False), ("1", True), ("true", True), ("No", False)])
def test_quick_mode(monkeypatch, value, expected):
    monkeypatch.setenv(QUICK_ENV_VAR, value)
    assert quick_mode() is expected


def test_quick_mode_rejects_unknown_values(monkeypatch):
    monkeypatch.setenv(QUICK_ENV_VAR, "fast")
    with pytest.raises(ValueError, match="DIFFUSION_LESSON_QUICK='fast'"):
        quick_mode()


def test_bf16_pays_only_on_a_cpu_with_bf16_instructions(monkeypatch):
    assert not bf16_pays("cuda") and not bf16_pays("mps")  # not measured there: off
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert bf16_pays("cpu")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert not bf16_pays("cpu")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")  # a torch without the (private) query: off
    assert not bf16_pays("cpu")
