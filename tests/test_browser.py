"""The scrubbers and the guidance explorer as a learner meets them: JupyterLab in Debian's Chromium,
driven by Playwright (slow).

For notebooks 01 (the forward chain) and 04 (a sampling trajectory), in quick mode: Run All, with one
cell added at the end that keeps the kernel busy; then, while it is busy, move the scrubber by
keyboard, by dragging its handle, by a click on its track followed by an arrow key (the slider must
keep the focus), and with play. Every move must change the picture and the "t = ... alpha_bar_t = ..."
caption, and the picture must be drawn at the size it is shown. Notebook 01 is then saved with its
widget state and opened again, and its scrubber must still move. Notebook 07's guidance explorer is
tried in a small notebook of its own (its pictures need no model), also while the kernel is busy: a
click on a condition and an arrow key on the guidance slider must each change the picture. Screenshots
of every step go to test-artifacts/browser/ in the repository (ignored by git), or
$DIFFUSION_LESSON_ARTIFACTS/browser/.

Needs the `playwright` Python package (the test extras) and Debian's `chromium` (.ci/run installs it
with apt-get), or the browser named by $DIFFUSION_LESSON_CHROMIUM; never `playwright install`. Without
them the test is skipped and says why.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("DIFFUSION_LESSON_ARTIFACTS", ROOT / "test-artifacts")) / "browser"
TOKEN = "diffusion-lesson-test"
BUSY_CELL = "import time\n\ntime.sleep(600)  # added by tests/test_browser.py: the kernel stays busy"
NOTEBOOKS = ["01_forward_process.ipynb", "04_sampling.ipynb"]

pytestmark = pytest.mark.slow


def chromium_path() -> str:
    """Debian's chromium, or a skip that says how to get it."""
    path = os.environ.get("DIFFUSION_LESSON_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("no chromium on PATH: `apt-get install chromium` (Debian) runs the browser test")
    return path


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is missing: pip install -e '.[test]'")
    executable = chromium_path()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        yield browser
        browser.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_json(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """JupyterLab on a free loopback port with its own configuration; yields (url, notebook folder)."""
    home = tmp_path_factory.mktemp("lab")
    settings = home / "settings"
    # No news or update checks (no internet here), every cell in the page (no windowing), and widget
    # state saved with the notebook.
    write_json(settings / "@jupyterlab/apputils-extension/notification.jupyterlab-settings",
               {"fetchNews": "false", "checkForUpdates": False})  # fmt: skip
    write_json(settings / "@jupyterlab/notebook-extension/tracker.jupyterlab-settings", {"windowingMode": "none"})
    write_json(settings / "@jupyter-widgets/jupyterlab-manager/plugin.jupyterlab-settings", {"saveState": True})
    folder = home / "notebooks"
    folder.mkdir()
    env = dict(os.environ, DIFFUSION_LESSON_QUICK="1", JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"), JUPYTER_CONFIG_DIR=str(home / "config"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"), IPYTHONDIR=str(home / "ipython"))  # fmt: skip
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
               f"--port={port}", f"--IdentityProvider.token={TOKEN}", "--expose-app-in-browser",
               f"--ServerApp.root_dir={folder}"]  # fmt: skip
    with open(home / "jupyterlab.log", "w") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2)
                break
            except OSError as err:
                if server.poll() is not None or time.monotonic() > deadline:
                    log_text = (home / "jupyterlab.log").read_text()
                    raise AssertionError(f"JupyterLab did not start:\n{log_text}") from err
                time.sleep(0.3)
        yield url, folder
    finally:
        server.terminate()
        server.wait(timeout=30)


def copy_with_busy_cell(name: str, folder: Path) -> None:
    """The notebook with a last cell that sleeps, so the scrubber is tried while the kernel is busy."""
    notebook = json.loads((ROOT / "notebooks" / name).read_text())
    notebook["cells"].append({"cell_type": "code", "execution_count": None, "id": "busy", "metadata": {},
                              "outputs": [], "source": BUSY_CELL})  # fmt: skip
    (folder / name).write_text(json.dumps(notebook))


NOTEBOOK_JS = "window.jupyterapp.shell.currentWidget"
KERNEL_STATUS = f"() => window.jupyterapp && {NOTEBOOK_JS}?.sessionContext?.session?.kernel?.status"
CODE_CELLS = f"{NOTEBOOK_JS}.content.widgets.filter(c => c.model.type === 'code')"
# The busy cell (the last) is running. The kernel's status is no sign: JupyterLab shows 'idle' after
# every control-channel reply, even while the kernel runs a cell.
BUSY = f"() => {{ const last = {CODE_CELLS}.at(-1); return last.promptNode.textContent.includes('*'); }}"
ALL_RAN = f"() => {CODE_CELLS}.slice(0, -1).every(c => c.model.executionCount !== null) && ({BUSY})()"
ERRORS = f"""() => {NOTEBOOK_JS}.content.widgets.flatMap(c => c.model.type !== 'code' ? [] :
    c.model.outputs.toJSON().filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue))"""
STATE = """(el) => { const canvas = el.querySelector('canvas'), rect = canvas.getBoundingClientRect();
    return {index: Number(el.querySelector('input').value), caption: el.querySelector('pre').textContent,
            drawn: canvas.dataset.index, pixels: canvas.toDataURL(), cssWidth: rect.width,
            deviceWidth: canvas.width / window.devicePixelRatio, focused: document.activeElement ===
            el.querySelector('input'), activeCell: window.jupyterapp.shell.currentWidget.content.activeCellIndex}; }"""


class Scrubber:
    """One scrubber in the page: its state, and screenshots of it."""

    def __init__(self, page, locator, name: str):
        self.page, self.locator, self.name = page, locator, name
        self.slider = locator.locator("input[type=range]")

    def state(self) -> dict:
        return self.locator.evaluate(STATE)

    def shot(self, step: str) -> None:
        self.locator.screenshot(path=ARTIFACTS / f"{self.name}-{step}.png")

    def wait_drawn(self, index: int) -> None:
        self.page.wait_for_function("([el, i]) => el.querySelector('canvas').dataset.index === String(i)",
                                    arg=[self.locator.element_handle(), index], timeout=5_000)  # fmt: skip

    def assert_moved(self, before: dict, how: str) -> dict:
        after = self.state()
        self.wait_drawn(after["index"])
        after = self.state()
        assert after["index"] != before["index"], f"{how}: the slider did not move"
        assert after["caption"] != before["caption"] and after["caption"].startswith("t = "), how
        assert "alpha_bar_t = " in after["caption"], how
        assert after["pixels"] != before["pixels"], f"{how}: the picture did not change"
        self.shot(how)
        return after

    def thumb_x(self, index: int) -> float:
        """Where the range input's thumb sits for a value (Chromium's thumb is about 16 px wide)."""
        box = self.slider.bounding_box()
        thumb = 16
        return box["x"] + thumb / 2 + (box["width"] - thumb) * index / int(self.slider.get_attribute("max"))


def open_and_run(page, url: str, name: str) -> None:
    page.goto(f"{url}/lab/tree/{name}?token={TOKEN}&reset")
    page.wait_for_function(f"() => ({KERNEL_STATUS})() === 'idle'", timeout=120_000)
    # Not awaited: the command's promise settles only when the busy cell ends.
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    page.wait_for_function(ALL_RAN, timeout=600_000, polling=500)
    assert page.evaluate(ERRORS) == []


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_scrubber_moves_its_picture_in_the_browser_while_the_kernel_is_busy(browser, lab, name):
    """Every kind of move changes the picture and the caption, all while the kernel sleeps in a later cell;
    for 01 also in the notebook saved with its widget state and opened again (a fresh kernel)."""
    url, folder = lab
    copy_with_busy_cell(name, folder)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    stem = name.removesuffix(".ipynb")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        start = time.monotonic()
        open_and_run(page, url, name)
        print(f"{name}: opened and ran in {time.monotonic() - start:.1f} s")
        scrubbers = page.locator(".dl-scrubber")
        assert scrubbers.count() >= 1, "no scrubber in the notebook's outputs"
        for i in range(scrubbers.count()):
            scrubber = Scrubber(page, scrubbers.nth(i), f"{stem}-{i}")
            scrubber.locator.scroll_into_view_if_needed()
            scrubber.wait_drawn(0)
            try_every_move(page, scrubber)
        page.screenshot(path=ARTIFACTS / f"{stem}-page.png")
        if name == NOTEBOOKS[0]:
            reopen_saved(page, url, folder / name, stem)
        print(f"{name}: done in {time.monotonic() - start:.1f} s")
    finally:
        page.screenshot(path=ARTIFACTS / f"{stem}-last.png")
        page.evaluate(f"{NOTEBOOK_JS}?.sessionContext?.shutdown()")
        page.close()


def reopen_saved(page, url: str, path: Path, stem: str) -> None:
    """Save with the widget state, close, open again: the scrubber shows and moves though no kernel made it."""
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    page.wait_for_function(f"() => !{NOTEBOOK_JS}.context.model.dirty", timeout=30_000)
    saved = json.loads(path.read_text())
    assert "application/vnd.jupyter.widget-state+json" in saved["metadata"].get("widgets", {})
    print(f"{path.name} saved with its widget state: {path.stat().st_size / 2**20:.1f} MiB")
    page.evaluate(f"() => {NOTEBOOK_JS}.sessionContext.shutdown()")
    page.evaluate("() => window.jupyterapp.commands.execute('application:close-all')")
    page.goto(f"{url}/lab/tree/{path.name}?token={TOKEN}&reset")
    scrubber = Scrubber(page, page.locator(".dl-scrubber").first, f"{stem}-saved")
    scrubber.locator.wait_for(timeout=60_000)
    scrubber.locator.scroll_into_view_if_needed()
    scrubber.wait_drawn(scrubber.state()["index"])  # the frame shown when it was saved
    state = scrubber.state()
    scrubber.shot("0-start")
    scrubber.slider.focus()
    page.keyboard.press("End")
    scrubber.assert_moved(state, "1-keyboard")


def try_every_move(page, scrubber: Scrubber) -> None:
    state = scrubber.state()
    scrubber.shot("0-start")
    # drawn at the size it is shown: one canvas pixel per screen pixel, no stretching by the page
    assert abs(state["cssWidth"] - state["deviceWidth"]) < 1, state
    assert page.evaluate(BUSY)

    scrubber.slider.focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    state = scrubber.assert_moved(state, "1-keyboard")
    assert state["index"] == 3

    box = scrubber.slider.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(scrubber.thumb_x(state["index"]), y)
    page.mouse.down()
    page.mouse.move(box["x"] + 0.5 * box["width"], y, steps=5)
    page.mouse.move(box["x"] + 0.8 * box["width"], y, steps=5)
    page.mouse.up()
    state = scrubber.assert_moved(state, "2-drag")
    assert state["index"] > 0.6 * int(scrubber.slider.get_attribute("max"))

    cell = state["activeCell"]
    page.mouse.click(box["x"] + 0.3 * box["width"], y)
    state = scrubber.assert_moved(state, "3-track-click")
    assert state["focused"], "a click on the track took the focus from the slider"
    page.keyboard.press("ArrowLeft")
    state = scrubber.assert_moved(state, "4-arrow-after-click")
    assert state["focused"] and state["activeCell"] == cell, "the arrow key went to the notebook"

    play = scrubber.locator.locator("button")
    play.click()
    page.wait_for_timeout(1_000)
    if play.get_attribute("title") == "pause":  # unless it reached the end
        play.click()
    state = scrubber.assert_moved(state, "5-play")
    assert page.evaluate(BUSY), "the kernel finished early: nothing was tried while it was busy"


EXPLORER_CELL = """import torch

from diffusion_lesson.widgets import GuidanceExplorer

# a distinct grey for each (condition, scale), so every move shows another picture
greys = torch.linspace(-1, 1, 6).reshape(3, 2, 1, 1, 1, 1).expand(3, 2, 4, 1, 28, 28)
GuidanceExplorer(greys, ["a", "b", "c"], [0.0, 3.0])"""
SHOWN_IMAGE = """(el) => { const shown = [...el.querySelectorAll('img')].filter(img => img.offsetParent !== null);
    return shown.map(img => ({src: img.src, width: img.getBoundingClientRect().width, natural: img.naturalWidth})); }"""


def test_guidance_explorer_switches_pictures_in_the_browser_while_the_kernel_is_busy(browser, lab):
    url, folder = lab
    cells = [{"cell_type": "code", "execution_count": None, "id": cell_id, "metadata": {}, "outputs": [],
              "source": source} for cell_id, source in (("explorer", EXPLORER_CELL), ("busy", BUSY_CELL))]  # fmt: skip
    notebook = {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                "language": "python"}}, "nbformat": 4, "nbformat_minor": 5}  # fmt: skip
    (folder / "explorer.ipynb").write_text(json.dumps(notebook))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        open_and_run(page, url, "explorer.ipynb")
        explorer = page.locator(".dl-guidance-explorer")
        explorer.wait_for(timeout=30_000)
        first = explorer.evaluate(SHOWN_IMAGE)
        assert len(first) == 1, f"{len(first)} pictures shown at once"
        assert first[0]["width"] == first[0]["natural"] > 300, first  # drawn at the size rendered, not stretched
        explorer.screenshot(path=ARTIFACTS / "explorer-0-start.png")

        explorer.locator("button", has_text="c").click()
        picked = explorer.evaluate(SHOWN_IMAGE)
        assert len(picked) == 1 and picked[0]["src"] != first[0]["src"], "the picker did not change the picture"
        explorer.screenshot(path=ARTIFACTS / "explorer-1-picked.png")

        explorer.locator(".noUi-handle").focus()
        page.keyboard.press("ArrowRight")
        page.wait_for_function("([el, src]) => [...el.querySelectorAll('img')].some(img => img.offsetParent "
                               "!== null && img.src !== src)", arg=[explorer.element_handle(), picked[0]["src"]],
                               timeout=5_000)  # fmt: skip
        moved = explorer.evaluate(SHOWN_IMAGE)
        assert len(moved) == 1 and moved[0]["src"] not in (first[0]["src"], picked[0]["src"])
        explorer.screenshot(path=ARTIFACTS / "explorer-2-slider.png")
        assert page.evaluate(BUSY), "the kernel finished early: nothing was tried while it was busy"
    finally:
        page.evaluate(f"{NOTEBOOK_JS}?.sessionContext?.shutdown()")
        page.close()
