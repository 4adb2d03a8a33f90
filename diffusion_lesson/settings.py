"""Settings that travel inside checkpoints: frozen dataclasses written as plain dicts (every chapter).

A checkpoint is read with ``torch.load(weights_only=True)``, which accepts plain dicts, lists,
numbers and strings but no custom classes, so every settings class (``UNetConfig``, ``TrainConfig``,
``AutoencoderConfig``, ...) derives from ``Settings``: ``to_dict`` writes tuples as lists, and
``from_dict`` refuses unknown keys, so a typo or a file from another model is never silently dropped.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, TypeVar

S = TypeVar("S", bound="Settings")


class Settings:
    """Mixin for frozen dataclasses of plain values (ints, floats, bools, strings, tuples, None)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, tuples as lists: safe for ``torch.load(weights_only=True)`` and JSON."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[S], d: dict[str, Any]) -> S:
        """Inverse of ``to_dict``; unknown keys raise ValueError naming them and the known ones."""
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}; known keys are {sorted(known)}")
        return cls(**d)
