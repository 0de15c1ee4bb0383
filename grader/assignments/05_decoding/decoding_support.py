"""Trusted helpers of the 05_decoding tests: small deterministic language models that run HERE, in the
grader, and are exposed to the student's `beam_search` and `perplexity`. They ship with the visible tests,
so nothing here scores or searches sequences: the visible tests compare with fixed expected values, and the
hidden tests' references (log-probabilities, sequence scores, greedy and exhaustive search) are in
decoding_reference.py, which only they load.

`PrefixModel` computes each position's next-token logits from the whole prefix ending there, through a
rule given as a function of that prefix: a hand-written table (`table_model`, the worked example of the
notebook, with probabilities you can multiply by hand) or a hash of the prefix that seeds a generator
(`hashed_model`: every prefix gets its own logits, the same in every run and every process, so greedy,
beam search and the exhaustive optimum disagree as they do on a real model). Logits are log-probabilities
plus a different constant per prefix, so code that sums raw logits instead of log-softmax gets other
sums.

The model checks what student code hands it before any work (int64 ids of shape (batch, positions), ids
in the vocabulary, at most `block_size` positions, at most MAX_ROWS rows) and counts its calls and the
positions it has run, so a runaway loop is stopped with a sentence the test's feedback repeats, and what
it remembers of the prefixes it was given (their logits, computed once) stays within MAX_POSITIONS.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from types import SimpleNamespace

import torch

from grader.testing import expect_tensor, expose

MAX_ROWS = 4096  # the widest test keeps 3**5 = 243 beams
MAX_CALLS = 5000  # the slowest correct style (one call per beam and step) needs about 400
MAX_POSITIONS = 1 << 16  # rows x positions over a test's calls (the solution's widest test runs 208, one call per
# beam 142); each position run is at most one remembered prefix, a few hundred bytes

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


class PrefixModel:
    """A language model whose logits at position t are `rule(ids[: t + 1])` (a tuple of ints -> vocab floats)."""

    def __init__(self, rule: Callable[[tuple[int, ...]], list[float]], vocab_size: int, block_size: int):
        self.rule = rule
        self.config = SimpleNamespace(vocab_size=vocab_size, block_size=block_size)
        self.calls = 0
        self.positions = 0  # rows x positions run for student code
        self._memo: dict[tuple[int, ...], torch.Tensor] = {}

    def exposed(self):
        config = SimpleNamespace(vocab_size=self.config.vocab_size, block_size=self.config.block_size)
        return expose(self, methods=("__call__", "forward"), attributes={"config": config})

    def forward(self, idx, cache=None):
        return self(idx, cache)

    def __call__(self, idx, cache=None):
        self.calls += 1
        if self.calls > MAX_CALLS:
            raise ValueError(f"the model was called more than {MAX_CALLS} times in one test: far more than needed")
        if cache is not None:
            raise TypeError("this test's model takes no cache: call model(ids)")
        expect_tensor(idx, dtype=torch.int64, what="the ids given to the model")
        if idx.dim() != 2 or not 1 <= idx.shape[1] <= self.config.block_size or not 1 <= idx.shape[0] <= MAX_ROWS:
            raise ValueError(
                f"the model takes ids of shape (batch, positions) with 1 to block_size = {self.config.block_size} "
                f"positions and at most {MAX_ROWS} rows, not {tuple(idx.shape)}"
            )
        if bool(((idx < 0) | (idx >= self.config.vocab_size)).any()):
            raise ValueError(f"the model was given ids outside its vocabulary 0..{self.config.vocab_size - 1}")
        self.positions += idx.numel()
        if self.positions > MAX_POSITIONS:
            raise ValueError(f"the model was run on more than {MAX_POSITIONS} positions in one test: far more than needed")
        rows = idx.tolist()
        return torch.stack([torch.stack([self.logits(tuple(row[: t + 1])) for t in range(len(row))]) for row in rows])

    def logits(self, prefix: tuple[int, ...]) -> torch.Tensor:
        if prefix not in self._memo:
            self._memo[prefix] = torch.tensor(self.rule(prefix), dtype=torch.float32)
        return self._memo[prefix]


def _offset(prefix: tuple[int, ...]) -> float:
    """A constant added to a prefix's log-probabilities: logits, not log-probabilities."""
    return 1.0 + zlib.crc32(repr(prefix).encode()) % 997 / 100


def table_model(block_size: int = 16) -> PrefixModel:
    """The worked example: the prompt is its first token, the table keys on the tokens after it."""

    def rule(prefix):
        probs = TABLE.get(prefix[1:], TABLE_DEFAULT)
        return [math.log(p) + _offset(prefix) for p in probs]

    return PrefixModel(rule, vocab_size=3, block_size=block_size)


def hashed_model(vocab_size: int, seed: int, scale: float = 1.0, block_size: int = 32) -> PrefixModel:
    """Logits drawn from N(0, scale^2), seeded by a hash of (seed, prefix): deterministic everywhere."""

    def rule(prefix):
        generator = torch.Generator().manual_seed(zlib.crc32(repr((seed, prefix)).encode()))
        return (torch.randn(vocab_size, generator=generator, dtype=torch.float64) * scale + _offset(prefix)).tolist()

    return PrefixModel(rule, vocab_size=vocab_size, block_size=block_size)


def check_ids(out, prompt: list[int], what: str = "beam_search's result") -> list[int]:
    """The new tokens of a beam_search result, after checking its type, shape and that it starts with the prompt."""
    expect_tensor(out, dtype=torch.int64, what=what)
    assert out.dim() == 2 and out.shape[0] == 1, f"{what} should have shape (1, positions), not {tuple(out.shape)}"
    ids = out[0].tolist()
    assert ids[: len(prompt)] == prompt, f"{what} should start with the prompt, then the new tokens"
    return ids[len(prompt) :]
