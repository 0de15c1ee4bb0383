"""Hidden tests of 01_training (instructors only). Tolerances as in test_visible.py: 1e-6 relative on exact
inputs, 1e-5 where the input is a float32 tensor, 1e-4 on float16 logits (compared with the float32 reference)."""

import math

import pytest
import torch
import torch.nn.functional as F

from grader.testing import expect_number, points, seeded


def _reference(logits, targets):
    logits = logits.double()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)).item()


# ---------------------------------------------------------------- mean_nll


@points(2)
def test_mean_nll_batch_dimensions(student):
    """mean_nll accepts any leading dimensions: logits (batch, positions, V) with targets (batch, positions)"""
    g = seeded(11)
    logits = torch.randn(3, 5, 17, generator=g) * 3
    targets = torch.randint(0, 17, (3, 5), generator=g)
    expect_number(
        student.mean_nll(logits, targets),
        _reference(logits, targets),
        rel=1e-5,
        what="mean_nll on logits of shape (3, 5, 17)",
    )


@points(1)
def test_mean_nll_one_row(student):
    """mean_nll accepts a single row: logits (V,) and a 0-d target"""
    logits = torch.tensor([0.3, -1.2, 2.2, 0.0, 1.1])
    target = torch.tensor(3)
    expected = math.log(sum(math.exp(z) for z in logits.tolist()))
    expect_number(student.mean_nll(logits, target), expected, rel=1e-6, what="mean_nll on a (5,) row with a 0-d target")


@points(1)
def test_mean_nll_is_stable_for_extreme_logits(student):
    """mean_nll stays finite and exact when a target's probability underflows float32 (use log_softmax)"""
    logits = torch.tensor([[0.0, -200.0, -50.0], [300.0, 0.0, 0.0]])
    targets = torch.tensor([1, 2])
    out = student.mean_nll(logits, targets)
    expect_number(
        out,
        _reference(logits, targets),
        rel=1e-6,
        what="mean_nll where a target has probability about e^-200 (log(softmax) gives inf here)",
    )


@points(1)
def test_mean_nll_half_precision_in_float32(student):
    """float16 logits are converted to float32 before the softmax; the result is still a Python float"""
    g = seeded(12)
    logits = (torch.randn(4, 8, 300, generator=g) * 4).half()
    targets = torch.randint(0, 300, (4, 8), generator=g)
    expect_number(
        student.mean_nll(logits, targets),
        _reference(logits.float(), targets),
        rel=1e-4,
        what="mean_nll on float16 logits",
    )


@points(1)
def test_mean_nll_mismatched_shapes_raise(student):
    """targets whose shape is not logits.shape[:-1] raise ValueError, even when the element counts agree"""
    with pytest.raises(ValueError):
        student.mean_nll(torch.zeros(2, 3, 7), torch.zeros(3, 2, dtype=torch.int64))


# ---------------------------------------------------------------- perplexity


@points(1)
def test_perplexity_of_a_tensor(student):
    """perplexity of a 0-d float32 tensor (a loss) is a Python float"""
    loss = torch.tensor(4.2)
    expect_number(student.perplexity(loss), math.exp(float(loss)), rel=1e-5, what="perplexity(torch.tensor(4.2))")


@points(1)
def test_perplexity_values(student):
    """perplexity is exp(mean NLL) on several values"""
    for value in (1e-9, 0.75, 3.0, 9.5, 60.0):
        expect_number(student.perplexity(value), math.exp(value), rel=1e-6, what="perplexity of a mean NLL")


@points(1)
def test_perplexity_nan_raises(student):
    """a NaN mean NLL raises ValueError"""
    with pytest.raises(ValueError):
        student.perplexity(float("nan"))


# ---------------------------------------------------------------- perplexity_per_word


@points(1)
def test_per_word_is_per_token_raised_to_tokens_per_word(student):
    """perplexity per word is the per-token perplexity to the power num_tokens / num_words"""
    for nll, tokens, words in ((3.7, 245_569, 217_646), (5.25, 2_088_628, 2_051_910), (0.0, 10, 3), (1.0, 3, 10)):
        expected = math.exp(nll) ** (tokens / words)
        expect_number(
            student.perplexity_per_word(nll, tokens, words),
            expected,
            rel=1e-6,
            what="perplexity_per_word on WikiText-sized counts",
        )


@points(1)
def test_per_word_of_a_tensor(student):
    """perplexity_per_word accepts a 0-d float32 tensor as the mean NLL and returns a Python float"""
    loss = torch.tensor(4.6)
    expected = math.exp(float(loss) * 250_000 / 217_646)
    expect_number(
        student.perplexity_per_word(loss, 250_000, 217_646),
        expected,
        rel=1e-5,
        what="perplexity_per_word(torch.tensor(4.6), 250000, 217646)",
    )


@points(1)
def test_per_word_bad_arguments_raise(student):
    """counts below 1 and a negative mean NLL raise ValueError"""
    for args in ((2.0, 0, 10), (2.0, 10, 0), (2.0, -5, 10), (-1.0, 10, 10)):
        with pytest.raises(ValueError):
            student.perplexity_per_word(*args)
