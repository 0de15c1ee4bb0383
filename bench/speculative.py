"""Speculative sampling against plain sampling, side by side in one run, with the course kit's own models.

    python bench/speculative.py [--target runs/laptop] [--drafts runs/tiny first:1] [--ks 1 2 3 4 6]
                                [--new-tokens 64] [--prompts 4] [--rounds 5] [--temperature 1.0] [--threads 1]

The target is a checkpoint; each draft is a checkpoint with the same tokenizer, or `first:N`, the target cut after
its first N blocks (its own final LayerNorm and unembedding after them: self-speculative decoding). The code timed
is the solution of the assignment that grades `speculative_generate` (loaded with course.notebook), and its
`sample_plainly` is the baseline: one target forward per token, with the same KVCache. Batch 1, float32, on the
CPU, torch on `--threads` threads.

Every round runs each method once over the same prompts and seeds, plain sampling and each (draft, k) in an order
that rotates from round to round, so that a change in the machine's load falls on all of them; a method's time is
the median of its rounds, and its speed-up the median of its per-round ratios to plain sampling. For each (draft, k)
it reports, from the rounds' verdicts (the solution's `speculative_step` recorded):
  - the acceptance rate: drafts accepted / drafts judged (a round judges its drafts up to the first rejection), and
    the exact mean of sum_x min(p(x), q(x)) over the judged positions, which that rate estimates;
  - tokens per target forward: the new tokens over the target's forwards (one per round; the last round's
    tokens past --new-tokens are cut, so this is a little below the tokens a round yields);
  - the speed-up the cost model predicts from the costs measured here (`median_ms`): plain sampling pays per token
    one target forward and one draw from its V logits (softmax, multinomial), c_target(1) + c_draw; a round pays k
    draft forwards and draws, one target forward over k + 1 positions and the verdict: k (c_draft + c_draw) +
    c_target(k + 1) + c_step(k). Predicted: tokens per round x (c_target(1) + c_draw) / the round's cost. What it
    leaves out (building tensors, cropping, Python) is the gap to the measured speed-up.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import platform
import statistics
import time

import torch

from course.assignments import solution_functions
from course.checkpoint import load_checkpoint
from course.errors import UserError

NOISE = 0.05  # a speed-up within 5% of 1x is not told apart from timing noise on a shared machine
PROMPTS = [
    "The history of the city begins in the",
    "In 1998 , the band released their second album , which",
    "The species is found in the forests of",
    "During the war , the regiment was sent to",
    "The game was developed by a small team that",
    "The cathedral was built in the 13th century and",
]


def first_layers(model, n_layer: int):
    """`model` cut after its first n_layer blocks: its embeddings, those blocks, its final LayerNorm and unembedding."""
    if not 1 <= n_layer < model.config.n_layer:
        raise UserError(f"first:N takes 1 <= N < the target's {model.config.n_layer} layers, not {n_layer}")
    draft = copy.deepcopy(model)
    draft.transformer.h = draft.transformer.h[:n_layer]
    draft.config = dataclasses.replace(model.config, n_layer=n_layer)
    return draft


def load_draft(spec: str, target, tokenizer):
    """(label, model) of a --drafts entry: `first:N` or a checkpoint of the target's tokenizer."""
    if spec.startswith("first:"):
        count = spec.removeprefix("first:")
        if not count.isdigit():
            raise UserError(f"--drafts {spec}: expected first:N with N a number of layers")
        return f"the target's first {count} of {target.config.n_layer} layers", first_layers(target, int(count))
    model, draft_tokenizer = load_checkpoint(spec)
    ids = range(tokenizer.vocab_size)
    if draft_tokenizer.vocab_size != tokenizer.vocab_size or draft_tokenizer.token_strings(
        ids
    ) != tokenizer.token_strings(ids):
        raise UserError(f"--drafts {spec}: its tokenizer is not the target's (a draft must share the vocabulary)")
    return f"{spec} ({model.config.n_layer} layers x {model.config.n_embd})", model.eval()


class Verdicts:
    """A speculative_step that records every round: the accepted drafts, the judged drafts and sum_x min(p, q)."""

    def __init__(self, step):
        self.step = step
        self.rounds = self.accepted = self.judged = 0
        self.overlap = 0.0  # sum over judged positions of sum_x min(p(x), q(x))

    def __call__(self, target_probs, draft_probs, draft_tokens, generator=None):
        n_accepted, next_token = self.step(target_probs, draft_probs, draft_tokens, generator)
        k, n = draft_tokens.shape[-1], int(n_accepted)
        judged = min(n + 1, k)  # the drafts up to the first rejection
        self.rounds += 1
        self.accepted += n
        self.judged += judged
        self.overlap += torch.minimum(target_probs[:judged], draft_probs[:judged]).sum().item()
        return n_accepted, next_token


class Counting(torch.nn.Module):
    """A model that counts its forwards."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config, self.forwards = model, model.config, 0

    def forward(self, ids, **kwargs):
        self.forwards += 1
        return self.model(ids, **kwargs)


def with_globals(function, **replaced):
    """`function` with some names of its globals (the notebook's namespace) replaced."""
    return type(function)(
        function.__code__, {**function.__globals__, **replaced}, function.__name__, function.__defaults__
    )


def median_ms(run, after=None, repeats: int = 30) -> float:
    """Milliseconds of run() (the median of `repeats`), calling after() untimed after each."""
    took = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        took.append(time.perf_counter() - start)
        if after is not None:
            after()
    return 1000 * statistics.median(took)


def forward_ms(model, cache_class, positions: int, context: int = 64) -> float:
    """Milliseconds of one forward over `positions` new positions after `context` cached ones."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (1, context + positions), generator=generator)
    cache = cache_class()
    with torch.no_grad():
        model(ids[:, :context], cache=cache)
        return median_ms(lambda: model(ids[:, context:], cache=cache), after=lambda: cache.crop(context))


def draw_ms(vocab_size: int, temperature: float) -> float:
    """Milliseconds of one draw from `vocab_size` logits: softmax at `temperature`, then multinomial."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(vocab_size, generator=generator)
    return median_ms(lambda: torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1, generator=generator))


def step_ms(step, vocab_size: int, k: int) -> float:
    """Milliseconds of one round's verdict, speculative_step on k drafts over `vocab_size` tokens."""
    generator = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(k + 1, vocab_size, generator=generator), dim=-1)
    q = torch.softmax(torch.randn(k, vocab_size, generator=generator), dim=-1)
    drafts = torch.multinomial(q, 1, generator=generator)[:, 0]
    return median_ms(lambda: step(p, q, drafts, generator))


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", default="runs/laptop", help="the target checkpoint (default runs/laptop)")
    parser.add_argument("--drafts", nargs="+", default=["runs/tiny", "first:1"], help="checkpoints or first:N")
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 2, 3, 4, 6], help="drafts per round")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=4, help=f"how many of the {len(PROMPTS)} fixed prompts")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if not 1 <= args.prompts <= len(PROMPTS) or args.rounds < 1 or args.new_tokens < 1 or min(args.ks) < 1:
        raise UserError(f"expected 1 <= --prompts <= {len(PROMPTS)}, --rounds, --new-tokens and every k >= 1")
    torch.set_num_threads(args.threads)
    load_before = load_average()

    found = solution_functions(["speculative_generate", "speculative_step"], also=["KVCache", "sample_plainly"])
    cache_class, sample_plainly = found["KVCache"], found["sample_plainly"]
    target, tokenizer = load_checkpoint(args.target)
    target.eval()
    drafts = dict(load_draft(spec, target, tokenizer) for spec in args.drafts)
    prompts = [torch.tensor([tokenizer.encode(text)]) for text in PROMPTS[: args.prompts]]
    longest = max(p.shape[1] for p in prompts) + args.new_tokens + max(args.ks)
    for label, model in [("the target", target), *drafts.items()]:
        if longest > model.config.block_size:
            raise UserError(f"{label}'s context holds {model.config.block_size} positions; the run needs {longest}")

    def run_plain():
        for seed, prompt in enumerate(prompts):
            sample_plainly(target, prompt, args.new_tokens, args.temperature, torch.Generator().manual_seed(seed))

    def speculative(draft, k):
        def run(verdicts=None, counting=None):
            generate = found["speculative_generate"]
            if verdicts is not None:
                generate = with_globals(generate, speculative_step=verdicts)
            model = counting if counting is not None else target
            for seed, prompt in enumerate(prompts):
                generator = torch.Generator().manual_seed(seed)
                generate(model, draft, prompt, args.new_tokens, k, args.temperature, generator)

        return run

    methods = {"plain": run_plain}
    methods |= {(label, k): speculative(draft, k) for label, draft in drafts.items() for k in args.ks}
    for run in methods.values():  # warm-up: first calls at a new size pay one-off costs
        run()
    times = {name: [] for name in methods}
    names = list(methods)
    for round_number in range(args.rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            methods[name]()
            times[name].append(time.perf_counter() - start)

    costs = {"target": {n: forward_ms(target, cache_class, n) for n in sorted({1, *(k + 1 for k in args.ks)})}}
    costs |= {label: forward_ms(model, cache_class, 1) for label, model in drafts.items()}
    vocab = target.config.vocab_size
    draw = draw_ms(vocab, args.temperature)
    verdict_ms = {k: step_ms(found["speculative_step"], vocab, k) for k in args.ks}
    tokens = args.new_tokens * len(prompts)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__} on {args.threads} thread(s); load average before: {load_before}")  # fmt: skip
    print(f"target: {args.target} ({target.config.n_layer} layers x {target.config.n_embd}, vocabulary "
          f"{target.config.vocab_size}); {len(prompts)} prompts x {args.new_tokens} new tokens, temperature "
          f"{args.temperature}, {args.rounds} rounds")  # fmt: skip
    target_one = costs["target"][1]
    print("one forward after 64 cached positions (median ms): target on "
          + ", ".join(f"{n}: {ms:.2f}" for n, ms in costs["target"].items())
          + "; " + ", ".join(f"{label} on 1: {costs[label]:.2f}" for label in drafts))  # fmt: skip
    print(f"one draw from {vocab:,} logits: {draw:.2f} ms; speculative_step: "
          + ", ".join(f"k = {k} {ms:.2f} ms" for k, ms in verdict_ms.items()))  # fmt: skip
    plain = statistics.median(times["plain"])
    print(f"\nplain sampling: {1000 * plain / tokens:.2f} ms per token, 1.00 tokens per target forward")
    print("\n| draft | k | acceptance (sum min(p, q)) | tokens per target forward | ms per token | speed-up | "
          "predicted |\n|---|---|---|---|---|---|---|")  # fmt: skip
    best = None
    for label in drafts:
        for k in args.ks:
            verdicts, counting = Verdicts(found["speculative_step"]), Counting(target)
            methods[(label, k)](verdicts, counting)
            acceptance, overlap = verdicts.accepted / verdicts.judged, verdicts.overlap / verdicts.judged
            per_forward = tokens / counting.forwards
            per_round = (verdicts.accepted + verdicts.rounds) / verdicts.rounds  # a round yields n_accepted + 1
            round_ms = k * (costs[label] + draw) + costs["target"][k + 1] + verdict_ms[k]
            predicted = per_round * (target_one + draw) / round_ms
            took = statistics.median(times[(label, k)])
            speedup = statistics.median(p / s for p, s in zip(times["plain"], times[(label, k)]))
            print(f"| {label} | {k} | {acceptance:.3f} ({overlap:.3f}) | {per_forward:.2f} | "
                  f"{1000 * took / tokens:.2f} | {speedup:.2f}x | {predicted:.2f}x |")  # fmt: skip
            if best is None or speedup > best[0]:
                best = (speedup, label, k)
    speedup, label, k = best
    verdict = "paid" if speedup > 1 + NOISE else "did not pay" if speedup < 1 - NOISE else "about broke even"
    print(f"\nload average after: {load_average()}. Fastest: {label}, k = {k}, at {speedup:.2f}x plain sampling's "
          f"speed: drafting {verdict} here (within {NOISE:.0%} of 1x counts as even).")  # fmt: skip


if __name__ == "__main__":
    try:
        main()
    except UserError as error:
        raise SystemExit(f"error: {error}") from None
