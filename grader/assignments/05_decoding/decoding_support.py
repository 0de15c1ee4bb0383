"""Trusted helpers of the 05_decoding tests: the notebook's worked example as a model of grader.testing's toy
language models (run HERE, in the grader, and exposed to the student's `beam_search` and `perplexity`), and the check
of a beam_search result. They ship with the visible tests, so nothing here scores or searches sequences: the visible
tests compare with fixed expected values, and the hidden tests' references (log-probabilities, sequence scores,
greedy and exhaustive search) are in decoding_reference.py, which only they load.

The table model has probabilities you can multiply by hand; `grader.testing.hashed_model` gives every prefix its own
logits, the same in every run and every process, so greedy, beam search and the exhaustive optimum disagree as they
do on a real model. Their limits (rows, calls, positions a test) are grader.testing's: the widest test keeps
3**5 = 243 beams, the slowest correct style (one call per beam and step) makes about 400 calls.
"""

from __future__ import annotations

import torch

from grader.testing import PrefixModel, expect_tensor, table_model

# The notebook's worked example: tokens A, B, C (ids 0, 1, 2) after a one-token prompt (id 0). Keys are
# the tokens generated so far; a prefix not listed gets TABLE_DEFAULT.
A, B, C = 0, 1, 2
TABLE = {
    (): (0.45, 0.35, 0.20),
    (A,): (0.40, 0.30, 0.30),
    (B,): (0.90, 0.05, 0.05),
    (C,): (0.01, 0.01, 0.98),
    (B, A): (0.20, 0.45, 0.35),
    (C, C): (0.01, 0.01, 0.98),
}
TABLE_DEFAULT = (0.40, 0.30, 0.30)


def worked_example(block_size: int = 16) -> PrefixModel:
    """The notebook's table model: the prompt is its first token, the table keys on the tokens after it."""
    return table_model(TABLE, TABLE_DEFAULT, prompt_length=1, block_size=block_size)


def check_ids(out, prompt: list[int], what: str = "beam_search's result") -> list[int]:
    """The new tokens of a beam_search result, after checking its type, shape and that it starts with the prompt."""
    expect_tensor(out, dtype=torch.int64, what=what)
    assert out.dim() == 2 and out.shape[0] == 1, f"{what} should have shape (1, positions), not {tuple(out.shape)}"
    ids = out[0].tolist()
    assert ids[: len(prompt)] == prompt, f"{what} should start with the prompt, then the new tokens"
    return ids[len(prompt) :]
