"""Lecture 01 (sampling): the figures and the sentences that say what they show, each computed from the numbers."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from course.lectures.style import (
    SLIDE_WIDTH_IN,
    SMALL_PT,
    probabilities,
    prompt_tail,
    set_suptitle,
    set_title,
    show_token,
)


def sorted_distributions(panels: Sequence[tuple[str, torch.Tensor]], token_strings: Callable, annotate: int = 5):
    """Side by side, each prompt's next-token probabilities over the whole vocabulary, sorted.
    `panels` is a list of (prompt, logits (vocab,)); `token_strings(ids)` names tokens."""
    fig, axes = plt.subplots(1, len(panels), figsize=(SLIDE_WIDTH_IN, 5.0), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, (prompt, logits) in zip(axes, panels):
        p = probabilities(logits)
        order = np.argsort(-p)
        ranks = np.arange(1, len(p) + 1)
        ax.loglog(ranks, p[order], lw=1.5)
        ax.plot(ranks[:annotate], p[order[:annotate]], "o", ms=4, color="tab:blue")
        listed = "\n".join(
            f"{show_token(tok)} {p[i]:.2f}" for tok, i in zip(token_strings(order[:annotate].tolist()), order)
        )
        ax.text(0.97, 0.97, listed, transform=ax.transAxes, ha="right", va="top", fontsize=SMALL_PT, linespacing=1.3)
        top1, top10 = p[order[0]], p[order[:10]].sum()
        set_title(ax, f"“{prompt_tail(prompt, 24)}”\ntop-1 {top1:.0%}, top-10 {top10:.0%}")
        ax.set_xlabel(f"rank (of {len(p):,})")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("probability")
    set_suptitle(fig, spread_verdict(panels))
    fig.tight_layout()
    return fig


def tokens_for_mass(logits: torch.Tensor, mass: float = 0.9) -> int:
    """How many of the most likely tokens it takes to hold `mass` of the probability (what top-p keeps)."""
    probs = np.sort(probabilities(logits))[::-1]
    return int(np.searchsorted(np.cumsum(probs), mass) + 1)


def spread_verdict(panels: Sequence[tuple[str, torch.Tensor]], mass: float = 0.9) -> str:
    """What the panels show, from their numbers: how many tokens hold `mass` after each prompt, and whether
    one prompt is much more spread out than another (ten times as many tokens or more)."""
    counts = [tokens_for_mass(logits, mass) for _, logits in panels]
    listed = ", ".join(f"{n:,} after “{prompt_tail(prompt, 20)}”" for n, (prompt, _) in zip(counts, panels))
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
    base = probabilities(logits)
    top = np.argsort(-base)[:n]
    fig, ax = plt.subplots(figsize=(SLIDE_WIDTH_IN, 4.2))
    width = 0.8 / len(temperatures)
    for i, t in enumerate(temperatures):
        p = probabilities(apply_temperature(logits, t))
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
    set_title(ax, temperature_verdict(logits, temperatures, apply_temperature), fontsize="medium")
    fig.tight_layout()
    return fig


def temperature_verdict(logits: torch.Tensor, temperatures, apply_temperature: Callable) -> str:
    """What the temperatures did to this distribution, measured: the top token's probability at each T,
    and whether the order of the tokens stayed the same."""
    orders = [np.argsort(-apply_temperature(logits, t).float().cpu().numpy(), kind="stable") for t in temperatures]
    same_order = all(np.array_equal(order, orders[0]) for order in orders)
    top1 = ", ".join(f"{probabilities(apply_temperature(logits, t)).max():.0%} at T = {t}" for t in temperatures)
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
    fig, axes = plt.subplots(len(panels), 2, figsize=(SLIDE_WIDTH_IN, 3.0 * len(panels) + 1.0), squeeze=False)
    for row, (prompt, logits) in enumerate(panels):
        probs = probabilities(logits)
        order = np.argsort(-probs)
        sorted_p = probs[order]
        ranks = np.arange(1, len(probs) + 1)
        for col, (name, filt) in enumerate(
            ((f"top-k, k = {k}", lambda x: top_k_filter(x, k)), (f"top-p, p = {p}", lambda x: top_p_filter(x, p)))
        ):
            ax = axes[row, col]
            kept = torch.isfinite(filt(logits)).cpu().numpy()[order]
            n_kept, mass = int(kept.sum()), float(sorted_p[kept].sum())
            ax.loglog(ranks, sorted_p, color="grey", lw=1)
            ax.fill_between(ranks, sorted_p, 1e-12, where=kept, color="tab:green", alpha=0.5)
            ax.axvline(n_kept, color="tab:green", lw=1)
            ax.set_ylim(max(sorted_p[-1], 1e-9), 1.5)
            ax.set_ylabel(f"“{prompt_tail(prompt, 16)}”" if col == 0 else "")
            if row == len(panels) - 1:
                ax.set_xlabel("rank")
            if col == 1:
                twin = ax.twinx()
                twin.semilogx(ranks, np.cumsum(sorted_p), color="tab:orange", lw=1.2)
                twin.axhline(p, color="tab:orange", ls="--", lw=1)
                twin.set_ylim(0, 1.02)
                twin.tick_params(axis="y", colors="tab:orange")
            set_title(ax, f"{name}: keeps {n_kept:,} token{'' if n_kept == 1 else 's'}, {mass:.0%}")
    set_suptitle(fig, cut_verdict(panels, top_k_filter, top_p_filter, k, p), fontsize="medium")
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
        f"after “{prompt_tail(prompt, 24)}” top-k keeps {n_k:,}, top-p {n_p:,}"
        for (prompt, _), (n_k, n_p) in zip(panels, kept)
    )
    if any(n_p < n_k for n_k, n_p in kept) and any(n_p > n_k for n_k, n_p in kept):
        return f"Top-p (p = {p}) adapts to the shape, top-k (k = {k}) does not: {listed}"
    if all(n_p == n_k for n_k, n_p in kept):
        return f"Top-p (p = {p}) and top-k (k = {k}) keep as many tokens here: {listed}"
    more = all(n_p >= n_k for n_k, n_p in kept)
    return (
        f"Top-p (p = {p}) keeps {'more' if more else 'fewer'} tokens than top-k (k = {k}) after each prompt: {listed}"
    )


def repeated_ngram_fraction(ids: Sequence[int], n: int = 4) -> float:
    """The fraction of n-grams in `ids` that already occurred earlier in it: 0 for fresh text, near 1 in a loop."""
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    seen, repeats = set(), 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / max(1, len(grams))


def repetition_verdict(fractions: dict[str, float], n: int = 4, loop: float = 0.5) -> str:
    """One sentence from each strategy's fraction of repeated n-grams: `loop` or more is called a loop."""
    listed = ", ".join(f"{name} {f:.0%}" + (" (a loop)" if f >= loop else "") for name, f in fractions.items())
    return f"Share of repeated {n}-grams in each continuation: {listed}."


def penalty_example(names: Sequence[str], logits, new_logits, k, probs, new_probs):
    """The worked penalty example: logits and probabilities before and after, per token."""
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 2, figsize=(SLIDE_WIDTH_IN, 3.6))
    for ax, before, after, label in (
        (axes[0], logits, new_logits, "logit"),
        (axes[1], probs, new_probs, "probability"),
    ):
        ax.bar(x - 0.2, np.asarray(before), 0.4, label="before")
        ax.bar(x + 0.2, np.asarray(after), 0.4, label="after penalties")
        ax.set_xticks(x, [f"{n}\nk={float(kk):.1f}" for n, kk in zip(names, k)])
        ax.set_xlabel("token (and its multiplier k)")
        ax.set_ylabel(label)
        ax.legend(fontsize=SMALL_PT)
    loss = np.asarray(probs) - np.asarray(new_probs)
    most = int(np.argmax(loss))
    set_suptitle(
        fig,
        f"Penalties divide each logit by k: '{names[most]}' (k = {float(k[most]):.1f}) loses the most probability, "
        f"{float(loss[most]):.3f}",
    )
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
    fig, ax = plt.subplots(figsize=(SLIDE_WIDTH_IN, 4.4))
    colors = ["tab:green" if kept[i] else "lightgrey" for i in order.tolist()]
    ax.bar(range(len(order)), before[order].numpy(), color=colors, label="probability before the cut")
    ax.plot(range(len(order)), after[order].numpy(), "k.", label="probability when sampling (renormalised)")
    ax.set_xticks(
        range(len(order)),
        [show_token(s) for s in token_strings(order.tolist())],
        rotation=60,
        ha="right",
        fontsize=SMALL_PT,
    )
    ax.set_xlabel(f"the {len(order)} most likely tokens (green: kept, grey: cut)")
    ax.set_ylabel("probability")
    ax.legend(fontsize=SMALL_PT)
    set_title(
        ax,
        f"{title}T={temperature:g}, top-k={top_k or 'off'}, top-p={top_p:g}, penalty={penalty:g}: "
        f"kept {int(kept.sum()):,} of {len(kept):,} tokens holding {float(before[kept].sum()):.0%} of the mass",
        fontsize="medium",
    )
    fig.tight_layout()
    return fig
