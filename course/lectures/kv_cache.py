"""Lecture 02 (the KV cache): timing the next token with and without the cache, and saying what the timings show."""

from __future__ import annotations

import matplotlib.pyplot as plt

from course.lectures.style import set_title


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
    set_title(
        ax,
        f"{name}\nfrom {lengths[0]} to {lengths[-1]} tokens of context the next token costs {grow[0]:.1f}x more "
        f"without the cache, {grow[1]:.1f}x with it",
        fontsize="medium",
    )
    fig.tight_layout()
    return fig
