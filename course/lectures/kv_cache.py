"""Lecture 02 (the KV cache): timing the next token with and without the cache, and saying what the timings show.

A live timing on a shared machine is noisy: another program can take the processor in the middle of one run. So
every comparison here is measured the robust way (one thread, a warm-up, the two variants timed in turns, the
median of several runs of each) and the sentence a slide shows is chosen by the numbers: it states the cache's gain
only when the timings show it clearly, and otherwise says that they do not, with the numbers, instead of stating
the opposite of the lesson.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import matplotlib.pyplot as plt
import torch

from course.lectures.style import set_title

REPEATS = 5  # timed runs of each variant; their median is reported
WARMUP = 1  # untimed rounds first: the first calls allocate memory and warm the caches
CLEAR = 1.2  # a time counts as larger than another only when it is at least this many times it


def interleaved_medians(runs: dict[str, Callable[[], object]], repeats: int = REPEATS, warmup: int = WARMUP):
    """{name: median milliseconds} of each of `runs`, timed on one thread: `warmup` untimed rounds, then `repeats`
    rounds that each run every one of `runs` in turn, so that a burst of load from other programs falls on all of
    them alike instead of on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a second thread that waits for a busy core costs more than it brings
    try:
        for _ in range(warmup):
            for run in runs.values():
                run()
        seconds = {name: [] for name in runs}
        for _ in range(repeats):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                seconds[name].append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return {name: 1000 * statistics.median(times) for name, times in seconds.items()}


@torch.no_grad()
def next_token_ms(model, make_cache: Callable, context: int, repeats: int = REPEATS, warmup: int = WARMUP):
    """(with the cache, without it): the median milliseconds of the forward that produces the next token after
    `context` random tokens. With the cache (filled with the context first, not timed) that forward runs one new
    position; without it, the whole context again. Needs context + warmup + repeats <= the model's block size."""
    steps = warmup + repeats
    ids = torch.randint(0, model.config.vocab_size, (1, context + steps), generator=torch.Generator().manual_seed(0))
    cache = make_cache()
    model(ids[:, :context], cache=cache)
    positions = iter(range(context, context + steps))

    def with_cache():
        position = next(positions)
        model(ids[:, position : position + 1], cache=cache)

    def without_cache():
        model(ids[:, : context + 1])

    medians = interleaved_medians({"with": with_cache, "without": without_cache}, repeats, warmup)
    return medians["with"], medians["without"]


def timing_curve(model, make_cache: Callable, lengths, repeats: int = REPEATS):
    """([ms with the cache], [ms without]) of the next token after each context length of `lengths`."""
    pairs = [next_token_ms(model, make_cache, n, repeats) for n in lengths]
    return [with_ms for with_ms, _ in pairs], [without_ms for _, without_ms in pairs]


def not_shown(measured: str) -> str:
    return (
        f"These timings do not show the cache's gain ({measured}): other programs are taking the processor, or "
        "the work saved is too small to see. Run the cell again on a quiet machine."
    )


def generation_verdict(tokens: int, with_ms: float, without_ms: float, repeats: int = REPEATS) -> str:
    """What timing a whole generation with and without the cache showed (medians of `repeats` runs, in ms)."""
    measured = f"{with_ms:.0f} ms with the cache, {without_ms:.0f} ms without, medians of {repeats} runs"
    if without_ms >= CLEAR * with_ms:
        return f"The cache made the {tokens} tokens {without_ms / with_ms:.1f}× faster: {measured}."
    return not_shown(measured)


def timing_verdict(lengths, with_ms, without_ms) -> str:
    """What the next token's time against the context length showed: stated only when the time without the cache
    grows clearly more than with it and the cache is clearly faster at the longest context."""
    growth_without, growth_with = without_ms[-1] / without_ms[0], with_ms[-1] / with_ms[0]
    at_longest = f"at {lengths[-1]} tokens {with_ms[-1]:.1f} ms with the cache, {without_ms[-1]:.1f} ms without"
    if growth_without >= CLEAR * growth_with and without_ms[-1] >= CLEAR * with_ms[-1]:
        return (
            f"From {lengths[0]} to {lengths[-1]} tokens of context the next token costs {growth_without:.1f}× more "
            f"without the cache and {growth_with:.1f}× more with it; {at_longest} "
            f"({without_ms[-1] / with_ms[-1]:.1f}× faster)."
        )
    return not_shown(at_longest)


def kv_timing(lengths, with_ms, without_ms, name: str = "the model"):
    """The next token's time against the context length, with and without the cache (see `timing_verdict` for the
    sentence that goes with it)."""
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(lengths, without_ms, "o-", label="without cache: re-run the whole context")
    ax.plot(lengths, with_ms, "o-", label="with KV cache: one new position")
    ax.set_xlabel("context length (tokens already there)")
    ax.set_ylabel("time for the next token (ms)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    set_title(ax, f"{name}: median of {REPEATS} runs per point")
    fig.tight_layout()
    return fig
