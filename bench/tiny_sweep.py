"""The tiny preset's sweep: which shape, vocabulary and learning rate buy the best text in a fixed CPU budget.

Each candidate trains on WikiText-2 for as many steps as fit in `--seconds` of one thread on a quiet machine,
then is scored on the whole validation split. The step count comes from timing the candidate's step against
the old tiny preset's, interleaved, so that a busy machine slows both alike; the old preset's quiet step time
(measured alone) converts the ratio into seconds. Perplexity is per WikiText word, which stays comparable
across vocabularies (per-token figures do not).

    python bench/tiny_sweep.py --data-dir ../shared/data/wikitext-2 [--seconds 150] [--only NAME,...]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from course.evaluate import perplexity
from course.model import GPT, PRESETS, preset
from course.train import (
    PRESET_DEFAULTS,
    TrainConfig,
    batch_for_step,
    load_training_data,
    make_optimizer,
    train,
    train_step,
)

# name: (model shape, training options); vocab is the BPE vocabulary trained on the train split.
CANDIDATES = {
    "v12k-4x64 (old tiny)": dict(
        vocab=12288, model=dict(n_layer=4, n_head=4, n_embd=64, block_size=128), batch=8, lr=4e-3
    ),
    "v8k-4x96": dict(vocab=8192, model=dict(n_layer=4, n_head=4, n_embd=96, block_size=128), batch=12, lr=3e-3),
    "v4k-3x128-ctx64": dict(vocab=4096, model=dict(n_layer=3, n_head=4, n_embd=128, block_size=64), batch=24, lr=4e-3),
    "v4k-6x96-ctx64": dict(vocab=4096, model=dict(n_layer=6, n_head=4, n_embd=96, block_size=64), batch=24, lr=3e-3),
    "v4k-4x64": dict(vocab=4096, model=dict(n_layer=4, n_head=4, n_embd=64, block_size=128), batch=16, lr=4e-3),
    "v4k-4x96": dict(vocab=4096, model=dict(n_layer=4, n_head=4, n_embd=96, block_size=128), batch=12, lr=4e-3),
    "v8k-4x64": dict(vocab=8192, model=dict(n_layer=4, n_head=4, n_embd=64, block_size=128), batch=12, lr=4e-3),
    "v12k-4x64-lr8": dict(vocab=12288, model=dict(n_layer=4, n_head=4, n_embd=64, block_size=128), batch=8, lr=8e-3),
    "v16k-4x64-lr6": dict(vocab=16384, model=dict(n_layer=4, n_head=4, n_embd=64, block_size=128), batch=8, lr=6e-3),
    "v16k-4x64-lr8": dict(vocab=16384, model=dict(n_layer=4, n_head=4, n_embd=64, block_size=128), batch=8, lr=8e-3),
    "v24k-4x64-lr8": dict(vocab=24576, model=dict(n_layer=4, n_head=4, n_embd=64, block_size=128), batch=8, lr=8e-3),
    "v32k-4x64-lr8": dict(vocab=32768, model=dict(n_layer=4, n_head=4, n_embd=64, block_size=128), batch=8, lr=8e-3),
}

# The old tiny preset's step on this machine, quiet, one thread (RESULTS.md: 1000 steps in 135 s).
REFERENCE = "v12k-4x64 (old tiny)"
REFERENCE_QUIET_SECONDS_PER_STEP = 0.135


def timed_steps(spec: dict, data, steps: int):
    """A generator: each next() runs one training step of `spec` and yields its CPU seconds."""
    PRESETS["sweep"] = spec["model"]
    config = TrainConfig(preset="sweep", batch_size=spec["batch"], lr=spec["lr"]).resolved()
    model = GPT(preset("sweep", data.tokenizer.vocab_size))
    optimizer = make_optimizer(model, config, torch.device("cpu"))
    for step in range(steps):
        batches = [batch_for_step(data.train_tokens, model.config.block_size, config.batch_size, 0, 0, step, 0)]
        started = time.process_time()
        train_step(model, optimizer, batches, config, config.lr, torch.device("cpu"))
        yield time.process_time() - started


def quiet_seconds_per_step(spec: dict, data, reference_data) -> float:
    """A step's time on a quiet machine: the candidate timed against the old tiny preset, step for step
    (so both feel the same load), times the reference's quiet step time."""
    candidate, reference = timed_steps(spec, data, 13), timed_steps(CANDIDATES[REFERENCE], reference_data, 13)
    pairs = [(next(candidate), next(reference)) for _ in range(13)][3:]
    return sum(c for c, _ in pairs) / sum(r for _, r in pairs) * REFERENCE_QUIET_SECONDS_PER_STEP


def run(name: str, spec: dict, data_dir: str, seconds: float, threads: int, seed: int) -> dict:
    PRESETS["sweep"] = spec["model"]
    PRESET_DEFAULTS["sweep"] = dict(
        PRESET_DEFAULTS["tiny"], batch_size=spec["batch"], lr=spec["lr"], cpu_threads=threads, eval_tokens=8192
    )
    config = TrainConfig(preset="sweep", data_dir=data_dir, quiet=True, seed=seed)
    data = load_training_data(config, vocab_size=spec["vocab"])
    reference_data = load_training_data(config, vocab_size=CANDIDATES[REFERENCE]["vocab"])
    steps = int(seconds / quiet_seconds_per_step(spec, data, reference_data))
    PRESETS["sweep"] = spec["model"]
    out = f"/tmp/tiny-sweep/{os.getpid()}-{name.split()[0]}"
    started, wall = time.process_time(), time.perf_counter()
    result = train(TrainConfig(**{**vars(config), "max_steps": steps, "eval_every": steps, "out": out}), data=data)
    cpu, wall = time.process_time() - started, time.perf_counter() - wall
    score = perplexity(result.model, data.valid_tokens, data.valid_words)
    return dict(name=name, steps=steps, cpu=cpu, wall=wall, params=result.model.num_params(), ppl=score.per_word)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seconds", type=float, default=150.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", help="comma-separated candidate names (prefixes)")
    parser.add_argument("--seed", type=int, default=1337, help="of the initial weights and the batches")
    args = parser.parse_args()
    names = [n for n in CANDIDATES if not args.only or any(n.startswith(p) for p in args.only.split(","))]
    torch.set_num_threads(args.threads)
    print("| candidate | parameters | steps | CPU s here | wall s here | valid perplexity per word |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in names:
        r = run(name, CANDIDATES[name], args.data_dir, args.seconds, args.threads, args.seed)
        print(
            f"| {r['name']} | {r['params'] / 1e6:.2f}M | {r['steps']} | {r['cpu']:.0f} | {r['wall']:.0f} | {r['ppl']:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
