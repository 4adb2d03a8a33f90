"""Save and load training checkpoints safely (taught in notebook 03, used by every later notebook).

A checkpoint is one ``torch.save`` file holding only tensors, plain dicts, lists, numbers and
strings, so ``torch.load(weights_only=True)`` can read it without running any pickled code:

    format            CHECKPOINT_FORMAT, bumped when the layout changes
    model_config      UNetConfig.to_dict() (AutoencoderConfig.to_dict() for chapter 05's autoencoder)
    schedule          {"name": "linear" | "cosine", "T": 1000}, or None for a model that is not a
                      diffusion model (the autoencoder)
    train_config      TrainConfig.to_dict() (or {} when the model was not trained by the course)
    step              optimizer steps taken so far
    model, ema        state dicts of the network and of its exponential moving average
    optimizer         the optimizer's state dict (AdamW moments, step counts)
    generator         torch.Generator.get_state(): a uint8 tensor, so a resumed run draws the same noise
    losses            (step,) float32 loss history, for the loss curve
    extra             a plain dict of model-specific facts, {} by default (chapter 05: the latent
                      model records the autoencoder it was trained with and its latent scale)

Writes are atomic: the file is written next to its destination under a temporary name, flushed to
disk and renamed over the old one, so a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

CHECKPOINT_FORMAT = 1


class Checkpoint(NamedTuple):
    """The contents of a checkpoint file; see the module docstring for each field."""

    model_config: dict
    schedule: dict | None
    train_config: dict
    step: int
    model: dict[str, Tensor]
    ema: dict[str, Tensor] | None
    optimizer: dict | None
    generator: Tensor | None
    losses: Tensor
    extra: dict


class CheckpointMismatchError(ValueError):
    """A state dict does not fit the model: names the missing, unexpected and mis-shaped parameters."""


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module | dict[str, Tensor],
    model_config: dict,
    schedule_name: str | None = None,
    T: int | None = None,
    train_config: dict | None = None,
    step: int = 0,
    ema: dict[str, Tensor] | None = None,
    optimizer: dict | None = None,
    generator: torch.Generator | Tensor | None = None,
    losses: Tensor | list[float] | None = None,
    extra: dict | None = None,
) -> Path:
    """Write a checkpoint atomically to ``path`` (parent folders are created); returns the path.

    schedule_name and T go together: both for a diffusion model, neither for an autoencoder.
    """
    if (schedule_name is None) != (T is None):
        raise ValueError(f"give schedule_name and T together or not at all, got {schedule_name!r} and {T!r}")
    if isinstance(model, nn.Module):
        model = model.state_dict()
    if isinstance(generator, torch.Generator):
        generator = generator.get_state()
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "model_config": dict(model_config),
        "schedule": {"name": str(schedule_name), "T": int(T)} if schedule_name is not None else None,
        "train_config": dict(train_config or {}),
        "step": int(step),
        "model": _to_cpu(model),
        "ema": _to_cpu(ema) if ema is not None else None,
        "optimizer": _to_cpu(optimizer) if optimizer is not None else None,
        "generator": generator.cpu() if generator is not None else None,
        "losses": torch.as_tensor(losses if losses is not None else [], dtype=torch.float32).cpu(),
        "extra": _to_cpu(dict(extra or {})),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(payload, path)
    return path


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in path's folder, fsync, then os.replace over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows within one file system
    except BaseException:  # also Ctrl-C: never leave a half-written temporary file behind
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint with ``torch.load(weights_only=True)``: no pickled code is ever run."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    raw = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(raw, dict) or raw.get("format") != CHECKPOINT_FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise ValueError(f"{path} is not a diffusion-lesson checkpoint of format {CHECKPOINT_FORMAT} (found {found})")
    fields = {name: raw[name] for name in Checkpoint._fields if name != "extra"}
    return Checkpoint(**fields, extra=dict(raw.get("extra") or {}))  # files before chapter 05 have no extra


def load_weights(model: nn.Module, state_dict: dict[str, Tensor]) -> None:
    """model.load_state_dict(state_dict), first checking that every name and shape fits.

    Raises CheckpointMismatchError listing the missing, unexpected and differently shaped entries.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    reshaped = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or reshaped:
        lines = ["the checkpoint's weights do not fit this model (was it built from a different config?)"]
        for title, names in (("missing", missing), ("unexpected", unexpected), ("different shape", reshaped)):
            if names:
                lines.append(f"  {title} ({len(names)}): " + ", ".join(names[:8]) + (" ..." if len(names) > 8 else ""))
        raise CheckpointMismatchError("\n".join(lines))
    model.load_state_dict(state_dict)


def load_unet(path: str | os.PathLike, device: str | torch.device = "cpu", use_ema: bool = True) -> nn.Module:
    """The U-Net stored in a checkpoint, with its EMA weights when present and ``use_ema``, in eval mode."""
    from diffusion_lesson.unet import UNet, UNetConfig  # here: checkpoints must not need the model to load

    ckpt = load_checkpoint(path)
    model = UNet(UNetConfig.from_dict(ckpt.model_config))
    load_weights(model, ckpt.ema if use_ema and ckpt.ema is not None else ckpt.model)
    return model.to(device).eval()


def sha256_of(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (to check a downloaded or shipped checkpoint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _to_cpu(obj: Any) -> Any:
    """Tensors moved to the CPU inside nested dicts and lists, so a checkpoint loads on any device."""
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
