"""The timestep scrubber: a slider and play button over precomputed x_t (notebooks 01-05);
the guidance explorer and the prompt box of notebook 07.

``render_frame`` is pure (tensor in, PNG bytes and caption out) so tests can call it. The scrubber
renders every frame once, when it is made (plain NumPy + PNG encoding, a millisecond or so a frame),
and its browser side (``scrubber.js``, an anywidget module) swaps them: moving the slider never
waits for the kernel. tests/test_browser.py drives it in JupyterLab in Chromium.
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import anywidget
import ipywidgets as widgets
import numpy as np
import traitlets
from PIL import Image
from torch import Tensor

from diffusion_lesson.plotting import image_grid
from diffusion_lesson.schedules import Schedule

_SCRUBBER_CSS = """
.dl-scrubber { display: flex; flex-direction: column; align-items: flex-start; gap: 4px; }
.dl-scrubber-controls { display: flex; align-items: center; gap: 8px; width: 100%; }
.dl-scrubber-label { display: flex; align-items: center; gap: 8px; flex: 0 1 60%; }
.dl-scrubber-slider { flex: 1; }
.dl-scrubber-caption { margin: 0; }
.dl-scrubber-image { max-width: 100%; height: auto; image-rendering: pixelated; }
"""


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


class TimestepScrubber(anywidget.AnyWidget):
    """Slider + play button over states (S, K, C, H, W); state i was taken at step timesteps[i].

    For a forward process S = T and timesteps = 0..T-1; for a sampler's trajectory the visited steps.
    Every frame is rendered here once and sent to the browser, which swaps them as the slider moves
    (scrubber.js), so the scrubber works while the kernel is busy. More than ``max_frames`` states are
    thinned to every k-th one, k = ceil(S / max_frames), plus the last (T = 1000: t = 0, 4, ..., 996,
    999), to bound what is sent: about 6 KB per frame of 8 noisy digits. ``max_frames=None`` keeps all.
    """

    _esm = Path(__file__).with_name("scrubber.js")
    _css = _SCRUBBER_CSS
    frames = traitlets.List(traitlets.Bytes()).tag(sync=True)  # PNG per kept state, one pixel per image pixel
    captions = traitlets.List(traitlets.Unicode()).tag(sync=True)
    index = traitlets.Int(0).tag(sync=True)  # the frame on screen, in [0, len(frames))
    scale = traitlets.Int(3).tag(sync=True)  # screen pixels per image pixel (nearest neighbour)
    label = traitlets.Unicode("t").tag(sync=True)
    play_step = traitlets.Int(1).tag(sync=True)
    play_interval_ms = traitlets.Int(60).tag(sync=True)

    def __init__(
        self,
        states: Tensor,
        schedule: Schedule,
        timesteps: Sequence[int] | None = None,
        nrow: int | None = None,
        scale: int = 3,
        play_interval_ms: int = 60,
        max_frames: int | None = 250,
    ):
        if states.ndim != 5:
            raise ValueError(f"states must be (S, K, C, H, W), got shape {tuple(states.shape)}")
        all_steps = list(range(states.shape[0])) if timesteps is None else [int(t) for t in timesteps]
        if len(all_steps) != states.shape[0]:
            raise ValueError(f"{len(all_steps)} timesteps for {states.shape[0]} states")
        kept = thin(len(all_steps), max_frames)
        self.timesteps = [all_steps[i] for i in kept]  # the step of each frame
        states = states.detach().cpu()
        frames = [render_frame(states[i], all_steps[i], schedule, nrow, scale=1) for i in kept]
        super().__init__(
            frames=[f.png for f in frames],
            captions=[f.caption for f in frames],
            scale=scale,
            label="t" if timesteps is None else "frame",
            play_step=max(1, (len(kept) - 1) // 100),  # ~100 play frames whatever S is: a few seconds
            play_interval_ms=play_interval_ms,
        )


def thin(n: int, max_frames: int | None) -> list[int]:
    """Indices 0, k, 2k, ... of n states with k = ceil(n / max_frames), and the last one, n - 1."""
    if max_frames is None or n <= max_frames:
        return list(range(n))
    if max_frames < 1:
        raise ValueError(f"max_frames must be positive, got {max_frames}")
    return sorted({*range(0, n, -(-n // max_frames)), n - 1})


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
    Every picture is rendered once into nested Stacks (one per condition, each holding one image per
    scale) whose shown child the picker and the slider select through ``jslink``: the browser switches
    pictures itself, so the explorer works while the kernel is busy and in a saved notebook.
    """

    def __init__(self, samples: Tensor, choices: Sequence[str], scales: Sequence[float], scale: int = 3) -> None:
        if samples.ndim != 6 or samples.shape[:2] != (len(choices), len(scales)):
            raise ValueError(f"samples must be (P, S, K, C, H, W) = ({len(choices)}, {len(scales)}, ...), "
                             f"got {tuple(samples.shape)}")  # fmt: skip
        samples = samples.detach().cpu()
        self.picker = widgets.ToggleButtons(options=[(c, i) for i, c in enumerate(choices)], value=0)
        self.picker.style.button_width = "auto"
        self.slider = widgets.SelectionSlider(options=[(f"{w:g}", i) for i, w in enumerate(scales)], value=0,
                                              description="guidance w")  # fmt: skip
        crisp = widgets.Layout(object_fit="none")  # shown at the size rendered: nearest-neighbour pixels, no stretch
        self.images = [[widgets.Image(value=grid_png(by_scale, nrow=samples.shape[2], scale=scale), format="png",
                                      layout=crisp) for by_scale in by_choice] for by_choice in samples]  # fmt: skip
        self.by_scale = [widgets.Stack(row, selected_index=0) for row in self.images]
        self.stack = widgets.Stack(self.by_scale, selected_index=0)
        self.links = [widgets.jslink((self.picker, "index"), (self.stack, "selected_index"))]
        self.links += [widgets.jslink((self.slider, "index"), (row, "selected_index")) for row in self.by_scale]
        super().__init__([self.picker, self.slider, self.stack])
        self.add_class("dl-guidance-explorer")

    def shown(self, choice: int, scale_index: int) -> widgets.Image:
        """The image the browser shows when the picker is at ``choice`` and the slider at ``scale_index``."""
        return self.stack.children[choice].children[scale_index]


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
