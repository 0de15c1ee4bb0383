"""The exported decks in a real browser, headless Chromium at 1280x720: three slides of a deck rendered to PNG, and
every figure of every deck measured where the slides show it, so that its smallest text is large enough to read.

Slow (the decks are the session's executed lectures, see `exported_lecture` in conftest.py). Skips when no Chromium
is on PATH (Debian: `apt-get install chromium`), or when reveal.js cannot be had offline (`make slides` fetches it
into lectures/slides/assets with npm)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess

import matplotlib.image
import numpy as np
import pytest
from PIL import Image

from course.kit import ROOT
from course.lectures import decks, style

CHROMIUM = next(
    (shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)"),
]

LECTURES = sorted((ROOT / "lectures").glob("*.ipynb"))
LECTURE = ROOT / "lectures" / "02_kv_cache.ipynb"
# reveal.js deep links: the title, the timing figure (a subslide: slide 2, vertical 1) and the memory slide
SLIDES = ("0", "2/1", "4")
SCREEN = (1280, 720)
SMALLEST_READABLE_PX = 14.0  # text on a 1280x720 screen, as a projector shows it


def offline_deck(exported_lecture, notebook):
    deck, nb = exported_lecture(notebook)
    if f'"{decks.ASSETS}/reveal.js/dist/reveal.js"' not in deck.read_text():
        pytest.skip("reveal.js is not available offline; fetch it once with `python -m course.lectures`")
    return deck, nb


@pytest.fixture(scope="module")
def deck(exported_lecture):
    return offline_deck(exported_lecture, LECTURE)[0]


def chromium(*args: str, profile) -> subprocess.Popen:
    return subprocess.Popen(
        [
            CHROMIUM,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--hide-scrollbars",
            "--virtual-time-budget=10000",  # let reveal.js load and lay the slides out
            f"--user-data-dir={profile}",  # a profile each: browsers run side by side
            f"--window-size={SCREEN[0]},{SCREEN[1]}",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def finish(browsers) -> list[str]:
    """What each browser printed, once all have exited successfully."""
    try:
        printed = [browser.communicate(timeout=120)[0] for browser in browsers]
        assert all(browser.returncode == 0 for browser in browsers), "chromium failed"
        return printed
    finally:
        for browser in browsers:
            if browser.poll() is None:
                browser.kill()
                browser.wait()


def render(deck, slides, folder) -> list[np.ndarray]:
    """Each slide of `slides` (reveal.js deep links, 'h' or 'h/v') as an RGB array, 1280x720: one Chromium per
    slide, all started at once."""
    shots = [folder / f"slide-{slide.replace('/', '-')}.png" for slide in slides]
    finish(
        [
            chromium(f"--screenshot={shot}", f"{deck.as_uri()}#/{slide}", profile=shot.with_suffix(".profile"))
            for slide, shot in zip(slides, shots)
        ]
    )
    return [matplotlib.image.imread(shot)[..., :3] for shot in shots]


# Added to a copy of a deck: once reveal.js is ready, go to every slide and measure each image on it as shown (its
# width on the screen, after reveal.js has scaled the slide to the window) against its width in pixels.
MEASURE = """
require(["%s"], function (Reveal) {
  (function measure() {
    if (!Reveal.isReady()) { setTimeout(measure, 100); return; }
    Reveal.configure({transition: "none"});
    var images = Array.prototype.slice.call(document.images), found = [];
    Reveal.getSlides().forEach(function (slide) {
      var at = Reveal.getIndices(slide);
      Reveal.slide(at.h, at.v);
      slide.querySelectorAll("img").forEach(function (img) {
        found.push({slide: at.h + "/" + (at.v || 0), image: images.indexOf(img), natural: img.naturalWidth,
                    shown: img.getBoundingClientRect().width});
      });
    });
    var out = document.createElement("pre");
    out.id = "measured";
    out.textContent = JSON.stringify(found);
    document.body.appendChild(out);
  })();
});
"""


def measured_images(deck, folder) -> list[dict]:
    """[{slide, image (its index among the page's images), natural (px), shown (px on the screen)}] of every image
    on a slide of `deck`, measured in Chromium at 1280x720."""
    copy = deck.with_name(deck.stem + ".measured.html")  # beside the deck, where its assets are
    script = MEASURE % f"{decks.ASSETS}/reveal.js/dist/reveal.js"
    copy.write_text(deck.read_text().replace("</body>", f"<script>{script}</script></body>"))
    (page,) = finish([chromium("--dump-dom", copy.as_uri(), profile=folder / "profile")])
    found = re.search(r'<pre id="measured">(.*?)</pre>', page, flags=re.S)
    assert found, "reveal.js did not finish laying out the deck"
    return json.loads(found[1])


def smallest_text_px(png: bytes) -> float:
    """The size of the smallest text in the image, in its own pixels, as the lecture style records it."""
    with Image.open(io.BytesIO(png)) as image:
        recorded = image.info.get(style.SMALLEST_TEXT)
    assert recorded is not None, f"a figure without '{style.SMALLEST_TEXT}': drawn without use_lecture_style()"
    return float(recorded)


@pytest.mark.parametrize("notebook", LECTURES, ids=lambda p: p.name)
def test_every_figure_is_legible_on_a_1280x720_slide(exported_lecture, notebook, tmp_path):
    deck, _ = offline_deck(exported_lecture, notebook)
    html = deck.read_text()
    sources = re.findall(r'<img\b[^>]*?\bsrc="([^"]*)"', html)
    pngs = {
        i: base64.b64decode(src.split(",", 1)[1]) for i, src in enumerate(sources) if src.startswith("data:image/png")
    }
    assert pngs, f"{deck.name} shows no figure"
    measured = {entry["image"]: entry for entry in measured_images(deck, tmp_path)}
    assert set(pngs) <= set(measured), "a figure is on no slide"
    too_small = []
    for index, png in pngs.items():
        entry = measured[index]
        assert entry["natural"] > 0 and entry["shown"] > 0, f"figure {index} is not shown on slide {entry['slide']}"
        shown_px = smallest_text_px(png) * entry["shown"] / entry["natural"]
        if shown_px < SMALLEST_READABLE_PX:
            too_small.append(f"slide {entry['slide']}: {shown_px:.1f} px")
    assert not too_small, f"{deck.name}: text smaller than {SMALLEST_READABLE_PX:.0f} px on " + ", ".join(too_small)


def test_three_slides_render_in_chromium(deck, tmp_path):
    images = render(deck, SLIDES, tmp_path)
    for slide, image in zip(SLIDES, images):
        assert image.shape == (720, 1280, 3)
        assert image.std() > 0.02, f"slide {slide} is one colour"
        ink = (image.mean(-1) < 0.5).mean()  # dark pixels: text and figure lines
        assert 0.002 < ink < 0.5, f"slide {slide}: {ink:.1%} of the pixels are dark"
    # the deep links reached different slides: reveal.js ran (without it the page would be one long scroll)
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert np.abs(images[i] - images[j]).mean() > 0.005, f"slides {SLIDES[i]} and {SLIDES[j]} look the same"
