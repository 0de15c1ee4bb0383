"""The exported decks in a real browser: headless Chromium renders three slides of a lecture deck to PNG.

Slow (it exports 02_kv_cache on the tiny checkpoint unless tests/test_lectures.py exported it earlier in the
session). Skips when no Chromium is on PATH (Debian: `apt-get install chromium`), or when reveal.js cannot be
had offline (`make slides` fetches it into lectures/slides/assets with npm)."""

from __future__ import annotations

import os
import shutil
import subprocess

import matplotlib.image
import numpy as np
import pytest

from course.errors import UserError
from course.kit import ROOT
from course.lectures import decks

CHROMIUM = next(
    (shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)"),
]

LECTURE = ROOT / "lectures" / "02_kv_cache.ipynb"
# reveal.js deep links: the title, the timing figure (a subslide: slide 2, vertical 1) and the memory slide
SLIDES = ("0", "2/1", "4")


@pytest.fixture(scope="module")
def deck(tmp_path_factory, tiny_checkpoint, wikitext2_dir):
    folder = tmp_path_factory.getbasetemp() / "lecture-slides"  # where tests/test_lectures.py exports its decks
    try:
        decks.provide_slide_assets(folder, fetch=False)
    except UserError as e:
        pytest.skip(f"reveal.js is not available offline ({e}); fetch it once with `python -m course.lectures`")
    path = decks.slides_path(LECTURE, folder)
    if not path.is_file() or f'"{decks.ASSETS}/reveal.js/dist/reveal.js"' not in path.read_text():
        with pytest.MonkeyPatch.context() as env:
            env.setenv("COURSE_CHECKPOINT", str(tiny_checkpoint))
            env.setenv("COURSE_DATA_DIR", str(wikitext2_dir))
            env.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
            path, _ = decks.export_slides(LECTURE, folder)
    return path


def render(deck, slides, folder) -> list[np.ndarray]:
    """Each slide of `slides` (reveal.js deep links, 'h' or 'h/v') as an RGB array, 1280x720: one Chromium per
    slide, all started at once."""
    shots = [folder / f"slide-{slide.replace('/', '-')}.png" for slide in slides]
    browsers = [
        subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--disable-gpu",
                "--no-sandbox",
                "--hide-scrollbars",
                "--virtual-time-budget=5000",  # let reveal.js load and lay the slide out before the screenshot
                f"--screenshot={shot}",
                f"--user-data-dir={shot.with_suffix('.profile')}",  # a profile each: the browsers run side by side
                "--window-size=1280,720",
                f"{deck.as_uri()}#/{slide}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for slide, shot in zip(slides, shots)
    ]
    try:
        for browser in browsers:
            assert browser.wait(timeout=60) == 0, f"chromium exited with {browser.returncode}"
    finally:
        for browser in browsers:
            if browser.poll() is None:
                browser.kill()
                browser.wait()
    return [matplotlib.image.imread(shot)[..., :3] for shot in shots]


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
