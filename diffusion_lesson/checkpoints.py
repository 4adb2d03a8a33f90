"""One checkpoint format for every model of the course, saved and loaded safely (notebook 03 on).

A checkpoint is one ``torch.save`` file holding only tensors, plain dicts, lists, numbers and
strings, so ``torch.load(weights_only=True)`` can read it without running any pickled code:

    format            CHECKPOINT_FORMAT, bumped when the layout changes (format 1 files are upgraded on read)
    kind              what the model is: "unet", "latent-unet", "autoencoder" or "classifier" (KINDS)
    model_config      the model's settings as a plain dict (UNetConfig.to_dict(), ...)
    schedule          {"name": "linear" | "cosine", "T": 1000} for a diffusion model, else None
    objective         the loss's own settings, e.g. {"label_dropout": 0.1} or {"kl_weight": 1e-4}
    train_config      TrainConfig.to_dict() (or {} when the model was not trained by the course)
    step              optimizer steps taken so far
    model, ema        state dicts of the network and of its exponential moving average
    optimizer         the optimizer's state dict (AdamW moments, step counts)
    generator         torch.Generator.get_state(): a uint8 tensor, so a resumed run draws the same noise
    losses            (step,) float32 loss history, for the loss curve
    extra             a plain dict of model-specific facts (a latent model: the autoencoder it was
                      trained with and its latent scale; the classifier: its test accuracy)

Writes are atomic: the file is written next to its destination under a temporary name, flushed to
disk and renamed over the old one, so a crash or Ctrl-C mid-write leaves the previous file intact.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import torch
from torch import Tensor, nn

from diffusion_lesson.interrupts import interrupts_deferred
from diffusion_lesson.schedules import SCHEDULE_NAMES

CHECKPOINT_FORMAT = 2
KINDS = ("unet", "latent-unet", "autoencoder", "classifier")
DIFFUSION_KINDS = ("unet", "latent-unet")  # these need the noise schedule they were trained with
_WRITTEN_BY = "pass a file written by python -m diffusion_lesson.train"


class Checkpoint(NamedTuple):
    """The contents of a checkpoint file; see the module docstring for each field."""

    kind: str
    model_config: dict
    schedule: dict | None
    objective: dict
    train_config: dict
    step: int
    model: dict[str, Tensor]
    ema: dict[str, Tensor] | None
    optimizer: dict | None
    generator: Tensor | None
    losses: Tensor
    extra: dict

    def weights(self, use_ema: bool = True) -> dict[str, Tensor]:
        """The EMA weights when present and ``use_ema``, else the trained ones."""
        return self.ema if use_ema and self.ema is not None else self.model


class CheckpointError(ValueError):
    """A file is not a readable checkpoint of the kind asked for; the message says what to do."""


class CheckpointKindError(CheckpointError):
    """A readable checkpoint of another kind than the one asked for (a classifier given as a U-Net...)."""


class CheckpointMismatchError(CheckpointError):
    """A state dict does not fit the model: names the missing, unexpected and mis-shaped parameters."""


def save_checkpoint(
    path: str | os.PathLike,
    *,
    kind: str,
    model: nn.Module | dict[str, Tensor],
    model_config: dict,
    schedule: dict | None = None,
    objective: dict | None = None,
    train_config: dict | None = None,
    step: int = 0,
    ema: dict[str, Tensor] | None = None,
    optimizer: dict | None = None,
    generator: torch.Generator | Tensor | None = None,
    losses: Tensor | list[float] | None = None,
    extra: dict | None = None,
) -> Path:
    """Write a checkpoint atomically to ``path`` (parent folders are created); returns the path."""
    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}; choose one of {KINDS}")
    if schedule is not None and set(schedule) != {"name", "T"}:
        raise ValueError(f"schedule must be {{'name': ..., 'T': ...}} or None, got {schedule!r}")
    if isinstance(model, nn.Module):
        model = model.state_dict()
    if isinstance(generator, torch.Generator):
        generator = generator.get_state()
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "kind": kind,
        "model_config": dict(model_config),
        "schedule": {"name": str(schedule["name"]), "T": int(schedule["T"])} if schedule is not None else None,
        "objective": dict(objective or {}),
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
    """torch.save ``obj`` to ``path`` atomically (see atomic_write)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """write(file) to a temporary file in path's folder, fsync, then os.replace over ``path``.

    A full disk, a read-only folder or an exception in ``write`` leaves ``path`` as it was and no
    temporary file behind; the OSError raised names the file and says what to do. A Ctrl-C (or a
    kill, in a command) during the write waits until the file is whole, then stops the program: an
    interrupt inside torch.save's zip writer would otherwise surface as a RuntimeError.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise OSError(err.errno, f"cannot write in {path.parent} ({err.strerror or err}); "
                      "choose a writable folder") from err  # fmt: skip
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        with interrupts_deferred():
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # atomic on POSIX and Windows within one file system
    except BaseException as err:  # also Ctrl-C and a full disk: never leave a half-written temporary file behind
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            kept = f"{path} was left as it was" if path.exists() else f"nothing was written to {path}"
            raise OSError(err.errno, f"cannot write {path} ({err.strerror or err}); {kept}. "
                          "Free some disk space or choose another folder") from err  # fmt: skip
        raise
    _fsync_dir(path.parent)


def load_checkpoint(path: str | os.PathLike, kinds: tuple[str, ...] = KINDS) -> Checkpoint:
    """Read a checkpoint with ``torch.load(weights_only=True)``: no pickled code is ever run.

    Raises FileNotFoundError for a missing file and CheckpointError for a file that is not a
    course checkpoint (truncated, another program's, another format) or whose kind is not in ``kinds``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    raw = _read(path)
    if isinstance(raw, dict) and raw.get("format") == 1 and "model_config" in raw:
        raw = _upgrade_format_1(raw)
    if not isinstance(raw, dict) or raw.get("format") != CHECKPOINT_FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(
            f"{path} is not a diffusion-lesson checkpoint of format {CHECKPOINT_FORMAT} (found {found})"
        )
    lacking = [name for name in Checkpoint._fields if name not in raw]
    if lacking:
        raise CheckpointError(f"{path} is an incomplete checkpoint: it lacks {', '.join(lacking)}; {_WRITTEN_BY}")
    if raw["kind"] not in kinds:
        raise CheckpointKindError(f"{path} holds a model of kind {raw['kind']!r}, but this needs {' or '.join(kinds)}")
    if raw["kind"] in DIFFUSION_KINDS:
        _check_schedule(path, raw["schedule"])
    return Checkpoint(**{name: raw[name] for name in Checkpoint._fields})


def _read(path: Path) -> Any:
    """torch.load(weights_only=True), with a message that says why a file cannot be read."""
    with open(path, "rb") as f:
        head = f.read(16)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # arbitrary bytes make the unpickler fail in arbitrary ways (IndexError, KeyError...)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0].split(". ")[0][:100]
        if not head:
            reason = "the file is empty (0 bytes)"
        elif not head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save writes a zip archive (a pickle before 1.6)
            reason = f"it is not a file written by torch.save (it starts with {head[:8]!r})"
        elif isinstance(err, pickle.UnpicklingError):
            reason = f"it holds objects other than tensors and plain data, which are never unpickled ({first})"
        else:
            reason = f"it is truncated or damaged ({first})"
        raise CheckpointError(f"{path} is not a readable diffusion-lesson checkpoint: {reason}; {_WRITTEN_BY}") from err


def _check_schedule(path: Path, schedule: Any) -> None:
    """A diffusion model must name the noise schedule it was trained with: {"name": "linear" | "cosine", "T": >= 1}."""
    ok = isinstance(schedule, dict) and schedule.get("name") in SCHEDULE_NAMES
    if not (ok and isinstance(schedule.get("T"), int) and schedule["T"] >= 1):
        raise CheckpointError(
            f"{path} holds a diffusion model without a usable noise schedule (found {schedule!r}; expected "
            f"{{'name': one of {SCHEDULE_NAMES}, 'T': number of steps}}); {_WRITTEN_BY}"
        )


def _upgrade_format_1(raw: dict) -> dict:
    """Format 1 (chapters 03-05 before the registry) kept the kind in extra and the loss settings in train_config."""
    train_config = dict(raw["train_config"])
    objective = {k: train_config.pop(k) for k in ("label_dropout",) if k in train_config}
    for key in ("schedule", "T"):
        train_config.pop(key, None)
    kind = (raw.get("extra") or {}).get("kind", "unet")
    extra = {k: v for k, v in (raw.get("extra") or {}).items() if k != "kind"}
    if kind == "autoencoder":
        objective = {"kl_weight": train_config.pop("kl_weight")} if "kl_weight" in train_config else {}
    return {**raw, "format": CHECKPOINT_FORMAT, "kind": kind, "objective": objective,
            "train_config": train_config, "extra": extra}  # fmt: skip


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
