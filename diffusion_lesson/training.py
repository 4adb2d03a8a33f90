"""Training the epsilon predictor: the simple loss (DDPM Algorithm 1), EMA and the loop (notebook 03).

Algorithm 1 of DDPM, one step:  x0 ~ data,  t ~ Uniform{0, ..., T-1},  eps ~ N(0, I),
    take a gradient step on  || eps - eps_theta(sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps, t) ||^2

The loop draws batches by index from the whole data set held as one tensor on the device, uses
AdamW with a linear warm-up, clips the gradient norm, keeps an EMA of the weights and records the
loss at every step. All randomness (batches, t, eps, label dropout) comes from one generator whose
state is saved with the checkpoint, so training k steps, saving, loading and training the rest
gives the same weights as training without a break. Ctrl-C stops after the step in progress.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusion_lesson.checkpoints import load_checkpoint, load_weights, save_checkpoint
from diffusion_lesson.data import LabeledImages, random_batch
from diffusion_lesson.forward import q_sample
from diffusion_lesson.runtime import make_generator, randn_like
from diffusion_lesson.schedules import Schedule, make_schedule
from diffusion_lesson.unet import UNet, UNetConfig


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run; stored in checkpoints as a plain dict (``to_dict``).

    lr rises linearly from 0 over warmup_steps, stays flat, and (decay_lr) falls along a half
    cosine to 0 at the last step. ema_decay is the EMA's final decay; it warms up as
    min(ema_decay, (1 + n) / (10 + n)) after n updates. grad_clip <= 0 turns clipping off.
    bf16_autocast and channels_last are speed options, off by default: measure them with
    benchmarks/train_throughput.py. (On the 2-core development CPU one run measured them faster,
    bf16 1.7x, but their effect on sample quality there is untested.)
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
    schedule: str = "linear"
    T: int = 1000
    label_dropout: float = 0.0
    bf16_autocast: bool = False
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.warmup_steps < 0 or self.lr <= 0:
            raise ValueError("TrainConfig needs steps >= 0, batch_size >= 1, warmup_steps >= 0 and lr > 0")
        if not 0 <= self.ema_decay < 1 or not 0 <= self.label_dropout < 1:
            raise ValueError("ema_decay and label_dropout must lie in [0, 1)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {unknown}")
        return cls(**d)


def simple_loss(
    model: nn.Module,
    x0: Tensor,
    schedule: Schedule,
    generator: torch.Generator | None = None,
    labels: Tensor | None = None,
    label_dropout: float = 0.0,
) -> Tensor:
    """L_simple = E ||eps - eps_theta(x_t, t)||^2 with t uniform in [0, T), DDPM eq. 14 / Algorithm 1.

    x0: (B, C, H, W); labels: (B,) long or None. With label_dropout > 0 each label is replaced by
    the model's "no class" index (num_classes) with that probability (classifier-free guidance).
    Returns a scalar: the mean over the batch and every pixel.
    """
    B = x0.shape[0]
    t = torch.randint(0, schedule.T, (B,), generator=generator, device=x0.device)  # (B,)
    eps = randn_like(x0, generator)
    xt = q_sample(x0, t, schedule, noise=eps)
    if labels is not None and label_dropout > 0:
        num_classes = model.config.num_classes
        drop = torch.rand(B, generator=generator, device=x0.device) < label_dropout
        labels = torch.where(drop, torch.full_like(labels, num_classes), labels)
    eps_pred = model(xt, t, labels)
    return F.mse_loss(eps_pred.float(), eps)


class EMA:
    """Exponential moving average of a model's floating-point state: shadow <- d * shadow + (1 - d) * w.

    d = min(decay, (1 + n) / (10 + n)) after n updates, so early shadows are not stuck near the
    random initial weights (decay=0 makes the shadow a copy of the latest weights).
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
    """Everything a run needs to continue: built by ``start_training`` or ``resume_training``."""

    model: UNet
    config: TrainConfig
    schedule: Schedule
    optimizer: torch.optim.Optimizer
    ema: EMA
    generator: torch.Generator
    step: int = 0
    losses: list[float] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # saved with the checkpoint (chapter 05: the autoencoder used)

    def ema_model(self) -> UNet:
        """A fresh copy of the model holding the EMA weights, in eval mode (use it for sampling)."""
        model = UNet(self.model.config).to(next(self.model.parameters()).device)
        return self.ema.copy_to(model).eval()


def start_training(model: UNet, config: TrainConfig, device: torch.device | str | None = None) -> TrainState:
    """A fresh run: model on ``device``, AdamW, EMA and a generator seeded with config.seed."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    memory_format = torch.channels_last if config.channels_last else torch.preserve_format
    model = model.to(device=device, memory_format=memory_format)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = make_schedule(config.schedule, config.T).to(device)
    generator = make_generator(config.seed, device)
    return TrainState(model, config, schedule, optimizer, EMA(model, config.ema_decay), generator)


def save_training(state: TrainState, path: str | os.PathLike) -> None:
    """Checkpoint the whole run (atomically): weights, EMA, optimizer, step, generator, losses."""
    save_checkpoint(
        path,
        model=state.model,
        model_config=state.model.config.to_dict(),
        schedule_name=state.schedule.name,
        T=state.schedule.T,
        train_config=state.config.to_dict(),
        step=state.step,
        ema=state.ema.state_dict(),
        optimizer=state.optimizer.state_dict(),
        generator=state.generator,
        losses=state.losses,
        extra=state.extra,
    )


def resume_training(
    path: str | os.PathLike, device: torch.device | str = "cpu", config: TrainConfig | None = None
) -> TrainState:
    """Rebuild a run from its checkpoint so that ``train`` continues it exactly.

    ``config`` may replace the saved TrainConfig (e.g. more steps); the model config always comes
    from the checkpoint.
    """
    ckpt = load_checkpoint(path)
    config = config or TrainConfig.from_dict(ckpt.train_config)
    state = start_training(UNet(UNetConfig.from_dict(ckpt.model_config)), config, device)
    load_weights(state.model, ckpt.model)
    state.ema.load_state_dict(ckpt.ema, num_updates=ckpt.step)
    state.optimizer.load_state_dict(ckpt.optimizer)
    state.generator.set_state(ckpt.generator)
    state.step, state.losses, state.extra = ckpt.step, ckpt.losses.tolist(), ckpt.extra
    return state


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warm-up, then flat or half-cosine decay."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if not config.decay_lr:
        return config.lr
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def train_step(state: TrainState, data: LabeledImages) -> Tensor:
    """One step of Algorithm 1: ``backward_step`` then ``update_step``; returns the detached loss."""
    loss = backward_step(state, data)
    update_step(state)
    return loss


def backward_step(state: TrainState, data: LabeledImages) -> Tensor:
    """Draw a batch by index, compute the simple loss and its gradients; returns the detached loss."""
    cfg, device = state.config, state.generator.device
    x0, labels = random_batch(data, cfg.batch_size, state.generator)
    if state.model.config.num_classes is None:
        labels = None
    if cfg.channels_last:
        x0 = x0.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16_autocast):
        loss = simple_loss(state.model, x0, state.schedule, state.generator, labels, cfg.label_dropout)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    return loss.detach()


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
) -> TrainState:
    """Train until state.step == config.steps; returns the state (also after Ctrl-C).

    data: the whole training set on the model's device. ``callback(state)`` runs every
    ``callback_every`` steps (e.g. to redraw the loss curve); raising KeyboardInterrupt in it stops
    training like Ctrl-C does. With ``checkpoint_path`` the run is saved every ``checkpoint_every``
    steps and when it stops.
    """
    from tqdm.auto import tqdm  # here: tqdm.auto picks the notebook widget at call time

    state.model.train()
    bar = tqdm(total=state.config.steps, initial=state.step, disable=not progress, desc="training")
    pending: list[Tensor] = []  # losses not yet copied to the host: one sync per log, not per step
    try:
        while state.step < state.config.steps:
            with _rollback_on_interrupt(state):  # Ctrl-C here: the step never happened
                loss = backward_step(state, data)
            with _sigint_deferred():  # Ctrl-C here waits: the update is all or nothing
                update_step(state)
                pending.append(loss)
            bar.update(1)
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


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) until the block ends, then raise it; only the main thread gets signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt
