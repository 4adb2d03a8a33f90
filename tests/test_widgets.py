"""The timestep scrubber: the pure render function and the frames it sends (tests/test_browser.py drives the rest)."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion_lesson.forward import q_sample
from diffusion_lesson.schedules import make_schedule
from diffusion_lesson.text import Tokenizer
from diffusion_lesson.widgets import (
    GuidanceExplorer,
    PromptBox,
    TimestepScrubber,
    caption_for,
    grid_png,
    render_frame,
    thin,
)

SCHEDULE = make_schedule("linear")


def _decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def _states(n_images: int = 3) -> torch.Tensor:
    """x_t of a few fixed 'digits' (a bright square) at every t, with one fixed noise: (T, K, 1, 8, 8)."""
    x0 = -torch.ones(n_images, 1, 8, 8)
    x0[:, :, 2:6, 2:6] = 1
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    t = torch.arange(SCHEDULE.T)
    return q_sample(
        x0.expand(SCHEDULE.T, -1, -1, -1, -1).flatten(0, 1),
        t.repeat_interleave(n_images),
        SCHEDULE,
        noise=noise.repeat(SCHEDULE.T, 1, 1, 1),
    ).unflatten(0, (SCHEDULE.T, n_images))


def test_render_frame_differs_across_t_and_labels_t_and_alpha_bar():
    states = _states()
    early, late = render_frame(states[10], 10, SCHEDULE), render_frame(states[900], 900, SCHEDULE)
    assert not np.array_equal(_decode(early.png), _decode(late.png))
    for frame, t in ((early, 10), (late, 900)):
        assert frame.caption.startswith(f"t = {t} ")
        assert f"alpha_bar_t = {SCHEDULE.alpha_bar[t].item():.4g}" in frame.caption
        assert f"SNR = {SCHEDULE.snr[t].item():.4g}" in frame.caption


def test_render_frame_image_size_and_content():
    states = _states(2)
    image = _decode(render_frame(states[0], 0, SCHEDULE, scale=3).png)
    assert image.shape == (3 * (8 + 2 + 2), 3 * (2 * (8 + 2) + 2))  # 2 images, 2-pixel padding, 3x upscale
    # at t = 0 the square is still bright and the background dark
    assert image[3 * 6, 3 * 6] > 200 and image[3 * 3, 3 * 3] < 60


def test_render_frame_rejects_t_outside_schedule():
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1000\)"):
        render_frame(torch.zeros(1, 1, 8, 8), 1000, SCHEDULE)


def test_caption_reads_like_the_notation():
    assert caption_for(0, SCHEDULE) == f"t = 0   alpha_bar_t = {1 - 1e-4:.4g}   SNR = {SCHEDULE.snr[0].item():.4g}"


def test_scrubber_sends_every_frame_once_for_the_browser_to_swap():
    states = _states()
    scrubber = TimestepScrubber(states, SCHEDULE, max_frames=None)
    assert len(scrubber.frames) == len(scrubber.captions) == SCHEDULE.T and scrubber.index == 0
    assert scrubber.captions[750] == caption_for(750, SCHEDULE) and scrubber.label == "t"
    # one pixel per image pixel: the browser upscales by `scale` with nearest neighbour
    assert scrubber.frames[750] == render_frame(states[750], 750, SCHEDULE, scale=1).png
    assert scrubber.scale == 3 and scrubber.play_step == 9  # ~100 play frames


def test_scrubber_thins_long_paths_to_every_kth_step_and_the_last():
    scrubber = TimestepScrubber(_states(), SCHEDULE)  # max_frames=250: every 4th step
    assert scrubber.timesteps == [*range(0, 1000, 4), 999] and len(scrubber.frames) == 251
    assert scrubber.captions[150].startswith("t = 600 ") and scrubber.captions[-1].startswith("t = 999 ")
    assert thin(10, 4) == [0, 3, 6, 9] and thin(9, 4) == [0, 3, 6, 8] and thin(3, 4) == [0, 1, 2]


def test_scrubber_over_visited_steps_shows_their_t():
    states = _states()[[999, 500, 0]]
    scrubber = TimestepScrubber(states, SCHEDULE, timesteps=[999, 500, 0])
    assert scrubber.label == "frame" and scrubber.timesteps == [999, 500, 0]
    assert [c.split("   ")[0] for c in scrubber.captions] == ["t = 999", "t = 500", "t = 0"]


def test_scrubber_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(S, K, C, H, W\)"):
        TimestepScrubber(torch.zeros(5, 1, 8, 8), SCHEDULE)
    with pytest.raises(ValueError, match="2 timesteps for 3 states"):
        TimestepScrubber(torch.zeros(3, 1, 1, 8, 8), SCHEDULE, timesteps=[2, 1])


def test_guidance_explorer_holds_every_picture_and_links_its_controls_in_the_browser():
    samples = torch.zeros(3, 2, 4, 1, 28, 28)
    samples[2, 1] = 1.0  # condition 2 at scale index 1: all white
    explorer = GuidanceExplorer(samples, ["a", "b", "c"], [0.0, 3.0])
    assert explorer.shown(2, 1).value == grid_png(samples[2, 1], nrow=4)
    assert explorer.shown(0, 1).value == explorer.shown(2, 0).value != explorer.shown(2, 1).value
    # the picker picks the condition's stack, the slider the scale within every one of them
    links = {(link.source[0], link.source[1], link.target[0], link.target[1]) for link in explorer.links}
    assert (explorer.picker, "index", explorer.stack, "selected_index") in links
    for row in explorer.stack.children:
        assert (explorer.slider, "index", row, "selected_index") in links
    assert len(links) == 1 + len(explorer.stack.children)
    with pytest.raises(ValueError, match=r"must be \(P, S, K, C, H, W\) = \(3, 3, ...\)"):
        GuidanceExplorer(samples, ["a", "b", "c"], [0.0, 1.0, 3.0])


def test_prompt_box_draws_and_shows_a_refused_prompt_as_a_message():
    def draw(prompt: str, w: float) -> torch.Tensor:
        Tokenizer().encode(prompt)
        return torch.full((2, 1, 28, 28), w / 8)

    box = PromptBox(draw, "a thick seven", 3.0)
    box.show()
    assert box.image.value == grid_png(torch.full((2, 1, 28, 28), 3 / 8), nrow=2) and "w = 3" in box.message.value
    box.text.value = "a purple seven"  # submitting the text draws again
    assert "unknown word(s) &#x27;purple&#x27;" in box.message.value and "knows only these words" in box.message.value
