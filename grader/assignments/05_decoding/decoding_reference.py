"""The hidden tests' references for 05_decoding: the log-probabilities of a decoding_support model, the score of a
sequence, every sequence beam search may return ranked by score, and greedy decoding. The release leaves this
file out (only the hidden tests load it): exhaustive search is beam search at a wide enough width, and a score is
most of a perplexity.
"""

from __future__ import annotations

import itertools

import torch


def log_probs(model, prefix: tuple[int, ...]) -> torch.Tensor:
    """The log-probabilities (float64) of the token after `prefix` under a grader.testing.PrefixModel."""
    return torch.log_softmax(model.logits(prefix).double(), dim=-1)


def sequence_score(model, prompt: list[int], new: list[int]) -> float:
    """The sum of the log-probabilities of `new` after `prompt` (float64)."""
    ids = list(prompt)
    total = 0.0
    for token in new:
        total += log_probs(model, tuple(ids))[token].item()
        ids.append(token)
    return total


def every_sequence(vocab_size: int, max_new_tokens: int, eos_id: int | None) -> list[tuple[int, ...]]:
    """Every sequence beam search may return: full length, or ending at its first `eos_id`."""
    found = []
    for length in range(1, max_new_tokens + 1):
        for tokens in itertools.product(range(vocab_size), repeat=length):
            ended = eos_id is not None and eos_id in tokens
            if (ended and tokens.index(eos_id) == length - 1) or (not ended and length == max_new_tokens):
                found.append(tokens)
    return found


def ranked_sequences(model, prompt: list[int], max_new_tokens: int, eos_id: int | None = None):
    """[(score, new tokens)] from the best down, over every sequence beam search may return."""
    scored = [
        (sequence_score(model, prompt, list(tokens)), tokens)
        for tokens in every_sequence(model.config.vocab_size, max_new_tokens, eos_id)
    ]
    return sorted(scored, reverse=True)


def greedy_continuation(model, prompt: list[int], max_new_tokens: int) -> list[int]:
    ids = list(prompt)
    for _ in range(max_new_tokens):
        ids.append(int(log_probs(model, tuple(ids)).argmax()))
    return ids[len(prompt) :]
