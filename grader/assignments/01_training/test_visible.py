"""Visible tests of 01_training: shipped with the assignment, run by `grader check("01_training")`.

Small inputs you can check by hand. The hidden tests check the same rules (the notebook's section 3) on
other inputs: batch dimensions, float16 logits, extreme logits, tensors as inputs, large counts, bad arguments.
Tolerances: results within 1e-6 relative of the exact value (1e-5 where the input is a float32 tensor).
"""

import math

import pytest
import torch

from grader.testing import expect_number, points

# ---------------------------------------------------------------- mean_nll


@points(1)
def test_mean_nll_hand_example(student):
    """mean_nll of one position: -log softmax([2, 1, 0])[0] = 0.4076, returned as a Python float"""
    out = student.mean_nll(torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([0]))
    expected = math.log(math.exp(2) + math.exp(1) + 1) - 2
    expect_number(out, expected, rel=1e-6, what="mean_nll([[2, 1, 0]], [0])")


@points(1)
def test_mean_nll_uniform_is_log_vocab(student):
    """equal logits over V tokens give every token 1/V: mean_nll is ln V whatever the targets"""
    out = student.mean_nll(torch.zeros(4, 10), torch.tensor([0, 3, 9, 9]))
    expect_number(out, math.log(10), rel=1e-6, what="mean_nll of uniform logits over 10 tokens")


@points(1)
def test_mean_nll_averages_positions(student):
    """mean_nll is the mean over positions of each position's negative log-likelihood"""
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]))
    out = student.mean_nll(logits, torch.tensor([0, 2]))
    expected = -(math.log(0.5) + math.log(0.8)) / 2
    expect_number(
        out,
        expected,
        rel=1e-6,
        what="mean_nll with probabilities 0.5 and 0.8 for the targets (the mean of -ln 0.5 and -ln 0.8)",
    )


# ---------------------------------------------------------------- perplexity


@points(1)
def test_perplexity_is_exp(student):
    """perplexity(ln 100) is 100 (within 1e-6 relative), a Python float"""
    expect_number(student.perplexity(math.log(100)), 100.0, rel=1e-6, what="perplexity(ln 100)")


@points(1)
def test_perplexity_of_zero_is_one(student):
    """a model always sure and always right (mean NLL 0) has perplexity 1"""
    expect_number(student.perplexity(0.0), 1.0, rel=1e-6, what="perplexity(0.0)")


@points(1)
def test_perplexity_negative_raises(student):
    """a negative mean NLL raises ValueError (probabilities are at most 1, so NLL >= 0)"""
    with pytest.raises(ValueError):
        student.perplexity(-0.5)


# ---------------------------------------------------------------- perplexity_per_word


@points(1)
def test_per_word_hand_example(student):
    """perplexity_per_word(ln 100, 4 tokens, 2 words) = exp(ln 100 * 4 / 2) = 10,000"""
    out = student.perplexity_per_word(math.log(100), 4, 2)
    expect_number(out, 10_000.0, rel=1e-6, what="perplexity_per_word(ln 100, 4, 2)")


@points(1)
def test_per_word_equals_per_token_when_counts_match(student):
    """with as many words as tokens, the per-word perplexity is the per-token one"""
    out = student.perplexity_per_word(2.5, 1000, 1000)
    expect_number(out, math.exp(2.5), rel=1e-6, what="perplexity_per_word(2.5, 1000, 1000)")
