"""Perplexity of a model on a tokenized split, and the `course eval` command.

The split is cut into windows of `block_size` input tokens. With the default stride (= block_size) the
windows do not overlap: every token is predicted once, from the tokens before it in its own window
(0 to block_size - 1 of them). A smaller `--stride` overlaps the windows and scores only each window's
new targets, so that every prediction sees at least block_size - stride tokens of context: a lower,
slower, more faithful number. The last window is moved back to end at the split's end.

Perplexity per BPE token is exp(mean NLL per token); per WikiText word it is exp(total NLL / words),
which does not depend on the tokenizer and so compares with published word-level numbers.
"""

from __future__ import annotations

import argparse
import ctypes
import math
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from course.device import DEVICE_CHOICES, autocast, resolve_device
from course.errors import UserError
from course.loss import token_nll_

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


@dataclass
class Perplexity:
    loss: float  # mean negative log-likelihood per predicted token, in nats
    per_token: float
    per_word: float
    tokens_scored: int


def windows(n_tokens: int, block_size: int, stride: int) -> list[tuple[int, int]]:
    """(start, first scored position) of each window; together they score every target token exactly once.

    Window position j holds the input tokens[start + j] and predicts tokens[start + j + 1].
    """
    if n_tokens < 2:
        raise UserError(f"a split needs at least 2 tokens to score, this one has {n_tokens}")
    if not 1 <= stride <= block_size:
        raise UserError(f"the window stride must be between 1 and the context length {block_size}, got {stride}")
    length = min(block_size, n_tokens - 1)
    last_start = n_tokens - 1 - length
    result, scored_until, start = [], 0, 0  # targets tokens[1 .. scored_until] are already scored
    while True:
        start = min(start, last_start)
        result.append((start, scored_until - start))
        scored_until = start + length
        if start == last_start:
            return result
        start += stride


@torch.no_grad()
def perplexity(
    model,
    tokens: np.ndarray,
    n_words: int,
    *,
    stride: int | None = None,
    batch_size: int = 16,
    max_tokens: int | None = None,
    desc: str | None = None,
) -> Perplexity:
    """Perplexity of `model` on `tokens`; `max_tokens` scores only evenly spaced windows (a quick estimate).

    `desc` names the tqdm bar; without it no bar is shown.
    """
    block_size = model.config.block_size
    spans = windows(len(tokens), block_size, stride or block_size)
    if max_tokens is not None and len(spans) * block_size > max_tokens:
        keep = np.linspace(0, len(spans) - 1, max(1, max_tokens // block_size)).round().astype(int)
        spans = [spans[i] for i in np.unique(keep)]
    length = min(block_size, len(tokens) - 1)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total_nll, scored = 0.0, 0
    batches = [spans[i : i + batch_size] for i in range(0, len(spans), batch_size)]
    for batch in tqdm(batches, desc=desc, disable=True if desc is None else None, leave=False, unit="batch"):
        rows = np.stack([tokens[start : start + length + 1] for start, _ in batch]).astype(np.int64)
        rows = torch.from_numpy(rows).to(device)
        with autocast(device):
            logits = model(rows[:, :-1])
        nll = token_nll_(logits.float().flatten(0, 1), rows[:, 1:].flatten()).view(len(batch), length)
        first_scored = torch.tensor([first for _, first in batch], device=device)
        mask = torch.arange(length, device=device)[None, :] >= first_scored[:, None]
        total_nll += nll[mask].sum().item()
        scored += int(mask.sum())
    model.train(was_training)
    loss = total_nll / scored
    # estimated total NLL of the whole split (exact when every window was scored)
    split_nll = loss * (len(tokens) - 1)
    return Perplexity(loss, math.exp(loss), math.exp(split_nll / n_words), scored)


def format_perplexity(ppl: Perplexity) -> str:
    return f"loss {ppl.loss:.3f}, perplexity {ppl.per_token:.1f} per token, {ppl.per_word:.1f} per word"


def keep_freed_memory() -> None:
    """Let glibc keep freed memory for the next step instead of giving it back to the system.

    Every step allocates and frees the same large tensors (the logits and, in training, their gradients:
    50 MB for the tiny preset). By default glibc unmaps each one on free and the next step page-faults it back in,
    which costs about a third of a CPU step. Elsewhere than Linux/glibc this does nothing.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


SPLITS = ("valid", "test")


def split_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SPLITS + ("train",)]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of train, valid, test; got {text!r}")
    return names


def run(args) -> int:
    from course.checkpoint import check_same_tokenizer, load_checkpoint
    from course.data import prepare
    from course.tokenizer import Tokenizer

    device = resolve_device(args.device)
    if device.type == "cpu":
        keep_freed_memory()
    model, tokenizer = load_checkpoint(args.checkpoint, device=device)
    data = prepare(args.dataset, data_dir=args.data_dir, vocab_size=tokenizer.vocab_size)
    check_same_tokenizer(tokenizer, Tokenizer.load(data.tokenizer_path), args.checkpoint)
    stride = args.stride or model.config.block_size
    print(
        f"{args.checkpoint}: {model.num_params() / 1e6:.2f}M parameters, windows of {model.config.block_size} "
        f"tokens, stride {stride}"
    )
    for split in args.split:
        ppl = perplexity(
            model,
            data.tokens(split),
            data.num_words[split],
            stride=stride,
            batch_size=args.batch_size,
            desc=f"eval {split}",
        )
        print(f"{split}: {format_perplexity(ppl)} ({ppl.tokens_scored} tokens, {data.num_words[split]} words)")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="validation and test perplexity of a checkpoint",
        description="Perplexity per BPE token and per WikiText word over whole splits.",
    )
    parser.add_argument("checkpoint", help="checkpoint folder written by `course train`")
    parser.add_argument("--dataset", default="wikitext-2-v1", help="WikiText config (default wikitext-2-v1)")
    parser.add_argument("--data-dir", default=None, help="local WikiText folder (default: $COURSE_DATA_DIR or the hub)")
    parser.add_argument(
        "--split", type=split_list, default=list(SPLITS), help="comma-separated splits (default valid,test)"
    )
    parser.add_argument(
        "--stride",
        type=positive_int,
        default=None,
        help="window stride in tokens (default: the context length, i.e. non-overlapping windows)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=16, help="windows per forward pass")
    parser.add_argument(
        "--device", choices=DEVICE_CHOICES, default="auto", help="default auto: cuda, then mps, then cpu"
    )
    parser.set_defaults(run=run)
