"""The timestep scrubber: a slider and play button over precomputed x_t (notebooks 01, 02, 04, 05).

``render_frame`` is pure (tensor in, PNG bytes and caption out) so tests can call it; the widget is a
thin shell that calls it whenever the slider moves. Rendering is plain NumPy + PNG encoding, not
matplotlib, so an update costs a few milliseconds on a CPU (benchmarks/scrubber_latency.py).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import NamedTuple

import ipywidgets as widgets
import numpy as np
from PIL import Image
from torch import Tensor

from diffusion_lesson.plotting import image_grid
from diffusion_lesson.schedules import Schedule


class Frame(NamedTuple):
    """One rendered scrubber frame: PNG bytes of the image grid and its caption."""

    png: bytes
    caption: str


def caption_for(t: int, schedule: Schedule) -> str:
    """'t = 500   alpha_bar_t = 0.07854   SNR = 0.08523' for 0-based step t."""
    alpha_bar = schedule.alpha_bar[t].item()
    return f"t = {t}   alpha_bar_t = {alpha_bar:.4g}   SNR = {schedule.snr[t].item():.4g}"


def render_frame(images: Tensor, t: int, schedule: Schedule, nrow: int | None = None, scale: int = 3) -> Frame:
    """Render (K, C, H, W) images in [-1, 1] taken at step t as an upscaled PNG grid with its caption."""
    if not 0 <= t < schedule.T:
        raise ValueError(f"t must lie in [0, {schedule.T}), got {t}")
    grid = image_grid(images, nrow)
    grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)  # nearest-neighbour upscale
    buffer = io.BytesIO()
    Image.fromarray(grid).save(buffer, format="PNG", compress_level=1)
    return Frame(buffer.getvalue(), caption_for(t, schedule))


class TimestepScrubber(widgets.VBox):
    """Slider + play button over states (S, K, C, H, W); state i was taken at step timesteps[i].

    For a forward process S = T and timesteps = 0..T-1; for a sampler's trajectory the visited steps.
    """

    def __init__(
        self,
        states: Tensor,
        schedule: Schedule,
        timesteps: Sequence[int] | None = None,
        nrow: int | None = None,
        scale: int = 3,
        play_interval_ms: int = 60,
    ):
        if states.ndim != 5:
            raise ValueError(f"states must be (S, K, C, H, W), got shape {tuple(states.shape)}")
        self.states = states.detach().cpu()
        self.schedule = schedule
        self.timesteps = list(range(states.shape[0])) if timesteps is None else [int(t) for t in timesteps]
        if len(self.timesteps) != states.shape[0]:
            raise ValueError(f"{len(self.timesteps)} timesteps for {states.shape[0]} states")
        self.nrow, self.scale = nrow, scale
        last = states.shape[0] - 1
        self.slider = widgets.IntSlider(value=0, min=0, max=last, description="frame" if timesteps else "t")
        self.slider.layout.width = "60%"
        # ~100 play frames whatever S is, so "play" takes a few seconds.
        self.play = widgets.Play(value=0, min=0, max=last, step=max(1, last // 100), interval=play_interval_ms)
        widgets.jslink((self.play, "value"), (self.slider, "value"))
        self.image = widgets.Image(format="png")
        self.caption = widgets.HTML()
        self.slider.observe(self._on_change, names="value")
        self.show(0)
        super().__init__([widgets.HBox([self.play, self.slider]), self.caption, self.image])

    def show(self, index: int) -> None:
        """Render state ``index`` into the image and caption widgets."""
        frame = render_frame(self.states[index], self.timesteps[index], self.schedule, self.nrow, self.scale)
        self.image.value = frame.png
        self.caption.value = f"<pre style='margin:0'>{frame.caption}</pre>"

    def _on_change(self, change: dict) -> None:
        self.show(change["new"])
