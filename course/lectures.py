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


def show_token(token: str) -> str:
    """A token string with its whitespace made visible, for axis labels."""
    return token.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥") or "∅"


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
                fontsize=8,
                xytext=(6, -4 - 9 * i),
                textcoords="offset points",
            )
        top1, top10 = p[order[0]], p[order[:10]].sum()
        ax.set_title(f"“…{prompt[-40:]}”\ntop-1 {top1:.0%}, top-10 {top10:.0%} of the mass", fontsize=10)
        ax.set_xlabel(f"rank of the token (all {len(p):,} tokens)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("probability")
    fig.suptitle(spread_verdict(panels))
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
    ax.set_title(temperature_verdict(logits, temperatures, apply_temperature), fontsize=10)
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
            ax.legend(loc="lower left", fontsize=8)
            ax.set_title(f"{name} on “…{prompt[-28:]}”", fontsize=10)
    kept = [
        [int(torch.isfinite(f(logits)).sum()) for f in (lambda x: top_k_filter(x, k), lambda x: top_p_filter(x, p))]
        for _, logits in panels
    ]
    fig.suptitle(
        f"top-k (k = {k}) keeps {' and '.join(f'{n:,}' for n, _ in kept)} tokens; "
        f"top-p (p = {p}) keeps {' and '.join(f'{n:,}' for _, n in kept)}"
    )
    fig.tight_layout()
    return fig


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
        ax.legend(fontsize=8)
    loss = np.asarray(probs) - np.asarray(new_probs)
    most = int(np.argmax(loss))
    fig.suptitle(
        f"Penalties divide each logit by k: '{names[most]}' (k = {float(k[most]):.1f}) loses the most probability, "
        f"{float(loss[most]):.3f}"
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
    ax.set_title(
        f"{name}\nfrom {lengths[0]} to {lengths[-1]} tokens of context the next token costs {grow[0]:.1f}x more "
        f"without the cache, {grow[1]:.1f}x with it",
        fontsize=10,
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
    fig.suptitle(title, y=1 - 0.08 / height, fontsize=11, va="top")
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
    axes[0].legend(fontsize=8)
    axes[1].set_xlabel("surprisal −log₂ p (bits)")
    axes[1].set_ylabel("tokens")
    axes[1].legend(fontsize=8)
    top10 = ", ".join(f"{name} {gltr_buckets(r)['top 10']:.0%}" for name, (r, _) in results.items())
    fig.suptitle(f"Share of tokens in the model's own top 10: {top10}", fontsize=11)
    fig.tight_layout()
    return fig


def logit_evolution(sites: Sequence[str], token_labels: Sequence[str], logits, ranks, all_logits, context: str):
    """The three 'Logit Evolution' figures in one: the final top tokens' logits (left) and ranks (middle)
    after every block, and the logit histogram at each stage (right)."""
    logits, ranks, all_logits = (torch.as_tensor(t).cpu() for t in (logits, ranks, all_logits))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    x = np.arange(len(sites))
    for j, label in enumerate(token_labels):
        axes[0].plot(x, logits[:, j], "o-", ms=3, label=show_token(label))
        axes[1].plot(x, ranks[:, j], "o-", ms=3, label=show_token(label))
    axes[0].set_ylabel("logit")
    axes[0].set_title(f"Logits of the final top {len(token_labels)} tokens", fontsize=10)
    axes[1].set_yscale("log")
    axes[1].invert_yaxis()
    axes[1].set_ylabel("rank (1 = top, log scale)")
    settled = len(sites) - 1
    while settled > 0 and int(ranks[settled - 1, 0]) == 1:
        settled -= 1
    axes[1].set_title(f"Their ranks: “{show_token(token_labels[0])}” is top-1 from {sites[settled]} on", fontsize=10)
    for ax in axes[:2]:
        _label_sites(ax, sites)
        ax.set_xlabel("residual stream after block")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, title="final top tokens", title_fontsize=8)
    cmap = plt.get_cmap("viridis")
    lo, hi = float(all_logits.min()), float(all_logits.max())
    for s in range(len(sites)):
        axes[2].hist(
            all_logits[s].numpy(),
            bins=80,
            range=(lo, hi),
            histtype="step",
            color=cmap(s / max(1, len(sites) - 1)),
            label=sites[s] if s in (0, len(sites) - 1) or len(sites) <= 8 else None,
        )
    axes[2].set_yscale("log")
    axes[2].set_xlabel("logit")
    axes[2].set_ylabel("tokens")
    axes[2].legend(fontsize=7, title="after block", title_fontsize=7)
    spread = all_logits.std(-1)
    axes[2].set_title(
        f"All {all_logits.size(-1):,} logits: spread (std) {spread[0]:.1f} after {sites[0]}, "
        f"{spread[-1]:.1f} after {sites[-1]}",
        fontsize=10,
    )
    fig.suptitle(
        f"Logit lens: what the model would predict after “…{context[-60:]}” if it stopped after each block", fontsize=11
    )
    fig.tight_layout()
    return fig


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
            fontsize=8,
            color="white" if value > 0.6 * float(table.max()) else "black",
        )
    ax.set_xticks(range(table.size(1)))
    ax.set_yticks(range(table.size(0)))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    fig.colorbar(im, ax=ax, label="KL(original ‖ ablated), nats")
    layer, head = divmod(int(table.argmax()), table.size(1))
    share = float(table.max() / table.sum())
    ax.set_title(
        f"Zeroing one head before c_proj: layer {layer} head {head} matters most\n"
        f"({share:.0%} of the summed KL over all {table.numel()} heads)",
        fontsize=10,
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
        ax.legend(fontsize=8)
    top1 = [
        ((r.flatten() == 1).float().mean().item(), (f.flatten() == 1).float().mean().item())
        for r, f in zip(current, following)
    ]
    crossing = next((site for site, (c, n) in zip(sites, top1) if n > c), None)
    fig.suptitle(
        "Logit lens over validation text: position t predicts the next token more often than it shows its own "
        + (f"from {crossing} on" if crossing else "at no stage"),
        fontsize=11,
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
    ax.legend(fontsize=8)
    means = ", ".join(f"{2 ** torch.as_tensor(h).float().mean().item():.0f}" for h in entropies.values())
    ax.set_title(f"Mean entropy ≈ as uncertain as a choice among {means} equally likely tokens (2^H)", fontsize=10)
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
        range(len(order)), [show_token(s) for s in token_strings(order.tolist())], rotation=60, ha="right", fontsize=8
    )
    ax.set_xlabel(f"the {len(order)} most likely tokens (green: kept, grey: cut)")
    ax.set_ylabel("probability")
    ax.legend(fontsize=8)
    ax.set_title(
        f"{title}T={temperature:g}, top-k={top_k or 'off'}, top-p={top_p:g}, penalty={penalty:g}: "
        f"kept {int(kept.sum()):,} of {len(kept):,} tokens holding {float(before[kept].sum()):.0%} of the mass",
        fontsize=10,
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
