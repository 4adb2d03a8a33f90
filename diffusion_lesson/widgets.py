"""The timestep scrubber: a slider and play button over precomputed x_t (notebooks 01, 02, 04, 05);
the guidance explorer and the prompt box of notebook 07.

``render_frame`` is pure (tensor in, PNG bytes and caption out) so tests can call it; the widget is a
thin shell that calls it whenever the slider moves. Rendering is plain NumPy + PNG encoding, not
matplotlib, so an update costs a few milliseconds on a CPU (benchmarks/scrubber_latency.py).
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable, Sequence
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
    return Frame(grid_png(images, nrow, scale), caption_for(t, schedule))


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


def grid_png(images: Tensor, nrow: int | None = None, scale: int = 3) -> bytes:
    """(K, C, H, W) images in [-1, 1] as an upscaled PNG grid."""
    grid = image_grid(images, nrow)
    grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)  # nearest-neighbour upscale
    buffer = io.BytesIO()
    Image.fromarray(grid).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class GuidanceExplorer(widgets.VBox):
    """A picker over conditions and a guidance slider over precomputed samples (notebook 07).

    samples: (P, S, K, C, H, W): K samples for each of P conditions (``choices``) and S guidance
    ``scales``, drawn from the same starting noise, so moving the slider shows what guidance changes.
    """

    def __init__(self, samples: Tensor, choices: Sequence[str], scales: Sequence[float], scale: int = 3) -> None:
        if samples.ndim != 6 or samples.shape[:2] != (len(choices), len(scales)):
            raise ValueError(f"samples must be (P, S, K, C, H, W) = ({len(choices)}, {len(scales)}, ...), "
                             f"got {tuple(samples.shape)}")  # fmt: skip
        self.samples, self.scale = samples.detach().cpu(), scale
        self.picker = widgets.ToggleButtons(options=[(c, i) for i, c in enumerate(choices)], value=0)
        self.picker.style.button_width = "auto"
        self.slider = widgets.SelectionSlider(options=[(f"{w:g}", i) for i, w in enumerate(scales)], value=0,
                                              description="guidance w")  # fmt: skip
        self.image = widgets.Image(format="png")
        for control in (self.picker, self.slider):
            control.observe(lambda _: self.show(self.picker.value, self.slider.value), names="value")
        self.show(0, 0)
        super().__init__([self.picker, self.slider, self.image])

    def show(self, choice: int, scale_index: int) -> None:
        self.image.value = grid_png(self.samples[choice, scale_index], nrow=self.samples.shape[2], scale=self.scale)


class PromptBox(widgets.VBox):
    """A text box, a guidance slider and a button that draws ``draw(prompt, w) -> (K, C, H, W)`` (notebook 07).

    A prompt the model cannot read (``draw`` raises ValueError) shows the message instead of a traceback.
    """

    def __init__(self, draw: Callable[[str, float], Tensor], prompt: str = "a thick seven", guidance: float = 3.0,
                 max_guidance: float = 8.0, scale: int = 3) -> None:  # fmt: skip
        self.draw, self.scale = draw, scale
        self.text = widgets.Text(value=prompt, description="prompt", continuous_update=False)
        self.slider = widgets.FloatSlider(value=guidance, min=0, max=max_guidance, step=0.5, description="guidance w")
        self.button = widgets.Button(description="draw")
        self.message = widgets.HTML()
        self.image = widgets.Image(format="png")
        self.button.on_click(lambda _: self.show())
        self.text.observe(lambda _: self.show(), names="value")
        super().__init__([widgets.HBox([self.text, self.button]), self.slider, self.message, self.image])

    def show(self) -> None:
        try:
            images = self.draw(self.text.value, self.slider.value)
        except ValueError as err:
            self.message.value = f"<pre style='margin:0;white-space:pre-wrap'>{html.escape(str(err))}</pre>"
            return
        self.message.value = f"<pre style='margin:0'>{html.escape(self.text.value)!r}, w = {self.slider.value:g}</pre>"
        self.image.value = grid_png(images, nrow=len(images), scale=self.scale)
