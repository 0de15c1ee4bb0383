"""Lecture 03 (inside the model): the logit lens, the interventions, the entropy, and the verdicts of the experiments
on whether the late layers hold only a guess of the next token."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from course.lectures.style import (
    SLIDE_WIDTH_IN,
    SMALL_PT,
    label_sites,
    prompt_tail,
    set_suptitle,
    set_title,
    show_token,
)

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


def logit_evolution(sites: Sequence[str], token_labels: Sequence[str], logits, ranks, context: str):
    """Two of the three 'Logit Evolution' figures, for one position: the final top tokens' logits (left) and ranks
    (right) after every attention (circles, blue band) and MLP (squares, orange band) block."""
    logits, ranks = torch.as_tensor(logits).cpu(), torch.as_tensor(ranks).cpu()
    fig, axes = plt.subplots(1, 2, figsize=(SLIDE_WIDTH_IN, 5.0))
    x = np.arange(len(sites))
    kinds = [segment_kind(site) for site in sites]
    for ax, values in ((axes[0], logits), (axes[1], ranks)):
        _mark_segments(ax, sites)
        for j, label in enumerate(token_labels):
            line = ax.plot(x, values[:, j], "-", lw=1.2, label=show_token(label))[0]
            for kind, (_, marker, _) in SEGMENT_STYLE.items():
                at = [s for s in x if kinds[s] == kind]
                ax.plot(at, values[at, j], marker, color=line.get_color(), ms=4, ls="none")
        label_sites(ax, sites)
        ax.set_xlim(-0.5, len(sites) - 0.5)
    axes[0].set_ylabel("logit")
    set_title(axes[0], f"Logits of the final top {len(token_labels)}")
    axes[1].set_yscale("log")
    axes[1].invert_yaxis()
    axes[1].set_ylabel("rank (1 = top)")
    settled = len(sites) - 1
    while settled > 0 and int(ranks[settled - 1, 0]) == 1:
        settled -= 1
    set_title(axes[1], f"“{show_token(token_labels[0])}” is top-1 from {sites[settled]} on")
    tokens = [line for line in axes[0].get_lines() if not line.get_label().startswith("_")]
    segments = list(axes[0].patches[: min(2, len(axes[0].patches))])
    fig.legend(
        tokens + segments,
        [h.get_label() for h in tokens + segments],
        loc="lower center",
        ncol=4,
        fontsize=SMALL_PT,
        frameon=False,
    )
    set_suptitle(fig, f"Logit lens after “{prompt_tail(context, 28)}”: the prediction after each block")
    fig.tight_layout(rect=(0, 0.14, 1, 1))  # room for the legend below
    return fig


def logit_histograms(sites: Sequence[str], token_label: str, all_logits):
    """The third 'Logit Evolution' figure, for one position: the histogram of all logits at each stage (after each
    block), standardised per stage, with the final top token (`token_label`) marked."""
    all_logits = torch.as_tensor(all_logits).cpu()
    kinds = [segment_kind(site) for site in sites]
    fig, ax = plt.subplots(figsize=(SLIDE_WIDTH_IN, 4.6))
    z = standardized(all_logits)
    top = int(all_logits[-1].argmax())
    cmap = plt.get_cmap("viridis", len(sites))
    lo, hi = float(z.min()), float(z.max())
    for s in range(len(sites)):
        ax.hist(
            z[s].numpy(),
            bins=60,
            range=(lo, hi),
            density=True,
            histtype="step",
            color=cmap(s),
            ls="-" if kinds[s] == "attn" else "--",
        )
        ax.plot(z[s, top], 2e-5, SEGMENT_STYLE[kinds[s]][1], color=cmap(s), ms=6)
    ax.set_yscale("log")
    ax.set_ylim(bottom=1e-5)
    ax.set_xlabel("logit, standardised per stage (dashed: after an MLP block)")
    ax.set_ylabel("density")
    stages = fig.colorbar(plt.cm.ScalarMappable(norm=plt.Normalize(-0.5, len(sites) - 0.5), cmap=cmap), ax=ax, pad=0.02)
    stages.set_ticks(range(len(sites)), labels=sites)
    stages.ax.tick_params(labelsize=SMALL_PT)
    set_title(
        ax,
        f"All logits after each block; “{show_token(token_label)}” (markers) goes from {z[0, top]:+.1f} to "
        f"{z[-1, top]:+.1f} std from the mean",
    )
    fig.tight_layout()
    return fig


def lens_rank_curves(sites: Sequence[str], current: torch.Tensor, following: torch.Tensor):
    """Per stage, how often the current token and the next token are the lens's top-1, and their median rank."""
    fig, axes = plt.subplots(1, 2, figsize=(SLIDE_WIDTH_IN, 4.4))
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
        label_sites(ax, sites)
        ax.set_xlabel("residual stream after block")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=SMALL_PT)
    top1 = [
        ((r.flatten() == 1).float().mean().item(), (f.flatten() == 1).float().mean().item())
        for r, f in zip(current, following)
    ]
    crossing = next((site for site, (c, n) in zip(sites, top1) if n > c), None)
    set_suptitle(
        fig,
        "Logit lens over validation text: position t predicts the next token more often than it shows its own "
        + (f"from {crossing} on" if crossing else "at no stage"),
        fontsize="large",
    )
    fig.tight_layout()
    return fig


def head_kl_heatmap(table: torch.Tensor):
    table = torch.as_tensor(table).cpu()
    fig, ax = plt.subplots(figsize=(SLIDE_WIDTH_IN, 2.0 + 0.45 * table.size(0)))
    im = ax.imshow(table.numpy(), cmap="magma_r", aspect="auto")
    for (layer, head), value in np.ndenumerate(table.numpy()):
        ax.text(
            head,
            layer,
            f"{value:.2g}",
            ha="center",
            va="center",
            fontsize=SMALL_PT,
            color="white" if value > 0.6 * float(table.max()) else "black",
        )
    ax.set_xticks(range(table.size(1)))
    ax.set_yticks(range(table.size(0)))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    fig.colorbar(im, ax=ax, label="KL(original ‖ ablated), nats")
    layer, head = divmod(int(table.argmax()), table.size(1))
    share = float(table.max() / table.sum())
    set_title(
        ax,
        f"Zeroing one head before c_proj: layer {layer} head {head} matters most "
        f"({share:.0%} of the summed KL over all {table.numel()} heads)",
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
    ax.legend(fontsize=SMALL_PT)
    means = ", ".join(f"{2 ** torch.as_tensor(h).float().mean().item():.0f}" for h in entropies.values())
    set_title(
        ax, f"Mean entropy ≈ as uncertain as a choice among {means} equally likely tokens (2^H)", fontsize="medium"
    )
    fig.tight_layout()
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
