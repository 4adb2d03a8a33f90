"""Figures shared by the notebooks: image grids, schedule curves, noising strips, histograms."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from diffusion_lesson.data import to_uint8
from diffusion_lesson.schedules import Schedule


def image_grid(images: Tensor, nrow: int | None = None, pad: int = 2, pad_value: int = 96) -> np.ndarray:
    """Tile (N, C, H, W) images in [-1, 1] into one uint8 array: (rows*(H+pad)+pad, ...) for C = 1, else (..., 3)."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, 1 or 3, H, W), got {tuple(images.shape)}")
    n, c, h, w = images.shape
    ncol = nrow or n  # images per row
    rows = -(-n // ncol)
    pixels = to_uint8(images).cpu().numpy().transpose(0, 2, 3, 1)  # (N, H, W, C)
    grid = np.full((rows * (h + pad) + pad, ncol * (w + pad) + pad, c), pad_value, dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        grid[top : top + h, left : left + w] = pixels[i]
    return grid[..., 0] if c == 1 else grid


def show_images(images: Tensor, nrow: int | None = None, title: str | None = None, ax=None, size: float = 1.0):
    """Draw (N, C, H, W) images in [-1, 1] as one grid; returns the matplotlib Axes."""
    grid = image_grid(images, nrow)
    if ax is None:
        height, width = grid.shape[:2]
        _, ax = plt.subplots(figsize=(size * width / 30, size * height / 30))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def plot_schedules(schedules: Sequence[Schedule]) -> Figure:
    """beta_t, alpha_bar_t and SNR (log scale) against t for each schedule, side by side."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for schedule in schedules:
        t = np.arange(schedule.T)
        axes[0].plot(t, schedule.beta.cpu(), label=schedule.name)
        axes[1].plot(t, schedule.alpha_bar.cpu(), label=schedule.name)
        axes[2].plot(t, schedule.snr.cpu(), label=schedule.name)
    axes[0].set_title(r"$\beta_t$: noise added at step t")
    axes[1].set_title(r"$\bar\alpha_t$: signal kept, $\sqrt{\bar\alpha_t}\,x_0$")
    axes[2].set_title(r"SNR $=\bar\alpha_t / (1-\bar\alpha_t)$")
    axes[0].set_yscale("log")  # linear's 1e-4..0.02 and cosine's final 0.999 on one axis
    axes[2].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("t (0-based)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def plot_strip(states: Tensor, timesteps: Sequence[int], schedule: Schedule, title: str | None = None) -> Figure:
    """One row of images, x_t at each of ``timesteps``: states is (S, C, H, W) with S = len(timesteps)."""
    if states.shape[0] != len(timesteps):
        raise ValueError(f"{states.shape[0]} images for {len(timesteps)} timesteps")
    fig, axes = plt.subplots(1, len(timesteps), figsize=(1.3 * len(timesteps), 1.9))
    for ax, image, t in zip(np.atleast_1d(axes), states, timesteps, strict=True):
        ax.imshow(image_grid(image[None], pad=0), cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"t={t}\n" + r"$\bar\alpha$=" + f"{schedule.alpha_bar[t].item():.3g}", fontsize=8)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, y=1.02)
    return fig


def plot_pixel_histograms(values_at_t: Mapping[int, Tensor], bins: int = 80) -> Figure:
    """Histogram of pixel values of x_t for each t, with the standard normal density for reference."""
    fig, axes = plt.subplots(1, len(values_at_t), figsize=(2.6 * len(values_at_t), 2.4), sharey=True)
    grid = np.linspace(-4, 4, 200)
    normal = np.exp(-(grid**2) / 2) / np.sqrt(2 * np.pi)
    for ax, (t, values) in zip(np.atleast_1d(axes), values_at_t.items(), strict=True):
        ax.hist(values.flatten().cpu().numpy(), bins=bins, range=(-4, 4), density=True, color="tab:blue", alpha=0.7)
        ax.plot(grid, normal, color="black", lw=1, label="N(0, 1)")
        ax.set_title(f"t = {t}")
        ax.set_ylim(0, 1.0)
        ax.set_xlabel("pixel value")
    np.atleast_1d(axes)[0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def plot_losses(losses: Sequence[float], window: int = 50, ax=None):
    """Training loss per step (faint) and its running mean over ``window`` steps, log scale."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3))
    values = np.asarray(losses, dtype=np.float64)
    steps = np.arange(1, len(values) + 1)
    ax.plot(steps, values, color="tab:blue", alpha=0.25, lw=0.8, label="loss per step")
    if len(values) >= window:
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], smooth, color="tab:blue", lw=2, label=f"mean of {window} steps")
    ax.set(xlabel="step", ylabel="MSE on eps", yscale="log", title="simple loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


class LiveLossPlot:
    """Training callback that redraws the loss curve in place: ``train(..., callback=LiveLossPlot())``."""

    def __init__(self, window: int = 50) -> None:
        from IPython.display import display  # here: only notebooks need IPython

        self.window = window
        self.fig, self.ax = plt.subplots(figsize=(6, 3))
        plt.close(self.fig)  # drawn through the display handle only
        self.handle = display(self.fig, display_id=True)

    def __call__(self, state) -> None:
        self.ax.clear()
        plot_losses(state.losses, self.window, self.ax)
        self.ax.set_title(f"simple loss, step {state.step} of {state.config.steps}")
        self.handle.update(self.fig)
