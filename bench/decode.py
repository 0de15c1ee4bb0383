"""Decoding speed: the solution's KV cache vs no cache vs Hugging Face transformers.

    python bench/decode.py [--contexts 64 256 1024] [--new-tokens 32] [--repeats 3]

(On the CPU; `compare_decoding` runs the same comparison on any device, as bench/gpu_run.py does on a GPU.)

The course preset (~35M parameters) with random weights (speed does not depend on what was learned),
batch 1, greedy decoding, float32. For each context length C the prompt has C - N tokens and N new
tokens are decoded, so the decode runs at contexts C - N .. C - 1 (1024 is the model's whole context).
Reported: tokens/s of the decode steps alone. A greedy next_token (for transformers, a logits processor)
notes the time of every step; the gaps between steps are the decode steps (the prefill comes before the
first and is left out); --stat median (default) or min of a run's steps, the best of --repeats runs.

  (a) cache      `generate` and `KVCache` of the KV cache assignment's solution (loaded with course.notebook): buffers
                 written in place, doubled when full, views returned
  (a') cat       the same loop with the simple cache that torch.cat's the new positions onto the kept ones
  (b) no cache   the solution's `generate(..., use_cache=False)`: a full forward over the context per token
                 (timed on fewer tokens: every step costs the same full forward)
  (c) HF         transformers' GPT2LMHeadModel.generate(use_cache=True, do_sample=False) on the same
                 weights exported with identical logits

It also states the memory-bandwidth bound: bytes read per token (the weights once, plus the KV cache)
over the read bandwidth measured here with a large tensor sum.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from types import SimpleNamespace

import torch

from course.assignments import grading
from course.errors import UserError
from course.model import GPT, preset
from course.notebook import load_notebook, require

VOCAB = 12288


def solution_functions(names: list[str]) -> dict:
    """The named functions of the solution of the assignment that grades them (course.assignments.grading). The
    notebook is read as plain JSON (the notebook loader takes a dict too): the GPU machines have no nbformat."""
    path = grading(names).solution
    return require(load_notebook(json.loads(path.read_text(encoding="utf-8"))).namespace, names, where=str(path))


class CatCache:
    """The simple KV cache (a `course.model.KVCacheProtocol`): torch.cat of the kept and the new positions, which
    copies the whole cache per step."""

    def __init__(self):
        self.keys, self.values = {}, {}

    def update(self, layer, k, v):
        if layer in self.keys:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def __len__(self):
        return self.keys[0].size(2) if 0 in self.keys else 0


def to_hf(model):
    """transformers' GPT2LMHeadModel with the course model's weights (identical logits), by the project's exporter."""
    from course.export_hf import to_gpt2

    # the tokenizer only names the end-of-text id; random weights have none (and min_new_tokens is set)
    return to_gpt2(model, SimpleNamespace(eot_id=None))


def best_time(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def stamp(clock_stamps: list[float], logits: torch.Tensor) -> None:
    """Note the time once the GPU (if any) has computed `logits`."""
    if logits.is_cuda:
        torch.cuda.synchronize(logits.device)
    clock_stamps.append(time.perf_counter())


class StepClock:
    """A greedy next_token (`course.generation.NextToken`) that notes the time of every call: the gaps between
    calls are the decode steps."""

    def __init__(self):
        self.stamps: list[float] = []

    def __call__(self, logits, history):
        stamp(self.stamps, logits)
        return logits.argmax(dim=-1)

    def steps(self) -> list[float]:
        return [b - a for a, b in zip(self.stamps, self.stamps[1:])]


def decode_rate(run, new_tokens, repeats, stat):
    """tokens/s of the decode steps (the prefill is the time before the first stamp and is left out).

    Each run gives the seconds of its new_tokens - 1 decode steps; `stat` summarises them (median: the
    typical step; min: the least disturbed step, for a machine others are using); the best of `repeats` runs."""
    best = float("inf")
    for _ in range(repeats):
        clock = StepClock()
        run(clock, new_tokens)
        steps = sorted(clock.steps())
        assert len(steps) == new_tokens - 1, (len(steps), new_tokens)
        value = steps[0] if stat == "min" else steps[len(steps) // 2]
        best = min(best, value)
    return 1.0 / best


def read_bandwidth(nbytes: int, repeats=5):
    """Bytes/s read by a sum over a float32 tensor of `nbytes` (all threads), the best of `repeats`."""
    x = torch.ones(nbytes // 4)
    x.sum()
    t = best_time(lambda: x.sum(), repeats)
    return x.numel() * 4 / t


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def exported(model: GPT) -> tuple[object | None, str]:
    """transformers' GPT2LMHeadModel of `model`, on its device, and a note: how close its logits are, or why
    there is none (transformers missing, or logits further than 1e-4 from the model's)."""
    device = next(model.parameters()).device
    try:
        hf_model = to_hf(model).to(device)
    except UserError as e:  # transformers is not installed
        return None, f"skipped: {e}"
    check = torch.randint(0, model.config.vocab_size, (1, 16), device=device)
    with torch.no_grad():
        diff = (hf_model(check).logits - model(check)).abs().max().item()
    if not diff <= 1e-4:
        return None, f"skipped: the exported model's logits differ from the course model's by {diff:.1e} (over 1e-4)"
    return hf_model, f"run: the exported model's logits within {diff:.1e} of the course model's"


def compare_decoding(
    model: GPT, contexts, new_tokens=32, uncached_tokens=5, repeats=3, stat="median", hf=True, say=print
):
    """tokens/s of each way of decoding, greedy, batch 1, on the model's device: a row per context length (context,
    cache, cat, uncached, hf; hf is nan where transformers was not run) and a note on transformers' run."""
    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    generate = solution_functions(["generate", "KVCache"])["generate"]
    # the solution's generate with the simple torch.cat cache swapped in (its globals are the notebook's namespace)
    with_cat = type(generate)(
        generate.__code__, {**generate.__globals__, "KVCache": CatCache}, "generate", generate.__defaults__
    )
    hf_model, hf_note = exported(model) if hf else (None, "skipped: not asked for")
    say(f"transformers' GPT2LMHeadModel: {hf_note}")

    def hf_run(prompt, clock, n):
        from transformers import LogitsProcessor, LogitsProcessorList

        class Stamp(LogitsProcessor):  # called once per step, before the greedy pick
            def __call__(self, input_ids, scores):
                stamp(clock.stamps, scores)
                return scores

        with torch.no_grad():
            return hf_model.generate(
                prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, min_new_tokens=n,
                do_sample=False, use_cache=True, pad_token_id=0, logits_processor=LogitsProcessorList([Stamp()]),
            )  # fmt: skip

    rows = []
    for context in contexts:
        prompt = torch.randint(0, vocab, (1, context - new_tokens), device=device)
        generate(model, prompt, 2)  # warm-up: first calls at a new size pay one-off allocation costs
        n, r = new_tokens, repeats
        cached = decode_rate(lambda clock, n: generate(model, prompt, n, next_token=clock), n, r, stat)
        cat = decode_rate(lambda clock, n: with_cat(model, prompt, n, next_token=clock), n, r, stat)
        uncached = decode_rate(
            lambda clock, n: generate(model, prompt, n, next_token=clock, use_cache=False),
            uncached_tokens, max(1, r - 1), stat,
        )  # fmt: skip
        hf_rate = decode_rate(lambda clock, n: hf_run(prompt, clock, n), n, r, stat) if hf_model else float("nan")
        rows.append(dict(context=context, cache=cached, cat=cat, uncached=uncached, hf=hf_rate))
        say(
            f"  context {context}: cache {cached:.1f}, cat cache {cat:.1f}, no cache {uncached:.2f}, "
            f"HF {hf_rate:.1f} tokens/s"
        )
    return rows, hf_note


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contexts", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--uncached-tokens", type=int, default=5, help="tokens timed without a cache")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stat", choices=("median", "min"), default="median", help="of the decode steps of a run")
    parser.add_argument("--no-hf", action="store_true", help="skip transformers")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = GPT(preset("course", VOCAB)).eval()
    c = model.config
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; load average before: {load_average()}"
    )
    print(
        f"model: course preset, {model.num_params() / 1e6:.1f}M parameters, random weights, float32, batch 1; "
        f"{args.new_tokens} new tokens per context, {args.stat} decode step, best of {args.repeats} runs"
    )

    weight_bytes = model.num_params() * 4  # the tied embedding is read once (by the unembedding)
    per_position = 2 * c.n_layer * c.n_embd * 4  # keys and values: 2 x layers x heads x head_dim x 4 bytes
    # two read bandwidths: a tensor the size of the weights (it may stay in a large last-level cache, as the
    # weights do between tokens) and 1 GiB (main memory)
    bandwidth = read_bandwidth(weight_bytes)
    dram = read_bandwidth(2**30, repeats=3)
    print(
        f"read bandwidth (torch sum, float32): {bandwidth / 1e9:.1f} GB/s over {weight_bytes / 1e6:.0f} MB "
        f"(the weights' size), {dram / 1e9:.1f} GB/s over 1 GiB; "
        f"KV cache {per_position / 1e3:.1f} kB per position"
    )
    rows, _ = compare_decoding(
        model, args.contexts, args.new_tokens, args.uncached_tokens, args.repeats, args.stat, hf=not args.no_hf
    )

    print()
    header = (
        "| context | cache (solution) | cat cache | no cache | HF generate | cache / no cache "
        "| cache / HF | cat / HF | bound (weights-size bw) | bound (1 GiB bw) |"
    )
    print(header)
    print("|---:" * 10 + "|")
    for row in rows:
        mean_context = row["context"] - args.new_tokens / 2
        per_token = weight_bytes + per_position * mean_context
        cached, cat, hf_rate = row["cache"], row["cat"], row["hf"]
        print(
            f"| {row['context']} | {cached:.1f} | {cat:.1f} | {row['uncached']:.2f} | {hf_rate:.1f} "
            f"| {cached / row['uncached']:.1f}x | {cached / hf_rate:.2f}x | {cat / hf_rate:.2f}x "
            f"| {bandwidth / per_token:.0f} | {dram / per_token:.0f} |"
        )
    print(
        f"\n(tokens/s; bound = read bandwidth / (weights + KV cache at the mean decode context) bytes per token; "
        f"load average after: {load_average()})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
