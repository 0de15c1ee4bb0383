"""How the lecture figures look on a projector: the base font (large enough at 1280x720), titles wrapped at the figure's
edge, tokens with their whitespace made visible."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.font_manager import FontProperties

# Figures on a projector. reveal.js lays a slide out 960 px wide and shrinks it to the screen (about 0.8 at 1280x720);
# an image wider than the slide is shrunk to fit it first. So a figure that stays within the slide's 9.6 inches at
# 100 dpi shows its text at about 1.1 px per point, and SMALL_PT is the smallest text a lecture figure uses: 14 px or
# more. Figures are made SLIDE_WIDTH_IN wide, which leaves room for what sticks out (a label, a legend).
SLIDE_WIDTH_IN = 9.0
SMALL_PT = 14.0
TITLE_PT = 18.0
LECTURE_STYLE = {
    "figure.dpi": 100,
    "font.size": 16.0,
    "axes.titlesize": 16.0,
    "axes.labelsize": 16.0,
    "xtick.labelsize": SMALL_PT,
    "ytick.labelsize": SMALL_PT,
    "legend.fontsize": SMALL_PT,
    "figure.titlesize": TITLE_PT,
}
# Each figure's PNG says the size of its smallest text, in its own pixels (tests/test_slides.py reads it and measures
# how large the slide shows the image).
SMALLEST_TEXT = "Smallest text (px)"


def smallest_text_px(fig) -> float:
    """The size in pixels, at the figure's dpi, of the smallest text the figure shows."""
    from matplotlib.text import Text

    fig.draw_without_rendering()  # tick labels get their text when the figure is drawn
    sizes = [text.get_fontsize() for text in fig.findobj(Text) if text.get_visible() and text.get_text().strip()]
    return min(sizes, default=0.0) * fig.dpi / 72


def figure_png(fig) -> str | None:
    """The figure as IPython shows it (base64 PNG, cropped to its content), with `SMALLEST_TEXT` in the PNG's text."""
    from IPython.core.pylabtools import print_figure

    return print_figure(fig, "png", base64=True, metadata={SMALLEST_TEXT: f"{smallest_text_px(fig):.1f}"})


def use_lecture_style() -> None:
    """Set matplotlib's defaults for the lecture figures, and (in IPython) show figures through `figure_png`."""
    from matplotlib.figure import Figure

    plt.rcParams.update(LECTURE_STYLE)
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        plt.close(plt.figure())  # loads the backend now: the inline backend sets its own formatter as it loads
        shell.display_formatter.formatters["image/png"].for_type(Figure, figure_png)


def prompt_tail(text: str, chars: int) -> str:
    """The end of `text` in at most about `chars` characters, cut between words and marked with '…' when cut."""
    if len(text) <= chars:
        return text
    tail = text[-chars:]
    return "…" + (tail.split(" ", 1)[1] if " " in tail.strip() else tail)


def show_token(token: str) -> str:
    """A token string with its whitespace made visible, for axis labels."""
    return token.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥") or "∅"


def wrap_to_width(text: str, width_inches: float, fontsize) -> str:
    """`text` broken into lines that fit `width_inches` at `fontsize` (a character is about 0.55 em wide)."""

    points = FontProperties(size=fontsize).get_size_in_points()
    chars = max(20, int(width_inches * 72 / (0.55 * points)))
    return "\n".join(textwrap.fill(line, chars) for line in text.split("\n"))


def set_suptitle(fig, text: str, fontsize="large", **kwargs) -> None:
    fig.suptitle(wrap_to_width(text, fig.get_figwidth(), fontsize), fontsize=fontsize, **kwargs)


def set_title(ax, text: str, fontsize="medium") -> None:
    ax.set_title(wrap_to_width(text, ax.get_position().width * ax.figure.get_figwidth(), fontsize), fontsize=fontsize)


def probabilities(logits: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits.float(), dim=-1).cpu().numpy()


def label_sites(ax, sites: Sequence[str], axis: str = "x") -> None:
    ticks = range(len(sites))
    if axis == "x":
        ax.set_xticks(ticks, sites, rotation=45, ha="right")
    else:
        ax.set_yticks(ticks, sites)
