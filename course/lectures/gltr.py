"""GLTR (lectures 03 and 05): a text coloured by each token's rank under the model, and what the shares say."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from course.lectures.style import SLIDE_WIDTH_IN, SMALL_PT, TITLE_PT, set_suptitle, wrap_to_width
from course.lens import GLTR_BUCKETS, GLTR_COLORS, gltr_bucket, gltr_buckets


def gltr_text(
    token_strings: Sequence[str], ranks, title: str, width: float = SLIDE_WIDTH_IN, fontsize: float = SMALL_PT
):
    """Text with each token's background in its GLTR bucket colour (the first token, which has no prefix,
    is left white), and the fraction of tokens in each bucket in the legend. Drawn in a monospace font,
    so that every character is 0.6 em wide and the layout does not depend on the renderer."""
    ranks = [None] + [int(r) for r in ranks] if len(ranks) == len(token_strings) - 1 else [int(r) for r in ranks]
    char = 0.6 * fontsize / 72 / width  # one character's width, in axes fractions
    max_chars = int(0.98 / char)
    lines, line, used = [], [], 0
    for tok, r in zip(token_strings, ranks):
        for j, piece in enumerate(tok.split("\n")):
            if j > 0 or used + len(piece) > max_chars:
                lines.append(line)
                line, used = [], 0
            if piece:
                line.append((used, piece, r))
                used += len(piece)
    lines.append(line)
    row = 1.9 * fontsize / 72  # inches per line of text
    title = wrap_to_width(title, width, TITLE_PT)
    above = 0.3 + 1.4 * TITLE_PT / 72 * len(title.splitlines())  # inches for the title
    height = above + row * len(lines) + 1.0  # and the two rows of the legend below
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    for i, line in enumerate(lines):
        top = 1 - (above + i * row) / height
        for start, piece, r in line:
            x = 0.01 + start * char
            color = "white" if r is None else GLTR_COLORS[gltr_bucket(r)]
            ax.add_patch(
                plt.Rectangle((x, top - 0.8 * row / height), len(piece) * char, 0.8 * row / height, fc=color, ec="none")
            )
            ax.text(x, top - 0.4 * row / height, piece, fontsize=fontsize, family="DejaVu Sans Mono", va="center")
    known = [r for r in ranks if r is not None]
    fractions = gltr_buckets(torch.tensor(known))
    handles = [plt.Rectangle((0, 0), 1, 1, fc=c) for c in GLTR_COLORS]
    labels = [
        f"rank {low}-{high if high != math.inf else '∞'}: {fractions[name]:.0%}" for (name, low, high) in GLTR_BUCKETS
    ]
    ax.legend(handles, labels, loc="lower center", ncol=2, frameon=False, bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(title, y=1 - 0.15 / height, fontsize=TITLE_PT, va="top")
    return fig


def gltr_html(token_strings: Sequence[str], ranks, surprisal=None) -> str:
    """The same colouring as HTML (hover a token to read its rank and surprisal)."""
    import html

    ranks = list(ranks)
    offset = len(token_strings) - len(ranks)
    spans = []
    for i, tok in enumerate(token_strings):
        if i < offset:
            spans.append(f"<span>{html.escape(tok)}</span>")
            continue
        r = int(ranks[i - offset])
        tip = f"rank {r}" + (f", {float(surprisal[i - offset]):.1f} bits" if surprisal is not None else "")
        spans.append(f'<span title="{tip}" style="background:{GLTR_COLORS[gltr_bucket(r)]}">{html.escape(tok)}</span>')
    return '<div style="font-family:monospace;line-height:1.8;white-space:pre-wrap">' + "".join(spans) + "</div>"


def gltr_histograms(results: dict[str, tuple[torch.Tensor, torch.Tensor]]):
    """Bucket fractions and surprisal histograms for several texts: {name: (ranks, surprisal_bits)}."""
    fig, axes = plt.subplots(1, 2, figsize=(SLIDE_WIDTH_IN, 4.2))
    names = list(results)
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        ranks, bits = results[name]
        fr = gltr_buckets(ranks)
        axes[0].bar(np.arange(4) + (i - (len(names) - 1) / 2) * width, list(fr.values()), width, label=name)
        axes[1].hist(
            bits.numpy(), bins=20, range=(0, 20), histtype="step", lw=2, label=f"{name}: mean {bits.mean():.1f} bits"
        )
    axes[0].set_xticks(np.arange(4), [f"{lo}-{hi}" if hi != math.inf else f">{lo - 1}" for _, lo, hi in GLTR_BUCKETS])
    axes[0].set_ylabel("fraction of tokens")
    axes[0].set_xlabel("rank under the model")
    axes[0].legend(fontsize=SMALL_PT)
    axes[1].set_xlabel("surprisal −log₂ p (bits)")
    axes[1].set_ylabel("tokens")
    axes[1].legend(fontsize=SMALL_PT)
    top10 = ", ".join(f"{name} {gltr_buckets(r)['top 10']:.0%}" for name, (r, _) in results.items())
    set_suptitle(fig, f"Share of tokens in the model's own top 10: {top10}", fontsize="large")
    fig.tight_layout()
    return fig


def gltr_verdict(top10: dict[str, float], human: str, full_sampling: str, margin: float = 0.05) -> str:
    """Which texts look more predictable to the model than the human one (a larger share of their tokens in its
    top 10, by more than `margin`), and, when the facts say so, that truncation and not sampling itself makes
    machine text stand out. `top10`: {text name: share of its tokens of rank 1-10}."""
    others = [name for name in top10 if name != human]
    above = [name for name in others if top10[name] > top10[human] + margin]
    parts = [f"{name} {top10[name]:.0%}" for name in [human, *others]]
    sentence = f"Share of tokens in the model's top 10: {', '.join(parts)}. "
    if above:
        sentence += f"More predictable to the model than the human text: {', '.join(above)}. "
    else:
        sentence += f"No sample is more predictable to the model than the human text (by {margin:.0%} or more). "
    truncated = [name for name in others if name != full_sampling]
    if full_sampling not in above and truncated and all(name in above for name in truncated):
        sentence += (
            f"The full-distribution sample ({full_sampling}) is not: its draws from the tail look human to this "
            "model. Truncation is what makes machine text predictable, and that is the signal GLTR reads."
        )
    return sentence.strip()
