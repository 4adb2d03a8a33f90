"""One training loop for every model of the course: the U-Net (notebook 03), the autoencoder (05), the classifier (06).

The loop knows nothing about diffusion. It takes a model and an *objective*, an object whose
``loss(model, batch, generator)`` turns a batch drawn from the data set into a scalar loss; the
diffusion objective is DDPM's simple loss (``losses.DiffusionObjective``). Around it the loop does
what every model needs:

- batches drawn by index from the whole data set held as one tensor on the device;
- AdamW with a linear warm-up and (``decay_lr``) a half-cosine decay to 0, gradient clipping;
- an EMA of the weights, which is what gets sampled and shipped;
- the loss recorded at every step (copied to the host once per log, not once per step);
- one generator for all randomness, saved with the checkpoint, so training k steps, saving,
  resuming and training the rest gives the same weights as one run (exact resume);
- Ctrl-C stops after the step in progress; a checkpoint write is atomic.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Protocol

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from diffusion_lesson.checkpoints import Checkpoint, load_weights, save_checkpoint
from diffusion_lesson.data import LabeledImages, random_batch
from diffusion_lesson.interrupts import interrupts_deferred
from diffusion_lesson.runtime import make_generator
from diffusion_lesson.settings import Settings
from diffusion_lesson.timing import StepBudget


@dataclass(frozen=True)
class TrainConfig(Settings):
    """Settings of the loop, whatever the model; stored in checkpoints as a plain dict.

    lr rises linearly from 0 over warmup_steps, stays flat, and (decay_lr) falls along a half
    cosine to 0 at the last step. ema_decay is the EMA's final decay; it warms up as
    min(ema_decay, (1 + n) / (10 + n)) after n updates. grad_clip <= 0 turns clipping off.
    bf16_autocast and channels_last are speed options: measure them (benchmarks/).
    """

    steps: int = 2400
    batch_size: int = 128
    lr: float = 2e-3
    warmup_steps: int = 200
    decay_lr: bool = True
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    seed: int = 0
    bf16_autocast: bool = False
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.warmup_steps < 0 or not self.lr > 0:
            raise ValueError(
                f"TrainConfig needs steps >= 0, batch_size >= 1, warmup_steps >= 0 and lr > 0; got steps "
                f"{self.steps}, batch_size {self.batch_size}, warmup_steps {self.warmup_steps}, lr {self.lr}"
            )
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")


class Objective(Protocol):
    """What the loop minimises: ``loss`` of one batch, and the settings that define it (``to_dict``)."""

    def loss(self, model: nn.Module, batch: LabeledImages, generator: torch.Generator) -> Tensor: ...

    def to_dict(self) -> dict: ...


class EMA:
    """Exponential moving average of a model's floating-point state: shadow <- d * shadow + (1 - d) * w.

    d = min(decay, (1 + n) / (10 + n)) after n updates, so early shadows are not stuck near the
    random initial weights (decay=0 makes the shadow a copy of the latest weights). Integer
    buffers (counters) are copied.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        self.decay = decay
        self.num_updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def current_decay(self) -> float:
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        for k, w in model.state_dict().items():
            if w.dtype.is_floating_point:
                self.shadow[k].mul_(d).add_(w, alpha=1 - d)
            else:
                self.shadow[k].copy_(w)
        self.num_updates += 1

    def copy_to(self, model: nn.Module) -> nn.Module:
        """Load the averaged weights into ``model`` (e.g. a copy of the trained one); returns it."""
        load_weights(model, self.shadow)
        return model

    def state_dict(self) -> dict[str, Tensor]:
        """The shadow weights: a model state dict (num_updates equals the run's step count)."""
        return dict(self.shadow)

    def load_state_dict(self, shadow: dict[str, Tensor], num_updates: int) -> None:
        for k, v in shadow.items():
            self.shadow[k].copy_(v)
        self.num_updates = num_updates


@dataclass
class TrainState:
    """Everything a run needs to continue: built by ``start_training``, restored by ``restore_training``."""

    kind: str  # the checkpoint kind: "unet", "latent-unet", "autoencoder" or "classifier"
    model: nn.Module
    objective: Objective
    config: TrainConfig
    optimizer: torch.optim.Optimizer
    ema: EMA
    generator: torch.Generator
    step: int = 0
    losses: list[float] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # saved with the checkpoint (a latent model: its autoencoder)

    def ema_model(self) -> nn.Module:
        """A fresh copy of the model holding the EMA weights, in eval mode (sample or ship this one)."""
        model = type(self.model)(self.model.config).to(next(self.model.parameters()).device)
        return self.ema.copy_to(model).eval()


def start_training(
    model: nn.Module, objective: Objective, config: TrainConfig, device: torch.device | str | None = None,
    kind: str = "unet",
) -> TrainState:  # fmt: skip
    """A fresh run: model on ``device``, AdamW, EMA and a generator seeded with config.seed."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    memory_format = torch.channels_last if config.channels_last else torch.preserve_format
    model = model.to(device=device, memory_format=memory_format)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = make_generator(config.seed, device)
    return TrainState(kind, model, objective, config, optimizer, EMA(model, config.ema_decay), generator)


def restore_training(state: TrainState, ckpt: Checkpoint) -> TrainState:
    """Put a checkpoint's weights, EMA, optimizer, generator, step and losses into a fresh state; returns it."""
    load_weights(state.model, ckpt.model)
    state.ema.load_state_dict(ckpt.ema, num_updates=ckpt.step)
    state.optimizer.load_state_dict(ckpt.optimizer)
    state.generator.set_state(ckpt.generator)
    state.step, state.losses, state.extra = ckpt.step, ckpt.losses.tolist(), dict(ckpt.extra)
    return state


def start_from_weights(state: TrainState, ckpt: Checkpoint) -> TrainState:
    """Fine-tuning: a fresh run whose weights, and EMA, start at a trained checkpoint's (EMA) weights.

    The optimizer, step count and learning-rate schedule stay new. The networks must be the same;
    a different config is refused with the fields that differ.
    """
    mine, theirs = state.model.config.to_dict(), ckpt.model_config
    differ = [
        f"{name} {theirs.get(name)!r} there, {value!r} here"
        for name, value in mine.items()
        if theirs.get(name) != value
    ]
    if ckpt.kind != state.kind or differ:
        found = "; ".join(differ) or f"{ckpt.kind} there, {state.kind} here"
        raise ValueError(f"the weights to start from are another network ({ckpt.kind}; {found})")
    load_weights(state.model, ckpt.weights())
    state.ema.load_state_dict(ckpt.weights(), num_updates=0)
    return state


def save_training(state: TrainState, path: str | os.PathLike) -> None:
    """Checkpoint the whole run (atomically): weights, EMA, optimizer, step, generator, losses."""
    objective = state.objective.to_dict()
    schedule = getattr(state.objective, "schedule", None)
    save_checkpoint(
        path, kind=state.kind, model=state.model, model_config=state.model.config.to_dict(),
        schedule={"name": schedule.name, "T": schedule.T} if schedule is not None else None,
        objective=objective, train_config=state.config.to_dict(), step=state.step, ema=state.ema.state_dict(),
        optimizer=state.optimizer.state_dict(), generator=state.generator, losses=state.losses, extra=state.extra,
    )  # fmt: skip


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warm-up, then flat or half-cosine decay."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if not config.decay_lr:
        return config.lr
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def train_step(state: TrainState, data: LabeledImages) -> Tensor:
    """One step: ``backward_step`` then ``update_step``; returns the detached loss."""
    loss = backward_step(state, data)
    update_step(state)
    return loss


def backward_step(state: TrainState, data: LabeledImages) -> Tensor:
    """Draw a batch by index, compute the objective's loss and its gradients; returns the detached loss."""
    cfg = state.config
    batch = random_batch(data, cfg.batch_size, state.generator)
    if cfg.channels_last:
        batch = LabeledImages(batch.images.contiguous(memory_format=torch.channels_last), batch.labels)
    with _autocast(state.generator.device, cfg.bf16_autocast), _global_rng_fixed_by_step(state):
        loss = state.objective.loss(state.model, batch, state.generator)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    return loss.detach()


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast when enabled; otherwise nothing at all (older torch refuses even a disabled mps autocast)."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


@contextlib.contextmanager
def _global_rng_fixed_by_step(state: TrainState) -> Iterator[None]:
    """Modules that draw from torch's global generator (dropout) get a stream fixed by (seed, step).

    So a resumed run draws the same dropout masks as an unbroken one. The caller's global random
    state is put back afterwards (on the CPU and the run's CUDA device).
    """
    device = state.generator.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(state.config.seed * 1_000_003 + state.step)
        yield


def update_step(state: TrainState) -> None:
    """Clip the gradients, take the AdamW step at lr_at(step), update the EMA, count the step."""
    cfg = state.config
    if cfg.grad_clip > 0:
        nn.utils.clip_grad_norm_(state.model.parameters(), cfg.grad_clip)
    for group in state.optimizer.param_groups:
        group["lr"] = lr_at(state.step, cfg)
    state.optimizer.step()
    state.ema.update(state.model)
    state.step += 1


def train(
    state: TrainState,
    data: LabeledImages,
    callback: Callable[[TrainState], None] | None = None,
    callback_every: int = 100,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int = 1000,
    progress: bool = True,
    budget_s: float | None = None,
) -> TrainState:
    """Train until state.step == config.steps; returns the state (also after Ctrl-C).

    data: the whole training set on the model's device. ``callback(state)`` runs every
    ``callback_every`` steps (e.g. to redraw the loss curve); raising KeyboardInterrupt in it stops
    training like Ctrl-C does. With ``checkpoint_path`` the run is saved every ``checkpoint_every``
    steps and when it stops. ``budget_s``: train for that many seconds of wall-clock time instead:
    config.steps is ignored and set, from this machine's measured speed (``StepBudget``), to the
    step at which the time runs out, so the learning rate's decay ends with it.
    """
    state.model.train()
    budget = None
    if budget_s is not None:
        budget = StepBudget(budget_s, state.step)
        state.config = replace(state.config, steps=state.step + _UNTIL_MEASURED)
    bar = tqdm(total=state.config.steps, initial=state.step, disable=not progress, desc=f"training {state.kind}")
    pending: list[Tensor] = []  # losses not yet copied to the host: one sync per log, not per step
    try:
        while state.step < state.config.steps:
            with _rollback_on_interrupt(state):  # Ctrl-C here: the step never happened
                loss = backward_step(state, data)
            with interrupts_deferred():  # Ctrl-C (or kill) here waits: the update is all or nothing
                update_step(state)
                pending.append(loss)
            bar.update(1)
            if budget is not None and (end := budget.last_step(state.step, state.generator.device)) is not None:
                state.config = replace(state.config, steps=end)
                bar.total = end
            if state.step % callback_every == 0 or state.step == state.config.steps:
                _flush_losses(state, pending, bar)
                if callback is not None:
                    callback(state)
            if checkpoint_path is not None and state.step % checkpoint_every == 0 and state.step < state.config.steps:
                save_training(state, checkpoint_path)
    except KeyboardInterrupt:
        bar.write(f"interrupted: stopped cleanly after step {state.step}")
    finally:
        _flush_losses(state, pending, bar)
        bar.close()
        state.model.eval()
    if checkpoint_path is not None:
        save_training(state, checkpoint_path)
    return state


_UNTIL_MEASURED = 10**9  # a budgeted run's provisional length: no decay until its speed is measured


def _flush_losses(state: TrainState, pending: list[Tensor], bar) -> None:
    if not pending:
        return
    state.losses.extend(torch.stack(pending).float().cpu().tolist())
    pending.clear()
    recent = state.losses[-100:]
    bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}")


@contextlib.contextmanager
def _rollback_on_interrupt(state: TrainState) -> Iterator[None]:
    """If Ctrl-C lands before a step's update, undo its random draws: the run stays resumable."""
    rng = state.generator.get_state()
    try:
        yield
    except KeyboardInterrupt:
        state.generator.set_state(rng)
        state.optimizer.zero_grad(set_to_none=True)
        raise
