"""Helpers for the lecture notebooks (`lectures/`): finding the checkpoint, and the figures.

Each figure function draws one matplotlib figure and returns it. Token strings are shown with their
whitespace visible ('␣the', '↵'), axes are labelled, and every title says what to notice. The numbers
come from `course.lens` and from the assignment solutions (loaded with `course.notebook`); this module
only finds files and draws.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from course.kit import ROOT
from course.lens import GLTR_BUCKETS, GLTR_COLORS, gltr_bucket, gltr_buckets

MAKE_CHECKPOINT = """\
No checkpoint found. The lecture looked at $COURSE_CHECKPOINT, then {root}/runs/course, runs/laptop and runs/tiny.
Make the tiny one (about 3 minutes on a laptop CPU) from the course kit's folder:

    course prepare --data-dir PATH/TO/wikitext-2     # or without --data-dir when online
    course train --preset tiny --out runs/tiny

then run this notebook again (or set COURSE_CHECKPOINT to a checkpoint folder)."""


class LectureStop(Exception):
    """Stops a lecture notebook with a plain message (IPython shows it without a traceback)."""

    def _render_traceback_(self):
        return str(self).splitlines()


def is_checkpoint(path: str | os.PathLike) -> bool:
    return (Path(path) / "config.json").is_file() and (Path(path) / "model.safetensors").is_file()


def find_checkpoints() -> dict[str, Path]:
    """The checkpoints a lecture can use, the preferred first: $COURSE_CHECKPOINT (as 'env') when set,
    else runs/course, runs/laptop and runs/tiny (the largest preset first), whichever exist. Raises LectureStop, saying how to make one, when
    there is none."""
    env = os.environ.get("COURSE_CHECKPOINT")
    if env:
        if not is_checkpoint(env):
            raise LectureStop(
                f"COURSE_CHECKPOINT={env} is not a checkpoint folder (expected config.json and "
                "model.safetensors in it, as written by `course train`)."
            )
        found = {"env": Path(env)}
    else:
        found = {}
    for name in ("course", "laptop", "tiny"):
        path = ROOT / "runs" / name
        if is_checkpoint(path) and all(path.resolve() != p.resolve() for p in found.values()):
            found[name] = path
    if not found:
        raise LectureStop(MAKE_CHECKPOINT.format(root=ROOT))
    return found


def load_lecture_model():
    """(model, tokenizer, path) of the preferred checkpoint (see `find_checkpoints`), in eval mode on CPU."""
    from course.checkpoint import load_checkpoint

    path = next(iter(find_checkpoints().values()))
    model, tokenizer = load_checkpoint(path)
    return model, tokenizer, path


def load_solution(name: str, names: Sequence[str]) -> dict[str, Callable]:
    """The named functions from `solutions/<name>.ipynb`, through the course's notebook loader (the
    same code the students complete and the grader runs: one source of truth)."""
    from course.notebook import load_notebook, require

    path = ROOT / "solutions" / f"{name}.ipynb"
    if not path.is_file():
        raise LectureStop(f"expected the solution notebook {path}; the lectures use its functions")
    return require(load_notebook(path).namespace, names, where=str(path))


def describe(model, path) -> str:
    c = model.config
    return (
        f"{path}: {model.num_params() / 1e6:.2f}M parameters, {c.n_layer} layers x {c.n_head} heads, "
        f"width {c.n_embd}, context {c.block_size}, vocabulary {c.vocab_size:,}"
    )


# Figures on a projector: a base font large enough to read from the back (the figure functions size their text
# relative to it), titles wrapped at the figure's edge.
LECTURE_STYLE = {"font.size": 13.0, "figure.titlesize": "large", "axes.titlesize": "medium", "legend.fontsize": "small"}


def use_lecture_style() -> None:
    """Set matplotlib's defaults for the lecture figures (call once, after importing pyplot)."""
    plt.rcParams.update(LECTURE_STYLE)


def show_token(token: str) -> str:
    """A token string with its whitespace made visible, for axis labels."""
    return token.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥") or "∅"


def _wrapped(text: str, width_inches: float, fontsize) -> str:
    """`text` broken into lines that fit `width_inches` at `fontsize` (a character is about 0.55 em wide)."""
    import textwrap

    from matplotlib.font_manager import FontProperties

    points = FontProperties(size=fontsize).get_size_in_points()
    chars = max(20, int(width_inches * 72 / (0.55 * points)))
    return "\n".join(textwrap.fill(line, chars) for line in text.split("\n"))


def _suptitle(fig, text: str, fontsize="large", **kwargs) -> None:
    fig.suptitle(_wrapped(text, fig.get_figwidth(), fontsize), fontsize=fontsize, **kwargs)


def _title(ax, text: str, fontsize="medium") -> None:
    ax.set_title(_wrapped(text, ax.get_position().width * ax.figure.get_figwidth(), fontsize), fontsize=fontsize)


def _probs(logits: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits.float(), dim=-1).cpu().numpy()


def _label_sites(ax, sites: Sequence[str], axis: str = "x") -> None:
    ticks = range(len(sites))
    if axis == "x":
        ax.set_xticks(ticks, sites, rotation=45, ha="right")
    else:
        ax.set_yticks(ticks, sites)


# ------------------------------------------------------------------ 01: sampling


def sorted_distributions(panels: Sequence[tuple[str, torch.Tensor]], token_strings: Callable, annotate: int = 5):
    """Side by side, each prompt's next-token probabilities over the whole vocabulary, sorted.
    `panels` is a list of (prompt, logits (vocab,)); `token_strings(ids)` names tokens."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, (prompt, logits) in zip(axes, panels):
        p = _probs(logits)
        order = np.argsort(-p)
        ranks = np.arange(1, len(p) + 1)
        ax.loglog(ranks, p[order], lw=1.5)
        for i, (tok, r) in enumerate(zip(token_strings(order[:annotate].tolist()), ranks[:annotate])):
            ax.annotate(
                f"{show_token(tok)} {p[order[i]]:.2f}",
                (r, p[order[i]]),
                fontsize="small",
                xytext=(6, -4 - 13 * i),
                textcoords="offset points",
            )
        top1, top10 = p[order[0]], p[order[:10]].sum()
        _title(ax, f"“…{prompt[-40:]}”\ntop-1 {top1:.0%}, top-10 {top10:.0%} of the mass", fontsize="medium")
        ax.set_xlabel(f"rank of the token (all {len(p):,} tokens)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("probability")
    _suptitle(fig, spread_verdict(panels))
    fig.tight_layout()
    return fig


def tokens_for_mass(logits: torch.Tensor, mass: float = 0.9) -> int:
    """How many of the most likely tokens it takes to hold `mass` of the probability (what top-p keeps)."""
    probs = np.sort(_probs(logits))[::-1]
    return int(np.searchsorted(np.cumsum(probs), mass) + 1)


def spread_verdict(panels: Sequence[tuple[str, torch.Tensor]], mass: float = 0.9) -> str:
    """What the panels show, from their numbers: how many tokens hold `mass` after each prompt, and whether
    one prompt is much more spread out than another (ten times as many tokens or more)."""
    counts = [tokens_for_mass(logits, mass) for _, logits in panels]
    listed = ", ".join(f"{n:,} after “…{prompt[-20:]}”" for n, (prompt, _) in zip(counts, panels))
    if max(counts) >= 10 * min(counts):
        return f"Peaked vs flat: {mass:.0%} of the mass takes {listed}"
    return f"These prompts are spread alike: {mass:.0%} of the mass takes {listed}"


def temperature_bars(
    logits: torch.Tensor,
    token_strings: Callable,
    temperatures=(0.5, 1.0, 2.0),
    n: int = 12,
    apply_temperature: Callable | None = None,
):
    """The top-n tokens' probabilities at several temperatures (same tokens in every group)."""
    apply_temperature = apply_temperature or (lambda x, t: x / t)
    base = _probs(logits)
    top = np.argsort(-base)[:n]
    fig, ax = plt.subplots(figsize=(10, 3.8))
    width = 0.8 / len(temperatures)
    for i, t in enumerate(temperatures):
        p = _probs(apply_temperature(logits, t))
        ax.bar(
            np.arange(n) + (i - (len(temperatures) - 1) / 2) * width,
            p[top],
            width,
            label=f"T = {t} (top-{n} hold {p[top].sum():.0%})",
        )
    ax.set_xticks(np.arange(n), [show_token(s) for s in token_strings(top.tolist())], rotation=45, ha="right")
    ax.set_xlabel("candidate next token (ranked at T = 1)")
    ax.set_ylabel("probability")
    ax.legend()
    _title(ax, temperature_verdict(logits, temperatures, apply_temperature), fontsize="medium")
    fig.tight_layout()
    return fig


def temperature_verdict(logits: torch.Tensor, temperatures, apply_temperature: Callable) -> str:
    """What the temperatures did to this distribution, measured: the top token's probability at each T,
    and whether the order of the tokens stayed the same."""
    orders = [np.argsort(-apply_temperature(logits, t).float().cpu().numpy(), kind="stable") for t in temperatures]
    same_order = all(np.array_equal(order, orders[0]) for order in orders)
    top1 = ", ".join(f"{_probs(apply_temperature(logits, t)).max():.0%} at T = {t}" for t in temperatures)
    return f"Temperature {'reshapes, never reorders' if same_order else 'reorders'}: the top token holds {top1}"


def cut_plots(
    panels: Sequence[tuple[str, torch.Tensor]],
    top_k_filter: Callable,
    top_p_filter: Callable,
    k: int = 10,
    p: float = 0.9,
):
    """For each prompt: top-k's cut (left column) and top-p's cumulative-sum cut (right column) on the
    sorted distribution; the kept tokens are shaded and their count and mass printed."""
    fig, axes = plt.subplots(len(panels), 2, figsize=(11, 3.3 * len(panels)), squeeze=False)
    for row, (prompt, logits) in enumerate(panels):
        probs = _probs(logits)
        order = np.argsort(-probs)
        sorted_p = probs[order]
        ranks = np.arange(1, len(probs) + 1)
        m = len(probs)
        for col, (name, filt) in enumerate(
            ((f"top-k, k = {k}", lambda x: top_k_filter(x, k)), (f"top-p, p = {p}", lambda x: top_p_filter(x, p)))
        ):
            ax = axes[row, col]
            kept = torch.isfinite(filt(logits)).cpu().numpy()[order]
            n_kept, mass = int(kept.sum()), float(sorted_p[kept].sum())
            ax.loglog(ranks[:m], sorted_p[:m], color="grey", lw=1)
            ax.fill_between(
                ranks[:m],
                sorted_p[:m],
                1e-12,
                where=kept[:m],
                color="tab:green",
                alpha=0.5,
                label=f"kept: {n_kept:,} tokens, {mass:.0%} of the mass",
            )
            ax.axvline(n_kept, color="tab:green", lw=1)
            ax.set_ylim(max(sorted_p[m - 1], 1e-9), 1.5)
            ax.set_xlabel("rank")
            ax.set_ylabel("probability")
            if col == 1:
                twin = ax.twinx()
                twin.semilogx(ranks[:m], np.cumsum(sorted_p)[:m], color="tab:orange", lw=1.2)
                twin.axhline(p, color="tab:orange", ls="--", lw=1)
                twin.set_ylim(0, 1.02)
                twin.set_ylabel("cumulative probability", color="tab:orange")
            ax.legend(loc="lower left", fontsize="small")
            _title(ax, f"{name} on “…{prompt[-28:]}”", fontsize="medium")
    _suptitle(fig, cut_verdict(panels, top_k_filter, top_p_filter, k, p), fontsize="medium")
    fig.tight_layout()
    return fig


def kept_counts(logits: torch.Tensor, top_k_filter: Callable, top_p_filter: Callable, k: int, p: float):
    """How many tokens top-k (k) and top-p (p) keep of one distribution: (top-k's, top-p's)."""
    return tuple(int(torch.isfinite(cut).sum()) for cut in (top_k_filter(logits, k), top_p_filter(logits, p)))


def cut_verdict(panels, top_k_filter: Callable, top_p_filter: Callable, k: int = 10, p: float = 0.9) -> str:
    """What the cuts did to each prompt's distribution, measured: whether top-p kept fewer tokens than top-k on
    one prompt and more on another (it adapts to the shape), with the counts."""
    kept = [kept_counts(logits, top_k_filter, top_p_filter, k, p) for _, logits in panels]
    listed = "; ".join(
        f"after “…{prompt[-24:]}” top-k keeps {n_k:,}, top-p {n_p:,}" for (prompt, _), (n_k, n_p) in zip(panels, kept)
    )
    if any(n_p < n_k for n_k, n_p in kept) and any(n_p > n_k for n_k, n_p in kept):
        return f"Top-p (p = {p}) adapts to the shape, top-k (k = {k}) does not: {listed}"
    if all(n_p == n_k for n_k, n_p in kept):
        return f"Top-p (p = {p}) and top-k (k = {k}) keep as many tokens here: {listed}"
    more = all(n_p >= n_k for n_k, n_p in kept)
    return (
        f"Top-p (p = {p}) keeps {'more' if more else 'fewer'} tokens than top-k (k = {k}) after each prompt: {listed}"
    )


def repetition_verdict(fractions: dict[str, float], n: int = 4, loop: float = 0.5) -> str:
    """One sentence from each strategy's fraction of repeated n-grams: `loop` or more is called a loop."""
    listed = ", ".join(f"{name} {f:.0%}" + (" (a loop)" if f >= loop else "") for name, f in fractions.items())
    return f"Share of repeated {n}-grams in each continuation: {listed}."


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


def penalty_example(names: Sequence[str], logits, new_logits, k, probs, new_probs):
    """The worked penalty example: logits and probabilities before and after, per token."""
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, before, after, label in (
        (axes[0], logits, new_logits, "logit"),
        (axes[1], probs, new_probs, "probability"),
    ):
        ax.bar(x - 0.2, np.asarray(before), 0.4, label="before")
        ax.bar(x + 0.2, np.asarray(after), 0.4, label="after penalties")
        ax.set_xticks(x, [f"{n}\nk={float(kk):.1f}" for n, kk in zip(names, k)])
        ax.set_xlabel("token (and its multiplier k)")
        ax.set_ylabel(label)
        ax.legend(fontsize="small")
    loss = np.asarray(probs) - np.asarray(new_probs)
    most = int(np.argmax(loss))
    _suptitle(
        fig,
        f"Penalties divide each logit by k: '{names[most]}' (k = {float(k[most]):.1f}) loses the most probability, "
        f"{float(loss[most]):.3f}",
    )
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ 02: KV cache


def kv_timing(lengths, with_cache_ms, without_cache_ms, name: str = "the model"):
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(lengths, without_cache_ms, "o-", label="without cache: re-run the whole context")
    ax.plot(lengths, with_cache_ms, "o-", label="with KV cache: one new position")
    ax.set_xlabel("context length (tokens already there)")
    ax.set_ylabel("time for the next token (ms)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    grow = (without_cache_ms[-1] / without_cache_ms[0], with_cache_ms[-1] / with_cache_ms[0])
    _title(
        ax,
        f"{name}\nfrom {lengths[0]} to {lengths[-1]} tokens of context the next token costs {grow[0]:.1f}x more "
        f"without the cache, {grow[1]:.1f}x with it",
        fontsize="medium",
    )
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ 03: inside the model


def gltr_text(token_strings: Sequence[str], ranks, title: str, width: float = 11.0, fontsize: float = 10.0):
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
    height = row * len(lines) + 1.0
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    for i, line in enumerate(lines):
        top = 1 - (0.45 + i * row) / height
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
    ax.legend(handles, labels, loc="lower center", ncol=4, frameon=False, bbox_to_anchor=(0.5, 0.0))
    _suptitle(fig, title, y=1 - 0.08 / height, fontsize="large", va="top")
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
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    names = list(results)
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        ranks, bits = results[name]
        fr = gltr_buckets(ranks)
        axes[0].bar(np.arange(4) + (i - (len(names) - 1) / 2) * width, list(fr.values()), width, label=name)
        axes[1].hist(
            bits.numpy(), bins=20, range=(0, 20), histtype="step", lw=2, label=f"{name}: mean {bits.mean():.1f} bits"
        )
    axes[0].set_xticks(np.arange(4), [f"rank {lo}-{hi if hi != math.inf else '∞'}" for _, lo, hi in GLTR_BUCKETS])
    axes[0].set_ylabel("fraction of tokens")
    axes[0].set_xlabel("GLTR bucket")
    axes[0].legend(fontsize="small")
    axes[1].set_xlabel("surprisal −log₂ p (bits)")
    axes[1].set_ylabel("tokens")
    axes[1].legend(fontsize="small")
    top10 = ", ".join(f"{name} {gltr_buckets(r)['top 10']:.0%}" for name, (r, _) in results.items())
    _suptitle(fig, f"Share of tokens in the model's own top 10: {top10}", fontsize="large")
    fig.tight_layout()
    return fig


# How the logit-lens figures tell the blocks apart: each segment (the change one block makes) is shaded and marked by
# the kind of block that made it.
SEGMENT_STYLE = {"attn": ("tab:blue", "o", "attention block"), "mlp": ("tab:orange", "s", "MLP block")}


def segment_kind(site: str) -> str:
    """'attn' or 'mlp' for a logit-lens site ('attn 3', 'mlp 3'); ValueError for any other site."""
    kind = site.split()[0]
    if kind not in SEGMENT_STYLE:
        raise ValueError(f"expected a site 'attn N' or 'mlp N', got {site!r}")
    return kind


def _mark_segments(ax, sites: Sequence[str]) -> None:
    """Shade the segment leading to each site by the kind of block that made it (legend entries once)."""
    for s, site in enumerate(sites):
        color, _, label = SEGMENT_STYLE[segment_kind(site)]
        ax.axvspan(s - 0.5, s + 0.5, color=color, alpha=0.08, lw=0, label=label if s < 2 else None)


def standardized(logits: torch.Tensor) -> torch.Tensor:
    """Each stage's logits minus their mean, over their standard deviation (last dimension): the shape of each
    stage's distribution of logits, comparable across stages whose scales differ."""
    logits = torch.as_tensor(logits).float()
    return (logits - logits.mean(-1, keepdim=True)) / logits.std(-1, keepdim=True).clamp_min(1e-12)


def logit_evolution(sites: Sequence[str], token_labels: Sequence[str], logits, ranks, all_logits, context: str):
    """The three 'Logit Evolution' figures in one, for one position: the final top tokens' logits (left) and
    ranks (middle) after every attention (circles, blue band) and MLP (squares, orange band) block, and the
    histogram of all logits at each stage, standardised per stage (right), with the final top token marked."""
    logits, ranks, all_logits = (torch.as_tensor(t).cpu() for t in (logits, ranks, all_logits))
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.8))
    x = np.arange(len(sites))
    kinds = [segment_kind(site) for site in sites]
    for ax, values in ((axes[0], logits), (axes[1], ranks)):
        _mark_segments(ax, sites)
        for j, label in enumerate(token_labels):
            line = ax.plot(x, values[:, j], "-", lw=1.2, label=show_token(label))[0]
            for kind, (_, marker, _) in SEGMENT_STYLE.items():
                at = [s for s in x if kinds[s] == kind]
                ax.plot(at, values[at, j], marker, color=line.get_color(), ms=4, ls="none")
    axes[0].set_ylabel("logit")
    _title(axes[0], f"Logits of the final top {len(token_labels)} tokens", fontsize="medium")
    axes[1].set_yscale("log")
    axes[1].invert_yaxis()
    axes[1].set_ylabel("rank (1 = top, log scale)")
    settled = len(sites) - 1
    while settled > 0 and int(ranks[settled - 1, 0]) == 1:
        settled -= 1
    _title(
        axes[1], f"Their ranks: “{show_token(token_labels[0])}” is top-1 from {sites[settled]} on", fontsize="medium"
    )
    for ax in axes[:2]:
        _label_sites(ax, sites)
        ax.set_xlabel("residual stream after block")
        ax.set_xlim(-0.5, len(sites) - 0.5)
    z = standardized(all_logits)
    top = int(torch.as_tensor(all_logits)[-1].argmax())
    cmap = plt.get_cmap("viridis", len(sites))
    lo, hi = float(z.min()), float(z.max())
    for s in range(len(sites)):
        axes[2].hist(
            z[s].numpy(),
            bins=60,
            range=(lo, hi),
            density=True,
            histtype="step",
            color=cmap(s),
            ls="-" if kinds[s] == "attn" else "--",
        )
        axes[2].plot(z[s, top], 2e-5, SEGMENT_STYLE[kinds[s]][1], color=cmap(s), ms=6)
    axes[2].set_yscale("log")
    axes[2].set_ylim(bottom=1e-5)
    axes[2].set_xlabel("logit, standardised per stage\n(dashed: after an MLP block)")
    axes[2].set_ylabel("density")
    stages = fig.colorbar(
        plt.cm.ScalarMappable(norm=plt.Normalize(-0.5, len(sites) - 0.5), cmap=cmap), ax=axes[2], pad=0.02
    )
    stages.set_ticks(range(len(sites)), labels=sites)
    stages.ax.tick_params(labelsize="small")
    _title(
        axes[2],
        f"“{show_token(token_labels[0])}” (markers): {z[0, top]:+.1f} → {z[-1, top]:+.1f} std from the mean",
        fontsize="medium",
    )
    tokens = [line for line in axes[0].get_lines() if not line.get_label().startswith("_")]
    segments = list(axes[0].patches[: min(2, len(axes[0].patches))])
    fig.legend(
        tokens + segments,
        [h.get_label() for h in tokens + segments],
        loc="lower center",
        ncol=len(tokens) + len(segments),
        fontsize="small",
        frameon=False,
    )
    _suptitle(
        fig,
        f"Logit lens after “…{context[-50:]}”: the prediction if the model stopped after each block",
        fontsize="large",
    )
    fig.tight_layout(rect=(0, 0.07, 1, 1))  # room for the legend below
    return fig


def kv_substitution_verdict(
    late: Sequence[int], d_true: float, d_prev: float, d_rand: float, tolerance: float = 0.01
) -> str:
    """What substituting the late layers' keys and values did, from the changes in loss (nats per token) with
    the true next token, the previous token and a random token as the source. Changes within `tolerance`
    count as none."""
    layers = ", ".join(map(str, late))
    sentence = (
        f"Replacing the late layers' ({layers}) keys and values at every earlier position by those computed from "
        f"the true next token changes the loss by {d_true:+.3f} nats; the previous-token control by {d_prev:+.3f}, "
        f"the random-token control by {d_rand:+.3f}. "
    )
    if d_true < -tolerance:
        return sentence + (
            "Handing the late layers the true next token *helps*: later positions read the model's guess there "
            "and profit from a better one."
        )
    if d_true > tolerance:
        return sentence + (
            "The substitution hurts: later positions rely on what the late layers computed from the token at t "
            "itself, not only on a guess of t + 1."
        )
    sentence += "Later positions lose nothing when the late layers at position t carry the real token t + 1"
    if d_rand <= tolerance:
        return sentence + (
            ", but a random token costs them little too: later positions barely read these layers' keys and "
            "values here, so the experiment says little."
        )
    sentence += ", while a random token hurts. "
    if abs(d_prev) <= tolerance:
        sentence += (
            "But a one-step shift the *other* way costs nothing either: this model barely uses which token sits "
            "at which earlier position in those layers, so the experiment cannot tell 'the guess' from 'the "
            "context as a bag of tokens' here."
        )
    return sentence.strip()


def embedding_verdict(
    unchanged: float, true_next: float, random_next: float, from_layer: int, n_layer: int, tolerance: float = 0.01
) -> str:
    """What replacing the late activations by the next token's embedding did (losses in nats per token: the
    unchanged model's, with the true next token's embedding, with a random token's), in one paragraph. Losses
    within `tolerance` of each other count as equal."""
    layers = f"layer {from_layer}" if from_layer == n_layer - 1 else f"layers {from_layer}-{n_layer - 1}"
    sentence = (
        f"With every earlier position's residual replaced, where it enters layer {from_layer}, by the embedding of "
        f"the token that follows it ({layers} then compute that position's keys and values), the validation loss "
        f"is {true_next:.3f} nats per token ({true_next - unchanged:+.3f}); with a random token's embedding "
        f"{random_next:.3f} ({random_next - unchanged:+.3f}). "
    )
    if true_next <= unchanged + tolerance:
        return sentence + (
            "Later positions lose nothing: as far as this test can tell, what they read from the late layers of "
            "earlier positions is the next token."
        )
    if true_next < random_next - tolerance:
        return sentence + (
            "The true next token serves later positions better than a random one, but worse than what the model "
            "computed there: the late layers carry more than a guess of the next token."
        )
    return sentence + (
        "The true next token serves later positions no better than a random one: what they read from the late "
        "layers is not the identity of the next token."
    )


def head_kl_heatmap(table: torch.Tensor):
    table = torch.as_tensor(table).cpu()
    fig, ax = plt.subplots(figsize=(max(6.0, 2.0 + 0.9 * table.size(1)), 1.3 + 0.6 * table.size(0)))
    im = ax.imshow(table.numpy(), cmap="magma_r")
    for (layer, head), value in np.ndenumerate(table.numpy()):
        ax.text(
            head,
            layer,
            f"{value:.3f}",
            ha="center",
            va="center",
            fontsize="small",
            color="white" if value > 0.6 * float(table.max()) else "black",
        )
    ax.set_xticks(range(table.size(1)))
    ax.set_yticks(range(table.size(0)))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    fig.colorbar(im, ax=ax, label="KL(original ‖ ablated), nats")
    layer, head = divmod(int(table.argmax()), table.size(1))
    share = float(table.max() / table.sum())
    _title(
        ax,
        f"Zeroing one head before c_proj: layer {layer} head {head} matters most\n"
        f"({share:.0%} of the summed KL over all {table.numel()} heads)",
        fontsize="medium",
    )
    fig.tight_layout()
    return fig


def lens_rank_curves(sites: Sequence[str], current: torch.Tensor, following: torch.Tensor):
    """Per stage, how often the current token and the next token are the lens's top-1, and their median rank."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    x = np.arange(len(sites))
    for ranks, label in ((current, "current token t"), (following, "next token t + 1")):
        r = ranks.flatten(1).float()
        axes[0].plot(x, (r == 1).float().mean(1).numpy(), "o-", label=label)
        axes[1].plot(x, r.median(1).values.numpy(), "o-", label=label)
    axes[0].set_ylabel("fraction of positions where it is top-1")
    axes[1].set_ylabel("median rank (log scale)")
    axes[1].set_yscale("log")
    axes[1].invert_yaxis()
    for ax in axes:
        _label_sites(ax, sites)
        ax.set_xlabel("residual stream after block")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    top1 = [
        ((r.flatten() == 1).float().mean().item(), (f.flatten() == 1).float().mean().item())
        for r, f in zip(current, following)
    ]
    crossing = next((site for site, (c, n) in zip(sites, top1) if n > c), None)
    _suptitle(
        fig,
        "Logit lens over validation text: position t predicts the next token more often than it shows its own "
        + (f"from {crossing} on" if crossing else "at no stage"),
        fontsize="large",
    )
    fig.tight_layout()
    return fig


def entropy_histograms(entropies: dict[str, torch.Tensor], vocab_size: int):
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    for name, h in entropies.items():
        h = torch.as_tensor(h).flatten().numpy()
        ax.hist(h, bins=40, range=(0, math.log2(vocab_size)), alpha=0.5, label=f"{name}: mean {h.mean():.1f} bits")
    ax.axvline(math.log2(vocab_size), color="k", ls=":", lw=1)
    ax.set_xlabel(f"entropy of the next-token distribution (bits; uniform = {math.log2(vocab_size):.1f})")
    ax.set_ylabel("positions")
    ax.legend(fontsize="small")
    means = ", ".join(f"{2 ** torch.as_tensor(h).float().mean().item():.0f}" for h in entropies.values())
    _title(ax, f"Mean entropy ≈ as uncertain as a choice among {means} equally likely tokens (2^H)", fontsize="medium")
    fig.tight_layout()
    return fig


def sampling_panel(
    logits: torch.Tensor,
    history,
    token_strings: Callable,
    fns: dict[str, Callable],
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    penalty: float = 1.0,
    n: int = 30,
    title: str = "",
):
    """One state of the interactive panel: the real next-token distribution after penalties (frequency and
    presence both = `penalty`, over `history`), temperature, top-k (0 = off) and top-p, in that order, with
    the solutions' functions in `fns`. Bars: the `n` most likely tokens after penalties and temperature;
    green = kept, grey = cut. The title gives the kept set's size and the mass it had before the cut."""
    x = fns["apply_penalties"](logits, history, frequency_penalty=penalty, presence_penalty=penalty)
    x = fns["apply_temperature"](x, temperature)
    before = torch.softmax(x.float(), -1)
    kept_logits = x
    if top_k:
        kept_logits = fns["top_k_filter"](kept_logits, int(top_k))
    if top_p < 1.0:
        kept_logits = fns["top_p_filter"](kept_logits, float(top_p))
    kept = torch.isfinite(kept_logits)
    after = torch.softmax(kept_logits.float(), -1)
    order = before.argsort(descending=True)[:n]
    fig, ax = plt.subplots(figsize=(10, 3.6))
    colors = ["tab:green" if kept[i] else "lightgrey" for i in order.tolist()]
    ax.bar(range(len(order)), before[order].numpy(), color=colors, label="probability before the cut")
    ax.plot(range(len(order)), after[order].numpy(), "k.", label="probability when sampling (renormalised)")
    ax.set_xticks(
        range(len(order)),
        [show_token(s) for s in token_strings(order.tolist())],
        rotation=60,
        ha="right",
        fontsize="small",
    )
    ax.set_xlabel(f"the {len(order)} most likely tokens (green: kept, grey: cut)")
    ax.set_ylabel("probability")
    ax.legend(fontsize="small")
    _title(
        ax,
        f"{title}T={temperature:g}, top-k={top_k or 'off'}, top-p={top_p:g}, penalty={penalty:g}: "
        f"kept {int(kept.sum()):,} of {len(kept):,} tokens holding {float(before[kept].sum()):.0%} of the mass",
        fontsize="medium",
    )
    fig.tight_layout()
    return fig


def wikitext_corpus(dataset: str = "wikitext-2-v1"):
    """WikiText from $COURSE_DATA_DIR, else from the Hugging Face hub (online). Raises LectureStop saying
    what went wrong."""
    from course.data import load_corpus
    from course.errors import UserError

    try:
        return load_corpus(dataset)
    except (UserError, ImportError, OSError) as e:
        raise LectureStop(
            f"WikiText not found: set COURSE_DATA_DIR to a folder with the WikiText files ({e})"
        ) from None


def repeated_ngram_fraction(ids: Sequence[int], n: int = 4) -> float:
    """The fraction of n-grams in `ids` that already occurred earlier in it: 0 for fresh text, near 1 in a loop."""
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    seen, repeats = set(), 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / max(1, len(grams))


def widget_panel(draw: Callable, **controls):
    """Sliders (ipywidgets) that redraw `draw(**values) -> Figure` on every change.

    The figure goes into an Output widget through its `outputs` trait, not by capturing the cell's output:
    capturing makes headless runners (nbclient, `nbconvert --execute`) send comm messages on the shell
    channel while waiting for the cell's reply, which can stall them until their timeout
    (jupyter/nbclient#312)."""
    import ipywidgets as widgets
    from IPython.display import display

    out = widgets.Output()

    def redraw(_change=None):
        fig = draw(**{name: control.value for name, control in controls.items()})
        plt.close(fig)  # shown once, through the Output widget
        out.outputs = ()
        out.append_display_data(fig)

    for control in controls.values():
        control.observe(redraw, names="value")
    redraw()
    panel = widgets.VBox([widgets.HBox(list(controls.values())[:3]), widgets.HBox(list(controls.values())[3:]), out])
    display(panel)
    return panel


# ------------------------------------------------------------------ slides

# The web libraries nbconvert's reveal.js template loads, as npm packages, and the files of each a deck needs.
# A deck exported beside a folder `assets/` holding them works offline; without it, it loads them from the web.
SLIDE_ASSETS = {
    "reveal.js@4.0.2": ("dist/", "plugin/notes/"),
    "requirejs@2.3.7": ("require.js",),
    "jquery@2.2.4": ("dist/jquery.min.js",),
}
ASSETS = "assets"
# Hidden from the slides: the code of cells tagged `remove-input` (their output stays), whole `remove-cell` cells.
HIDE_INPUT, HIDE_CELL = "remove-input", "remove-cell"
# A cell tagged `figure:NAME` draws a figure the README shows: `--figures DIR` writes its image to DIR/NAME.png.
FIGURE_TAG = "figure:"


def slides_path(notebook: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / f"{Path(notebook).stem}.slides.html"


def fetch_slide_assets(out_dir: str | os.PathLike) -> Path:
    """Put the files of SLIDE_ASSETS in `out_dir/assets/<package>/`, fetched with `npm pack` (the npm
    registry must be reachable), so that the decks in `out_dir` work without network. Returns the folder."""
    import shutil
    import subprocess
    import tarfile
    import tempfile

    from course.errors import UserError
    from course.kit import atomic_folder

    npm = shutil.which("npm")
    if npm is None:
        raise UserError("npm not found: install Node.js to fetch reveal.js for offline decks")
    target = Path(out_dir) / ASSETS
    with tempfile.TemporaryDirectory() as download, atomic_folder(target) as staging:
        result = subprocess.run(
            [npm, "pack", "--silent", *SLIDE_ASSETS], cwd=download, capture_output=True, text=True, timeout=300
        )
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise UserError(f"npm pack {' '.join(SLIDE_ASSETS)} failed: {last}")
        for spec, wanted in SLIDE_ASSETS.items():
            name, version = spec.rsplit("@", 1)
            with tarfile.open(Path(download) / f"{name}-{version}.tgz") as archive:
                for member in archive.getmembers():
                    inner = member.name.removeprefix("package/")
                    if not (member.isfile() and inner.startswith(wanted)):
                        continue
                    if Path(inner).is_absolute() or ".." in Path(inner).parts:
                        raise UserError(f"npm pack {spec}: the archive holds an unsafe path {member.name!r}")
                    # regular files only, written by hand: tarfile's extraction filters need Python 3.11.4 or later
                    destination = Path(staging, name, inner)
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    destination.write_bytes(archive.extractfile(member).read())
    return target


def provide_slide_assets(out_dir: str | os.PathLike, fetch: bool = True) -> Path:
    """`out_dir/assets` for offline decks: kept if there, else copied from the kit's lectures/slides/assets (made
    by `make slides`), else (with `fetch`) fetched with npm. UserError when there is none."""
    import shutil

    from course.errors import UserError

    target = Path(out_dir) / ASSETS
    kit_copy = ROOT / "lectures" / "slides" / ASSETS
    if target.is_dir():
        return target
    if kit_copy.is_dir() and kit_copy.resolve() != target.resolve():
        from course.kit import atomic_folder

        with atomic_folder(target) as staging:
            shutil.copytree(kit_copy, staging, dirs_exist_ok=True)
        return target
    if not fetch:
        raise UserError(f"no reveal.js in {kit_copy}: `python -m course.lectures` (no notebook) fetches it with npm")
    return fetch_slide_assets(out_dir)


def slides_html(notebook, assets: str | None = None) -> str:
    """An executed notebook (a NotebookNode) as a reveal.js deck, with the code of `remove-input` cells and the
    whole of `remove-cell` cells left out. `assets`: a URL or relative path to a folder made by
    `fetch_slide_assets` (else the libraries are loaded from the web)."""
    from nbconvert import SlidesExporter
    from traitlets.config import Config

    config = Config()
    config.TagRemovePreprocessor.enabled = True
    config.TagRemovePreprocessor.remove_input_tags = {HIDE_INPUT}
    config.TagRemovePreprocessor.remove_cell_tags = {HIDE_CELL}
    config.SlidesExporter.reveal_scroll = True  # a slide taller than the screen scrolls instead of being cut off
    config.SlidesExporter.reveal_number = "c/t"  # slide numbers, to refer to in questions
    config.SlidesExporter.exclude_input_prompt = True  # no "In [3]:" beside the code that stays
    config.SlidesExporter.exclude_output_prompt = True
    if assets is not None:
        config.SlidesExporter.reveal_url_prefix = f"{assets}/reveal.js"
        config.SlidesExporter.require_js_url = f"{assets}/requirejs/require.js"
        config.SlidesExporter.jquery_url = f"{assets}/jquery/dist/jquery.min.js"
    body, _ = SlidesExporter(config=config).from_notebook_node(notebook)
    return body


def execute_lecture(notebook: str | os.PathLike, timeout: int = 600):
    """Run a lecture notebook top to bottom in a fresh kernel (in its own folder) and return it with its outputs.
    Raises UserError naming the cell when one fails (a missing checkpoint: the lecture's own message)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from course.errors import UserError

    path = Path(notebook)
    try:
        nb = nbformat.read(path, as_version=4)
    except (OSError, ValueError) as e:  # missing file, not JSON, not a notebook
        raise UserError(f"expected a Jupyter notebook at {path} ({e.__class__.__name__})") from None
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    env = dict(os.environ, MPLBACKEND="module://matplotlib_inline.backend_inline")
    try:
        client.execute(env=env)
    except CellExecutionError as e:
        raise UserError(f"{path.name} stopped in a cell: {e.ename}: {e.evalue}") from None
    return nb


def export_slides(notebook: str | os.PathLike, out_dir: str | os.PathLike, timeout: int = 600):
    """Execute the lecture `notebook` and write its deck to `out_dir/<name>.slides.html` (atomically). The deck
    uses the libraries in `out_dir/assets` when they are there (see `fetch_slide_assets`). Returns
    `(deck path, executed notebook)`."""
    from course.kit import write_atomically

    nb = execute_lecture(notebook, timeout)
    local = (Path(out_dir) / ASSETS / "reveal.js" / "dist" / "reveal.js").is_file()
    deck = slides_path(notebook, out_dir)
    write_atomically(deck, slides_html(nb, ASSETS if local else None))
    return deck, nb


def tagged_figures(nb) -> dict[str, bytes]:
    """{NAME: PNG bytes} of an executed notebook's cells tagged `figure:NAME` (each cell's last image)."""
    import base64

    from course.errors import UserError

    figures = {}
    for index, cell in enumerate(nb.cells):
        for tag in cell.get("metadata", {}).get("tags", []):
            if not tag.startswith(FIGURE_TAG):
                continue
            images = [out["data"]["image/png"] for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]
            if not images:
                raise UserError(f"cell {index} is tagged {tag} but drew no image")
            figures[tag.removeprefix(FIGURE_TAG)] = base64.b64decode(images[-1])
    return figures


def make_parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m course.lectures", description="Execute lecture notebooks and export them as reveal.js decks."
    )
    parser.add_argument("notebooks", nargs="*", help="lecture notebooks (.ipynb)")
    parser.add_argument("--out", default=str(ROOT / "lectures" / "slides"), help="folder for the decks")
    parser.add_argument(
        "--online", action="store_true", help="load reveal.js from the web instead of fetching it next to the decks"
    )
    parser.add_argument("--figures", metavar="DIR", help="also write the images of cells tagged figure:NAME here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m course.lectures [--out DIR] [--figures DIR] [NOTEBOOK...]` (what `make slides` and
    `make figures` run); without a notebook it only fetches reveal.js into DIR/assets."""
    import sys

    from course.errors import UserError
    from course.kit import write_atomically

    args = make_parser().parse_args(argv)
    out = Path(args.out)
    try:
        missing = [notebook for notebook in args.notebooks if not Path(notebook).is_file()]
        if missing:
            raise UserError(f"expected a Jupyter notebook at {missing[0]}, found none")
        if not args.online:
            try:
                print(f"reveal.js for offline decks: {provide_slide_assets(out)}")
            except UserError as e:
                print(f"{e}; the decks will load reveal.js from the web", file=sys.stderr)
        for notebook in args.notebooks:
            deck, executed = export_slides(notebook, out)
            print(f"wrote {deck}")
            for name, png in tagged_figures(executed).items() if args.figures else ():
                figure = Path(args.figures) / f"{name}.png"
                write_atomically(figure, png)
                print(f"wrote {figure}")
    except UserError as e:
        print(f"python -m course.lectures: error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
