"""Is the lecture instrumentation free when off?

Times the course model's forward with `model.probe = None` (the default) against a reference
forward with no instrumentation branches at all, on the same weights, interleaved so that both see
the same machine load; then checks that the logits are bit-identical.

    python bench/probe_overhead.py [--preset course] [--batch 1] [--positions 256] [--repeats 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from course.model import GPT, preset


def reference_forward(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The same computation as GPT.forward without a cache or a probe: nothing but the math."""
    B, T = idx.shape
    t = model.transformer
    x = t.wte(idx) + t.wpe(torch.arange(T))
    for block in t.h:
        attn = block.attn
        q, k, v = attn.c_attn(block.ln_1(x)).split(x.size(-1), dim=2)
        q, k, v = (z.view(B, T, attn.n_head, -1).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).contiguous().view(B, T, -1)
        x = x + attn.c_proj(y)
        x = x + block.mlp(block.ln_2(x))
    return model.lm_head(t.ln_f(x)).float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="course", choices=["tiny", "course"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--positions", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (one is stable on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = GPT(preset(args.preset, 12288)).eval()
    positions = min(args.positions, model.config.block_size)
    idx = torch.randint(0, model.config.vocab_size, (args.batch, positions))
    timings = {"model (probe off)": [], "reference (no hooks)": []}
    runs = {"model (probe off)": lambda: model(idx), "reference (no hooks)": lambda: reference_forward(model, idx)}
    with torch.no_grad():
        same = torch.equal(model(idx), reference_forward(model, idx))
        for _ in range(3):  # warm-up
            for run in runs.values():
                run()
        for _ in range(args.repeats):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                timings[name].append(time.perf_counter() - start)

    print(
        f"{args.preset} preset, batch {args.batch} x {positions} positions, {args.repeats} interleaved runs each, {args.threads} thread(s)"
    )
    medians = {name: statistics.median(times) for name, times in timings.items()}
    for name, median in medians.items():
        spread = statistics.quantiles(timings[name], n=4)
        print(f"  {name:22s} median {1e3 * median:8.2f} ms   (quartiles {1e3 * spread[0]:.2f}-{1e3 * spread[2]:.2f})")
    print(f"  ratio model / reference: {medians['model (probe off)'] / medians['reference (no hooks)']:.3f}")
    print(f"  logits bit-identical: {same}")


if __name__ == "__main__":
    main()
