"""The solution's apply_temperature, top_k_filter and top_p_filter agree with Hugging Face's logits warpers.

transformers' TopPLogitsWarper sorts ascending and removes the tokens whose cumulative probability is
<= 1 - p (keeping the most likely one): the same set as "keep a token while the mass ranked above it is < p",
up to float32 rounding, so top-p is compared on the rows where no boundary decision lies within 1e-5 of p.
TopKLogitsWarper keeps ties at the boundary, like the spec; its rows are drawn with many ties on purpose.
"""

from __future__ import annotations

import pytest
import torch

from course.kit import ROOT
from course.notebook import load_notebook

logits_process = pytest.importorskip(
    "transformers.generation.logits_process", reason="transformers is not installed (pip install '.[hf]')"
)

ROWS, VOCAB = 10_000, 50


@pytest.fixture(scope="module")
def solution():
    return load_notebook(ROOT / "solutions" / "02_sampling.ipynb").namespace


def _input_ids():
    return torch.zeros(ROWS, 1, dtype=torch.long)


def test_temperature_matches_hf(solution):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(ROWS, VOCAB, generator=g) * 3
    for t in (0.3, 0.7, 1.0, 1.5, 4.0):
        expected = logits_process.TemperatureLogitsWarper(t)(_input_ids(), logits.clone())
        assert torch.equal(solution["apply_temperature"](logits, t), expected)


def test_top_k_matches_hf_with_ties(solution):
    g = torch.Generator().manual_seed(1)
    logits = torch.randint(-6, 7, (ROWS, VOCAB), generator=g).float() / 2  # 25 values over 50 tokens: many ties
    logits[::7, :5] = float("-inf")
    for k in (1, 2, 5, 17, 49, 50, 80):
        expected = logits_process.TopKLogitsWarper(k)(_input_ids(), logits.clone())
        got = solution["top_k_filter"](logits, k)
        assert torch.equal(got, expected), f"top_k_filter differs from TopKLogitsWarper for k={k}"


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
