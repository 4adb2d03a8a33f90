"""What one step of a model costs: wall time of a sampling and a training step, and FLOPs (notebook 05).

Used to compare the latent U-Net with the pixel one at the same batch size. Times come from
``timing.best_of`` (device synchronized, warm-up first, models taking turns); FLOPs are counted by
torch's FlopCounterMode, so they are free of timing noise.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import NamedTuple

import torch
from torch.utils.flop_counter import FlopCounterMode

from diffusion_lesson.losses import simple_loss
from diffusion_lesson.schedules import Schedule
from diffusion_lesson.timing import best_of
from diffusion_lesson.unet import UNet


class StepCost(NamedTuple):
    """Milliseconds of one sampling step (a forward pass without gradients) and of one training step
    (simple loss, backward, AdamW update), each the best of several timings, and the forward pass's
    floating-point operations per image."""

    sample_ms: float
    train_ms: float
    mflops_per_image: float


def measure_step_costs(
    models: Mapping[str, UNet],
    schedule: Schedule,
    batch_size: int = 128,
    repeats: int = 10,
    device: torch.device | str = "cpu",
) -> dict[str, StepCost]:
    """Time each model at its own input shape (pixels or latents) on random inputs; trains copies, not the models."""
    device = torch.device(device)
    functions: dict[str, Callable[[], None]] = {}
    mflops = {}
    for name, model in models.items():
        sample_step, train_step = _step_functions(model, schedule, batch_size, device)
        with FlopCounterMode(display=False) as counter:
            sample_step()
        mflops[name] = counter.get_total_flops() / batch_size / 1e6
        functions[f"{name}/sample"], functions[f"{name}/train"] = sample_step, train_step
    seconds = best_of(functions, device, repeats)
    return {
        name: StepCost(1000 * seconds[f"{name}/sample"], 1000 * seconds[f"{name}/train"], mflops[name])
        for name in models
    }


def _step_functions(model: UNet, schedule: Schedule, batch_size: int, device: torch.device):
    cfg = model.config
    x = torch.randn(batch_size, cfg.in_channels, cfg.image_size, cfg.image_size, device=device)
    t = torch.full((batch_size,), schedule.T // 2, dtype=torch.long, device=device)
    trainee = copy.deepcopy(model).to(device).train()
    optimizer = torch.optim.AdamW(trainee.parameters(), lr=1e-4)

    def sample_step() -> None:
        with torch.no_grad():
            model(x, t)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        simple_loss(trainee, x, schedule).backward()
        optimizer.step()

    return sample_step, train_step
