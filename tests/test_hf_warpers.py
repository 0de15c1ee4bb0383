"""The solutions' filters and penalties agree with Hugging Face's logits processors, and with their formulas (which
run where transformers is not installed): 02's apply_temperature, top_k_filter, top_p_filter and min_p_filter,
03's repetition_penalty (CTRL's, RepetitionPenaltyLogitsProcessor) and additive_penalties (OpenAI's; no processor).

transformers' TopPLogitsWarper sorts ascending and removes the tokens whose cumulative probability is
<= 1 - p (keeping the most likely one): the same set as "keep a token while the mass ranked above it is < p",
up to float32 rounding, so top-p is compared on the rows where no boundary decision lies within 1e-5 of p.
TopKLogitsWarper keeps ties at the boundary, like top_k_filter; its rows are drawn with many ties on purpose.
MinPLogitsWarper (min_tokens_to_keep=1) keeps a token when its probability is >= min_p times the row's largest:
compared on the rows where no token's ratio to the largest lies within 1e-5 of min_p.
"""

from __future__ import annotations

import pytest
import torch

from course.assignments import grading
from course.notebook import load_notebook

try:
    from transformers.generation import logits_process
except ImportError:
    logits_process = None
needs_transformers = pytest.mark.skipif(
    logits_process is None, reason="transformers is not installed (pip install '.[hf]')"
)

ROWS, VOCAB = 10_000, 50


@pytest.fixture(scope="module")
def solution():
    return load_notebook(grading(["top_k_filter", "top_p_filter", "min_p_filter"]).solution).namespace


def _input_ids():
    return torch.zeros(ROWS, 1, dtype=torch.long)


@needs_transformers
def test_temperature_matches_hf(solution):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(ROWS, VOCAB, generator=g) * 3
    for t in (0.3, 0.7, 1.0, 1.5, 4.0):
        expected = logits_process.TemperatureLogitsWarper(t)(_input_ids(), logits.clone())
        assert torch.equal(solution["apply_temperature"](logits, t), expected)


@needs_transformers
def test_top_k_matches_hf_with_ties(solution):
    g = torch.Generator().manual_seed(1)
    logits = torch.randint(-6, 7, (ROWS, VOCAB), generator=g).float() / 2  # 25 values over 50 tokens: many ties
    logits[::7, :5] = float("-inf")
    for k in (1, 2, 5, 17, 49, 50, 80):
        expected = logits_process.TopKLogitsWarper(k)(_input_ids(), logits.clone())
        got = solution["top_k_filter"](logits, k)
        assert torch.equal(got, expected), f"top_k_filter differs from TopKLogitsWarper for k={k}"


@needs_transformers
def test_top_p_matches_hf(solution):
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(ROWS, VOCAB, generator=g) * torch.rand(ROWS, 1, generator=g) * 4
    for p in (0.05, 0.3, 0.5, 0.9, 0.95, 0.999):
        probs = torch.softmax(logits.double(), -1)
        sorted_probs = probs.sort(-1, descending=True).values
        mass_above = sorted_probs.cumsum(-1) - sorted_probs
        clear = ((mass_above - p).abs() > 1e-5).all(-1)  # no decision within float32 rounding of p
        assert clear.sum() > 0.9 * ROWS  # the comparison covers most rows
        expected = logits_process.TopPLogitsWarper(p)(_input_ids(), logits.clone())
        got = solution["top_p_filter"](logits, p)
        assert torch.equal(got[clear], expected[clear]), f"top_p_filter differs from TopPLogitsWarper for p={p}"


def _min_p_rows():
    """Logits whose rows range from peaked to flat, some holding -inf, and the min_p values to try."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(ROWS, VOCAB, generator=g) * torch.rand(ROWS, 1, generator=g) * 4
    logits[::9, 10:20] = float("-inf")
    return logits, (0.0, 0.01, 0.05, 0.1, 0.3, 0.7, 1.0)


def _clear_of_the_bar(logits, min_p):
    """Rows where no token's probability ratio to the row's largest lies within 1e-5 of min_p."""
    probs = torch.softmax(logits.double(), -1)
    ratio = probs / probs.amax(-1, keepdim=True)
    clear = ((ratio - min_p).abs() > 1e-5).all(-1)
    return clear if min_p not in (0.0, 1.0) else torch.ones_like(clear)  # 0 and 1: decided exactly (ties at 1)


def test_min_p_matches_its_formula(solution):
    logits, min_ps = _min_p_rows()
    probs = torch.softmax(logits.double(), -1)
    for min_p in min_ps:
        clear = _clear_of_the_bar(logits, min_p)
        assert clear.sum() > 0.9 * ROWS  # the comparison covers most rows
        expected = logits.masked_fill(probs < min_p * probs.amax(-1, keepdim=True), float("-inf"))
        got = solution["min_p_filter"](logits, min_p)
        assert torch.equal(got[clear], expected[clear]), f"min_p_filter differs from its formula for min_p={min_p}"


@needs_transformers
def test_min_p_matches_hf(solution):
    logits, min_ps = _min_p_rows()
    for min_p in min_ps:
        clear = _clear_of_the_bar(logits, min_p)
        expected = logits_process.MinPLogitsWarper(min_p)(_input_ids(), logits.clone())
        got = solution["min_p_filter"](logits, min_p)
        assert torch.equal(got[clear], expected[clear]), f"min_p_filter differs from MinPLogitsWarper for min_p={min_p}"


@pytest.fixture(scope="module")
def penalties():
    return load_notebook(grading(["repetition_penalty", "additive_penalties"]).solution).namespace


def _histories(rows, length, seed):
    """Histories of ids that repeat (a small range of the vocabulary), and logits of both signs, some -inf."""
    g = torch.Generator().manual_seed(seed)
    history = torch.randint(0, VOCAB // 2, (rows, length), generator=g)
    logits = torch.randn(rows, VOCAB, generator=g) * 3
    logits[::11, 5:9] = float("-inf")
    return logits, history


def test_repetition_penalty_matches_its_formula(penalties):
    logits, history = _histories(2000, 30, seed=4)
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, history, True)
    for penalty in (0.5, 1.0, 1.2, 2.0):
        expected = torch.where(seen, torch.where(logits > 0, logits / penalty, logits * penalty), logits)
        got = penalties["repetition_penalty"](logits, history, penalty)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)  # the same float32 operations: bit for bit


@needs_transformers
def test_repetition_penalty_matches_hf(penalties):
    logits, history = _histories(2000, 30, seed=5)
    for penalty in (0.8, 1.0, 1.3, 2.5):
        expected = logits_process.RepetitionPenaltyLogitsProcessor(penalty)(history, logits.clone())
        got = penalties["repetition_penalty"](logits, history, penalty)
        assert torch.equal(got, expected), (
            f"repetition_penalty differs from RepetitionPenaltyLogitsProcessor({penalty})"
        )


def test_additive_penalties_match_their_formula(penalties):
    logits, history = _histories(2000, 30, seed=6)
    counts = torch.zeros_like(logits).scatter_add(-1, history, torch.ones(history.shape))
    for frequency, presence in ((0.0, 0.0), (0.5, 0.0), (0.0, 0.7), (0.3, 0.4), (-0.2, -0.5)):
        expected = logits - frequency * counts - presence * (counts > 0).float()
        got = penalties["additive_penalties"](logits, history, frequency, presence)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
