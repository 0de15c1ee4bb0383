"""Visible tests of 01_training: shipped with the assignment, run by `grader check("01_training")`.

Small inputs you can check by hand, one test for each rule of the notebook's section 3. The hidden tests check
the same rules on other inputs: batch dimensions, float16 logits, other extreme logits, tensors as inputs, large
counts, other bad arguments. Tolerances: results within 1e-6 relative of the exact value (1e-5 where the input is a
float32 tensor).
"""

import math

import pytest
import torch

from grader.testing import expect_number, expect_raises, points

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


@points(1)
def test_mean_nll_stays_finite_where_a_probability_underflows(student):
    """mean_nll is exact where the target's probability, about e^-120, is 0 in float32 (log_softmax, not log(softmax))"""
    out = student.mean_nll(torch.tensor([[0.0, -120.0]]), torch.tensor([1]))
    expect_number(out, what="mean_nll([[0, -120]], [1])")
    cause = ": log(softmax(...)) gives inf here, as e^-120 rounds to 0 in float32; use torch.log_softmax"
    assert math.isclose(out, 120.0, rel_tol=1e-6), (
        f"mean_nll([[0, -120]], [1]) should be 120 + log(1 + e^-120) = 120.0 (within 1e-6 relative), but it is "
        f"{out:g}" + (cause if math.isinf(out) else "")
    )


@points(1)
def test_mean_nll_refuses_targets_of_the_wrong_shape(student):
    """targets whose shape is not logits.shape[:-1] raise ValueError"""
    with expect_raises(
        ValueError,
        "mean_nll of logits (2, 4, 5) with targets (8,)",
        because="the targets must have the shape logits.shape[:-1], (2, 4) here; compare the shapes before flattening "
        "anything",
    ):
        student.mean_nll(torch.zeros(2, 4, 5), torch.zeros(8, dtype=torch.int64))


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


@points(1)
def test_perplexity_of_a_nan_loss_raises(student):
    """a NaN mean NLL (a 0-d tensor, as a diverged loss is) raises ValueError"""
    with expect_raises(
        ValueError,
        "perplexity(torch.tensor(nan))",
        because="every comparison with NaN is False, so `value < 0` lets NaN through; refuse what is not `>= 0`",
    ):
        student.perplexity(torch.tensor(float("nan")))


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


@points(1)
def test_per_word_refuses_counts_below_one(student):
    """a count of 0 tokens or 0 words raises ValueError"""
    for tokens, words in ((0, 4), (4, 0)):
        with expect_raises(
            ValueError,
            f"perplexity_per_word(1.0, {tokens}, {words})",
            because="check that both counts are at least 1 before using them",
        ):
            student.perplexity_per_word(1.0, tokens, words)
