"""How the lecture figures look on a projector: the base font (large enough at 1280x720), titles wrapped at the figure's
edge, tokens with their whitespace made visible."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.font_manager import FontProperties

# Figures on a projector: a base font large enough to read from the back (the figure functions size their text
# relative to it), titles wrapped at the figure's edge.
LECTURE_STYLE = {"font.size": 13.0, "figure.titlesize": "large", "axes.titlesize": "medium", "legend.fontsize": "small"}


def use_lecture_style() -> None:
    """Set matplotlib's defaults for the lecture figures (call once, after importing pyplot)."""
    plt.rcParams.update(LECTURE_STYLE)


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
