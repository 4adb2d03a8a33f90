"""Checkpoints: round trip, atomic writes, clear mismatch errors, loading without pickled code."""

import hashlib
import pickle

import pytest
import torch

from diffusion_lesson import checkpoints
from diffusion_lesson.checkpoints import (
    CheckpointMismatchError,
    load_checkpoint,
    load_unet,
    load_weights,
    save_checkpoint,
    sha256_of,
)
from diffusion_lesson.unet import UNet, UNetConfig

CONFIG = UNetConfig(base_channels=8, norm_groups=4, num_classes=10)


def _save(path, model, step=7, **extra):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 1, 28, 28), torch.tensor([1, 2])).square().mean().backward()
    optimizer.step()
    generator = torch.Generator().manual_seed(5)
    torch.randn(3, generator=generator)  # advance it: the saved state is not the seed's
    ema = {k: v + 1 for k, v in model.state_dict().items()}
    save_checkpoint(
        path,
        model=model,
        model_config=model.config.to_dict(),
        schedule_name="cosine",
        T=1000,
        train_config={"steps": 10, "lr": 1e-3},
        step=step,
        ema=ema,
        optimizer=optimizer.state_dict(),
        generator=generator,
        losses=[0.5, 0.25],
        **extra,
    )
    return optimizer, generator, ema


def test_round_trip(tmp_path):
    model = UNet(CONFIG)
    optimizer, generator, ema = _save(tmp_path / "run.pt", model)
    ckpt = load_checkpoint(tmp_path / "run.pt")
    assert UNetConfig.from_dict(ckpt.model_config) == CONFIG
    assert ckpt.schedule == {"name": "cosine", "T": 1000}
    assert ckpt.train_config == {"steps": 10, "lr": 1e-3}
    assert ckpt.step == 7
    for k, v in model.state_dict().items():
        assert torch.equal(ckpt.model[k], v)
        assert torch.equal(ckpt.ema[k], ema[k])
    assert ckpt.generator.dtype == torch.uint8
    assert torch.equal(ckpt.generator, generator.get_state())
    torch.testing.assert_close(ckpt.losses, torch.tensor([0.5, 0.25]))
    restored = torch.optim.AdamW(UNet(CONFIG).parameters(), lr=1e-3)
    restored.load_state_dict(ckpt.optimizer)
    for a, b in zip(restored.state.values(), optimizer.state.values(), strict=True):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])


def test_load_unet_uses_ema_weights_when_asked(tmp_path):
    model = UNet(CONFIG)
    _, _, ema = _save(tmp_path / "run.pt", model)
    with_ema, raw = load_unet(tmp_path / "run.pt"), load_unet(tmp_path / "run.pt", use_ema=False)
    assert not with_ema.training
    for k, v in with_ema.state_dict().items():
        assert torch.equal(v, ema[k])
        assert torch.equal(raw.state_dict()[k], model.state_dict()[k])


def test_interrupted_write_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    _save(path, UNet(CONFIG), step=1)
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")  # some bytes reach the disk, then the process "crashes"
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        _save(path, UNet(CONFIG), step=2)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]  # no temporary file left
    monkeypatch.undo()
    assert load_checkpoint(path).step == 1


def test_loading_never_unpickles_code(tmp_path):
    """A file that would run code when unpickled is refused by weights_only loading."""

    class Evil:
        def __reduce__(self):
            return (print, ("this would run arbitrary code",))

    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "payload": Evil()}, path)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_checkpoint(path)


def test_not_a_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="is not a diffusion-lesson checkpoint of format 1"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")


def test_mismatched_weights_name_the_parameters():
    small = UNet(UNetConfig(base_channels=8, norm_groups=4, num_classes=10))
    other = UNet(UNetConfig(base_channels=16, norm_groups=4, attention=False))
    with pytest.raises(CheckpointMismatchError) as info:
        load_weights(other, small.state_dict())
    message = str(info.value)
    assert "missing" not in message  # an unconditional model lacks nothing the conditional one has
    assert "unexpected (7): attn.norm.bias, attn.norm.weight, attn.out.bias, attn.out.weight" in message
    assert "attn.qkv.weight, label_emb.weight" in message
    assert "different shape" in message and "stem.weight: checkpoint (8, 4, 3, 3) vs model (16, 4, 3, 3)" in message
    with pytest.raises(CheckpointMismatchError, match=r"missing \(1\): label_emb.weight"):
        load_weights(small, {k: v for k, v in small.state_dict().items() if k != "label_emb.weight"})


def test_sha256_of(tmp_path):
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 5000  # larger than one read chunk
    path.write_bytes(data)
    assert sha256_of(path) == hashlib.sha256(data).hexdigest()
    assert sha256_of(path, chunk_size=7) == hashlib.sha256(data).hexdigest()
