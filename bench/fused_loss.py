"""The training step's two fusions, side by side in one run: the fused loss (course/loss.py) against PyTorch's
cross-entropy, and AdamW's fused update against its for-loop one.

Each variant runs the real training step of a preset on CPU (AdamW, clipping) on random ids, alternating in rounds
so that a busy machine slows all alike; each round times a few steps, and the table keeps each one's best round.

    python bench/fused_loss.py [--presets tiny,laptop] [--rounds 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from course.model import GPT, preset
from course.train import PRESET_DEFAULTS, TrainConfig, make_optimizer, train_step


class PlainLoss(torch.nn.Module):
    """The model with the loss written the usual way: every logit, then F.cross_entropy."""

    def __init__(self, model: GPT):
        super().__init__()
        self.model = model

    def forward(self, idx, targets):
        logits = self.model(idx)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


def for_loop_twin(optimizer: torch.optim.AdamW) -> torch.optim.AdamW:
    """The same AdamW (groups, rates, betas) updating one parameter at a time, as before torch 2.4 on the CPU."""
    groups = [{key: value for key, value in group.items() if key != "fused"} for group in optimizer.param_groups]
    return torch.optim.AdamW(groups, fused=False, foreach=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,laptop")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    print(
        "| preset | vocab | batch x context | PyTorch's loss, ms/step | fused loss, for-loop AdamW | both fused "
        f"| speed-up of the loss | of AdamW |  ({args.threads} thread(s))"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for name in args.presets.split(","):
        vocab = PRESET_DEFAULTS[name]["vocab_size"]
        torch.manual_seed(0)
        model = GPT(preset(name, vocab))
        config = TrainConfig(preset=name).resolved()
        fused_adamw = make_optimizer(model, config, device)
        rows = torch.randint(0, vocab, (config.batch_size, model.config.block_size + 1))
        batches = [(rows[:, :-1], rows[:, 1:])]
        variants = {
            "plain loss": (PlainLoss(model), fused_adamw),
            "for-loop AdamW": (model, for_loop_twin(fused_adamw)),
            "both fused": (model, fused_adamw),
        }
        best = dict.fromkeys(variants, float("inf"))
        for _ in range(args.rounds):
            for label, (module, optimizer) in variants.items():
                train_step(module, optimizer, batches, config, config.lr, device)  # warm-up
                started = time.perf_counter()
                for _ in range(args.steps):
                    train_step(module, optimizer, batches, config, config.lr, device)
                best[label] = min(best[label], (time.perf_counter() - started) / args.steps)
        plain, loop, fused = (1000 * best[label] for label in variants)
        print(
            f"| {name} | {vocab:,} | {config.batch_size} x {model.config.block_size} | {plain:.0f} | {loop:.0f} "
            f"| {fused:.0f} | {plain / fused:.2f}x | {loop / fused:.2f}x |"
        )


if __name__ == "__main__":
    main()
