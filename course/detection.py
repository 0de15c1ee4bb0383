"""Telling model text from human text, and marking model text: the measurements of lecture 05.

- Information content: `word_surprisal`, the bits a word costs the model in a context (the zebra example).
- A GLTR-style detector (Gehrmann et al. 2019): `gltr_features` summarise a passage by its tokens' ranks and
  surprisal under the model, and `fit_detector` fits a logistic regression on them (`Detector`).
- A green-list watermark (Kirchenbauer et al. 2023): `green_list` splits the vocabulary, seeded by the key and
  the previous token; `watermark` wraps any `next_token(logits, history)` rule (the kit's contract,
  `course.generation.NextToken`) so that green tokens get `delta` added to their logits; `watermark_z_score`
  counts the green tokens of a text and turns the count into a z-score.
- `continuation_perplexity`: what a text costs in quality, scored by the unwatermarked model.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from course.generation import NextToken
from course.lens import token_ranks

# ------------------------------------------------------------------ information content


@torch.no_grad()
def word_surprisal(model, tokenizer, context: str, word: str) -> float:
    """The surprisal, in bits, of `word` (all its tokens, after a space) following `context`: -log2 p(word)."""
    context_ids, word_ids = tokenizer.encode(context), tokenizer.encode(" " + word)
    if not context_ids:
        raise ValueError("expected a non-empty context")
    _, bits = token_ranks(model, torch.tensor(context_ids + word_ids))
    return bits[len(context_ids) - 1 :].sum().item()


# ------------------------------------------------------------------ GLTR detector

FEATURE_NAMES = ("share in top 10", "share in top 100", "share beyond 1000", "mean surprisal (bits)")


def features_from(ranks, surprisal_bits) -> torch.Tensor:
    """The detector's features of one passage from its tokens' ranks and surprisal (bits), in the order of
    `FEATURE_NAMES`: the share of tokens ranked 1-10, 1-100 and above 1000, and the mean surprisal."""
    ranks = torch.as_tensor(ranks).flatten()
    bits = torch.as_tensor(surprisal_bits, dtype=torch.float32).flatten()
    if ranks.numel() == 0 or ranks.shape != bits.shape:
        raise ValueError(f"expected as many ranks as surprisals, and at least one: {ranks.numel()} and {bits.numel()}")
    return torch.stack(
        [(ranks <= 10).float().mean(), (ranks <= 100).float().mean(), (ranks > 1000).float().mean(), bits.mean()]
    )


@torch.no_grad()
def gltr_features(model, passages, skip: int = 0, chunk: int = 8) -> torch.Tensor:
    """`(passages, len(FEATURE_NAMES))`: the features of each passage's tokens after the first `skip` (a prompt
    the passage was continued from is not evidence of who wrote the rest). `passages` is `(n, positions)` ids
    (a tensor, or a list of equal-length lists), scored `chunk` passages per forward pass."""
    passages = torch.as_tensor(passages, dtype=torch.long)
    if passages.dim() != 2 or passages.shape[1] < max(skip + 1, 2) or skip < 0:
        raise ValueError(
            f"expected passages (n, positions) of at least max(skip + 1, 2) = {max(skip + 1, 2)} tokens, "
            f"got {tuple(passages.shape)}"
        )
    start = max(skip - 1, 0)  # ranks[:, t] scores the token at t + 1
    rows = []
    for batch in passages.split(chunk):
        ranks, bits = token_ranks(model, batch)
        rows += [features_from(r[start:], b[start:]) for r, b in zip(ranks, bits)]
    return torch.stack(rows)


@dataclass
class Detector:
    """A logistic regression on standardised features: `probability(features)` that a passage is model text."""

    mean: torch.Tensor
    std: torch.Tensor
    weights: torch.Tensor
    bias: torch.Tensor

    def probability(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(((features - self.mean) / self.std) @ self.weights + self.bias)

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """1 for model text, 0 for human text."""
        return (self.probability(features) > 0.5).long()

    def accuracy(self, features: torch.Tensor, labels) -> float:
        return (self.predict(features) == torch.as_tensor(labels)).float().mean().item()


def fit_detector(features: torch.Tensor, labels, l2: float = 1e-2, steps: int = 200) -> Detector:
    """Fit `Detector` to `features` (n, d) and `labels` (n,) (1 = model text, 0 = human) by L-BFGS on the
    cross-entropy plus `l2` times the squared weights (which keeps separable data from sending them to infinity)."""
    features = torch.as_tensor(features, dtype=torch.float32)
    labels = torch.as_tensor(labels, dtype=torch.float32)
    if features.dim() != 2 or labels.shape != (features.shape[0],):
        raise ValueError(
            f"expected features (n, d) and labels (n,), got {tuple(features.shape)} and {tuple(labels.shape)}"
        )
    if set(labels.tolist()) != {0.0, 1.0}:
        raise ValueError("expected labels 0 (human) and 1 (model), both present")
    mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
    x = (features - mean) / std
    weights = torch.zeros(x.shape[1], requires_grad=True)
    bias = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([weights, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def loss():
        optimizer.zero_grad()
        value = F.binary_cross_entropy_with_logits(x @ weights + bias, labels) + l2 * weights.square().sum()
        value.backward()
        return value

    optimizer.step(loss)
    return Detector(mean, std, weights.detach(), bias.detach())


# ------------------------------------------------------------------ green-list watermark


def green_list(prev_id: int, vocab_size: int, gamma: float, key: int) -> torch.Tensor:
    """`(vocab_size,)` bool: the green tokens after `prev_id`, exactly round(gamma * vocab_size) of them, chosen
    by a random permutation seeded with the secret `key` (an integer) and `prev_id`."""
    if not 0 < gamma < 1:
        raise ValueError(f"gamma must be in (0, 1), not {gamma}")
    if not 0 <= prev_id < vocab_size:
        raise ValueError(f"prev_id {prev_id} is outside the vocabulary 0..{vocab_size - 1}")
    # torch's CPU generator keeps 32 bits of its seed: hash the pair into 32 bits, so that every bit of both counts
    seed = hashlib.blake2b(f"{int(key)} {int(prev_id)}".encode(), digest_size=4).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(seed, "little"))
    green = torch.zeros(vocab_size, dtype=torch.bool)
    green[torch.randperm(vocab_size, generator=generator)[: round(gamma * vocab_size)]] = True
    return green


def watermark(next_token: NextToken, gamma: float, delta: float, key: int) -> NextToken:
    """A `next_token(logits, history)` rule that adds `delta` to the logits of each row's green tokens (seeded
    by its last token in `history`) and hands the result to `next_token`, which picks as it would have."""

    def watermarked(logits: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        vocab_size = logits.shape[-1]
        greens = torch.stack([green_list(int(row[-1]), vocab_size, gamma, key) for row in history])
        return next_token(logits + delta * greens.to(logits.device, logits.dtype), history)

    return watermarked


def green_mask(ids: Sequence[int], vocab_size: int, gamma: float, key: int, start: int = 1) -> torch.Tensor:
    """`(len(ids) - start,)` bool: whether each token from position `start` on is green after the one before it."""
    ids = [int(i) for i in ids]
    if not 1 <= start <= len(ids):
        raise ValueError(f"start must be in 1..{len(ids)} (each scored token needs the one before it), not {start}")
    return torch.tensor([bool(green_list(ids[t - 1], vocab_size, gamma, key)[ids[t]]) for t in range(start, len(ids))])


def z_score(green_count: int, scored: int, gamma: float) -> float:
    """z = (|s|_G - gamma T) / sqrt(T gamma (1 - gamma)): how many standard deviations more green tokens than
    text written without the key would have (about 0 for such text, large for watermarked text)."""
    if scored < 1:
        raise ValueError("no tokens to score")
    return (green_count - gamma * scored) / math.sqrt(scored * gamma * (1 - gamma))


def watermark_z_score(ids: Sequence[int], vocab_size: int, gamma: float, key: int, start: int = 1) -> float:
    """The z-score of the tokens of `ids` from position `start` on (the generated part, after a prompt)."""
    green = green_mask(ids, vocab_size, gamma, key, start)
    return z_score(int(green.sum()), green.numel(), gamma)


@torch.no_grad()
def continuation_perplexity(model, ids: Sequence[int], start: int) -> float:
    """The perplexity per token of `ids[start:]` given everything before it, under `model`; the ids must fit
    its context. Scored by a model without the watermark, it is the watermark's cost in quality."""
    _, bits = token_ranks(model, torch.as_tensor(list(ids)))
    if not 1 <= start < len(ids):
        raise ValueError(f"start must be in 1..{len(ids) - 1}, not {start}")
    return 2 ** bits[start - 1 :].mean().item()


# ------------------------------------------------------------------ the sentences the lecture says about its numbers


def surprise_summary(word: str, expected_bits: float, unexpected_bits: float) -> str:
    """One sentence on the surprisal of `word` where a reader expects it and where they do not."""
    difference = unexpected_bits - expected_bits
    if difference > 1:
        verdict = f"carries {difference:.1f} bits more information where it is unexpected, as a reader would find"
    elif difference < -1:
        verdict = f"surprises this model {-difference:.1f} bits more where a reader expects it: it has not learned the context"
    else:
        verdict = "costs this model about the same in both contexts (within a bit): it does not yet read the context"
    return f"“{word}” {verdict} ({expected_bits:.1f} bits expected, {unexpected_bits:.1f} bits unexpected)"


def watermark_summary(deltas, detection_rates, perplexities, threshold: float = 4.0) -> str:
    """One sentence on a watermark sweep: the smallest delta whose texts are detected (z > `threshold`) nine
    times in ten or more, and its perplexity against the unwatermarked one (the first delta must be 0)."""
    if deltas[0] != 0:
        raise ValueError("the first delta must be 0, the unwatermarked baseline")
    base = perplexities[0]
    found = [i for i, rate in enumerate(detection_rates) if deltas[i] > 0 and rate >= 0.9]
    false_alarms = f"unwatermarked text is flagged {detection_rates[0]:.0%} of the time"
    if not found:
        return (
            f"No δ up to {deltas[-1]:g} is detected nine times in ten (z > {threshold:g}); {false_alarms}; "
            f"perplexity {base:.0f} unwatermarked, {perplexities[-1]:.0f} at δ = {deltas[-1]:g}"
        )
    i = found[0]
    return (
        f"δ = {deltas[i]:g} is detected {detection_rates[i]:.0%} of the time (z > {threshold:g}) at a perplexity of "
        f"{perplexities[i]:.0f} against {base:.0f} unwatermarked ({perplexities[i] / base - 1:+.0%}); {false_alarms}"
    )
