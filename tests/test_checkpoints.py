"""Checkpoints: round trip, atomic writes, clear mismatch errors, loading without pickled code."""

import hashlib
import os
import pickle
import signal
import sys
from unittest import mock

import pytest
import torch

from diffusion_lesson import checkpoints
from diffusion_lesson.checkpoints import (
    CheckpointError,
    CheckpointMismatchError,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    sha256_of,
)
from diffusion_lesson.interrupts import stop_on_sigterm
from diffusion_lesson.models import load_model
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
        kind="unet",
        model=model,
        model_config=model.config.to_dict(),
        schedule={"name": "cosine", "T": 1000},
        objective={"label_dropout": 0.1},
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
    assert ckpt.kind == "unet" and ckpt.schedule == {"name": "cosine", "T": 1000}
    assert ckpt.objective == {"label_dropout": 0.1}
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


def test_loading_uses_ema_weights_when_asked(tmp_path):
    model = UNet(CONFIG)
    _, _, ema = _save(tmp_path / "run.pt", model)
    ckpt = load_checkpoint(tmp_path / "run.pt")
    loaded = load_model(tmp_path / "run.pt")
    assert not loaded.model.training and loaded.schedule.name == "cosine" and loaded.kind == "unet"
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, ema[k]) and torch.equal(ckpt.weights()[k], ema[k])
        assert torch.equal(ckpt.weights(use_ema=False)[k], model.state_dict()[k])


def test_a_format_1_file_from_an_earlier_course_version_is_upgraded_on_read(tmp_path):
    model = UNet(CONFIG)
    old = {
        "format": 1, "model_config": CONFIG.to_dict(), "schedule": {"name": "cosine", "T": 1000},
        "train_config": {"steps": 4, "schedule": "cosine", "T": 1000, "label_dropout": 0.2, "lr": 1e-3},
        "step": 4, "model": model.state_dict(), "ema": None, "optimizer": None, "generator": None,
        "losses": torch.zeros(4), "extra": {},
    }  # fmt: skip
    torch.save(old, tmp_path / "old.pt")
    ckpt = load_checkpoint(tmp_path / "old.pt")
    assert ckpt.kind == "unet" and ckpt.objective == {"label_dropout": 0.2}
    assert ckpt.train_config == {"steps": 4, "lr": 1e-3} and ckpt.schedule["name"] == "cosine"


def test_a_checkpoint_of_another_kind_is_refused_by_name(tmp_path):
    _save(tmp_path / "run.pt", UNet(CONFIG))
    with pytest.raises(CheckpointError, match="holds a model of kind 'unet', but this needs autoencoder"):
        load_checkpoint(tmp_path / "run.pt", kinds=("autoencoder",))


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


@pytest.mark.skipif(sys.platform == "win32", reason="signals to oneself are POSIX")
@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_ctrl_c_or_kill_during_a_write_waits_for_the_whole_file(tmp_path, signum):
    """A real signal halfway through torch.save: the checkpoint is finished, then the program stops."""
    path = tmp_path / "run.pt"
    _save(path, UNet(CONFIG), step=1)
    real_save, before = checkpoints.torch.save, signal.getsignal(signal.SIGTERM)

    def save_interrupted_halfway(obj, f, *args, **kwargs):
        class Interrupting:  # the file torch.save writes to; the signal arrives after its first bytes
            def __init__(self):
                self.writes = 0

            def write(self, data):
                self.writes += 1
                if self.writes == 2:
                    os.kill(os.getpid(), getattr(signal, signum))
                return f.write(data)

            def flush(self):
                f.flush()

        real_save(obj, Interrupting(), *args, **kwargs)

    try:
        if signum == "SIGTERM":
            stop_on_sigterm()  # what the command-line tools do
        with mock.patch.object(checkpoints.torch, "save", save_interrupted_halfway), pytest.raises(KeyboardInterrupt):
            _save(path, UNet(CONFIG), step=2)
    finally:
        signal.signal(signal.SIGTERM, before)
    assert load_checkpoint(path).step == 2  # written whole before the interrupt was raised
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]


def test_loading_never_unpickles_code(tmp_path):
    """A file that would run code when unpickled is refused by weights_only loading."""

    class Evil:
        def __reduce__(self):
            return (print, ("this would run arbitrary code",))

    path = tmp_path / "evil.pt"
    torch.save({"format": 2, "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="not a readable diffusion-lesson checkpoint") as info:
        load_checkpoint(path)
    assert isinstance(info.value.__cause__, pickle.UnpicklingError)


@pytest.mark.parametrize("content", [b"", b"garbage, not a checkpoint", b"PK\x03\x04truncated"])
def test_garbage_and_truncated_files_get_a_message_not_a_traceback(tmp_path, content):
    (tmp_path / "bad.pt").write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable diffusion-lesson checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")


def test_a_truncated_real_checkpoint_is_refused(tmp_path):
    _save(tmp_path / "run.pt", UNet(CONFIG))
    data = (tmp_path / "run.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "cut.pt")


def test_not_a_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="is not a diffusion-lesson checkpoint of format 2"):
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
