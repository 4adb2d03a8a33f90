// The browser side of diffusion_lesson.widgets.TimestepScrubber (an anywidget ES module).
// Every frame arrives once, as a PNG at one pixel per image pixel, so the slider and play button
// only swap pictures here: they keep working while the kernel runs other cells, and in a notebook
// saved with its widget state. Frames are drawn at the size they are shown, upscaled by nearest
// neighbour onto the screen's own pixels, never stretched and smoothed by the page layout.

// Keys the range input handles itself. JupyterLab's notebook shortcuts would otherwise take the
// arrows to move between cells, since a range input is not a text field.
const SLIDER_KEYS = new Set(["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", "Home", "End", "PageUp", "PageDown"]);

function element(tag, className, properties = {}) {
  const node = Object.assign(document.createElement(tag), properties);
  node.className = className;
  return node;
}

function render({ model, el }) {
  const captions = model.get("captions");
  const last = captions.length - 1;
  const play = element("button", "jupyter-button dl-scrubber-play", { type: "button", title: "play", textContent: "\u25B6" });
  const label = element("label", "dl-scrubber-label", { textContent: model.get("label") });
  const slider = element("input", "dl-scrubber-slider", { type: "range", min: 0, max: last, step: 1 });
  label.append(slider);
  const caption = element("pre", "dl-scrubber-caption");
  const canvas = element("canvas", "dl-scrubber-image");
  const controls = element("div", "dl-scrubber-controls");
  controls.append(play, label);
  el.classList.add("dl-scrubber");
  el.append(controls, caption, canvas);

  // Decode every frame once: drawing a decoded bitmap is synchronous, so playing never flickers.
  const bitmaps = new Array(captions.length);
  const decoded = Promise.all(
    model.get("frames").map((view, i) =>
      createImageBitmap(new Blob([view], { type: "image/png" })).then((bitmap) => (bitmaps[i] = bitmap)),
    ),
  );

  function draw() {
    const index = model.get("index");
    slider.value = index;
    caption.textContent = captions[index];
    const bitmap = bitmaps[index];
    if (!bitmap) return;
    // CSS size: scale screen pixels per image pixel; the canvas holds the device pixels it covers.
    const scale = model.get("scale");
    const ratio = window.devicePixelRatio || 1;
    const width = Math.round(bitmap.width * scale * ratio);
    const height = Math.round(bitmap.height * scale * ratio);
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
      canvas.style.width = `${bitmap.width * scale}px`;
    }
    const context = canvas.getContext("2d");
    context.imageSmoothingEnabled = false; // nearest neighbour: each image pixel a crisp square
    context.drawImage(bitmap, 0, 0, width, height);
    canvas.dataset.index = String(index); // which frame is on screen, for tests
  }

  function show(index) {
    model.set("index", index);
    model.save_changes();
  }

  let timer = null;
  function stop() {
    clearInterval(timer);
    timer = null;
    play.textContent = "\u25B6";
    play.title = "play";
  }
  function start() {
    if (model.get("index") >= last) show(0);
    play.textContent = "\u275A\u275A";
    play.title = "pause";
    timer = setInterval(() => {
      const next = Math.min(last, model.get("index") + model.get("play_step"));
      show(next);
      if (next >= last) stop();
    }, model.get("play_interval_ms"));
  }

  slider.addEventListener("input", () => show(Number(slider.value)));
  slider.addEventListener("keydown", (event) => {
    if (SLIDER_KEYS.has(event.key)) event.stopPropagation();
  });
  play.addEventListener("click", () => (timer === null ? start() : stop()));
  model.on("change:index", draw);
  draw();
  decoded.then(draw);
  return () => {
    stop();
    model.off("change:index", draw);
    bitmaps.forEach((bitmap) => bitmap?.close());
  };
}

export default { render };
