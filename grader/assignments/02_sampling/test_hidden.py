"""Hidden tests of 02_sampling (not shipped to students).

A failed hidden test shows the student only its docstring and assertion message, so every message says
which rule was broken without quoting the inputs. Tolerances: 1e-6 on exact arithmetic, Bernstein bounds
(grader.testing.expect_frequencies) on sampled frequencies. When sample_next draws the wrong tokens, the
feedback names the first of the student's own filters that is wrong on that input (trusted_filters.py) before
it blames the order of the filters.
"""

import math

import pytest
import torch

from grader.answers import expect_prediction
from grader.testing import StudentError, expect_frequencies, expect_tensor, helper_module, points, seeded

trusted = helper_module(__file__, "trusted_filters.py")
INF = float("-inf")


def _probs(logits):
    return torch.softmax(logits.double(), dim=-1)


# ================================================================ greedy


@points(1)
def test_greedy_ties_first_index(student):
    """greedy returns the first index among tied maxima (as argmax)"""
    out = student.greedy(torch.tensor([1.0, 4.0, 0.0, 4.0, 4.0]))
    expect_tensor(out, dtype=torch.int64, shape=())
    assert out.item() == 1, "on tied maxima greedy must return the first of their indices, as torch.argmax does"


@points(1)
def test_greedy_leading_batch_dims(student):
    """greedy works on logits with several leading batch dimensions"""
    logits = torch.arange(2 * 3 * 7, dtype=torch.float32).reshape(2, 3, 7).remainder(5.0)
    out = student.greedy(logits)
    expect_tensor(out, dtype=torch.int64, shape=(2, 3))
    assert out.tolist() == logits.argmax(-1).tolist(), (
        "greedy must take the argmax over the last dimension of every row"
    )


@points(1)
def test_greedy_half_precision_and_inf(student):
    """greedy handles float16 / bfloat16 logits and -inf entries"""
    for dtype in (torch.float16, torch.bfloat16):
        logits = torch.tensor([[INF, -3.0, -2.0], [0.5, INF, 0.25]], dtype=dtype)
        out = student.greedy(logits)
        expect_tensor(out, dtype=torch.int64, shape=(2,))
        assert out.tolist() == [2, 0], f"greedy gave a wrong index on {dtype} logits with -inf entries"


# ================================================================ sample


@points(2)
def test_sample_distribution_with_removed_tokens(student):
    """sample follows softmax(logits) and never draws a -inf token (20,000 draws)"""
    logits = torch.tensor([1.0, INF, 0.0, 2.0, -1.0])
    n = 20_000
    out = student.sample(logits.expand(n, 5), generator=seeded(11))
    expect_tensor(out, dtype=torch.int64, shape=(n,))
    expect_frequencies(out, _probs(logits), "sample")


@points(1)
def test_sample_each_row_has_its_own_distribution(student):
    """sample draws row by row, over the last dimension (softmax over the vocabulary, not the batch)"""
    # 2 distinct rows, 10,000 copies each: row A puts all its mass on token 0, row B on tokens 1 and 2
    a = torch.tensor([0.0, INF, INF])
    b = torch.tensor([INF, 0.0, math.log(3.0)])
    logits = torch.stack([a, b]).repeat(10_000, 1)
    out = student.sample(logits, generator=seeded(12))
    expect_tensor(out, dtype=torch.int64, shape=(20_000,))
    assert (out[0::2] == 0).all(), "a row whose only finite logit is token 0 drew another token"
    rows_b = out[1::2]
    assert (rows_b != 0).all(), "a row where token 0 has logit -inf drew token 0"
    expect_frequencies(rows_b - 1, torch.tensor([0.25, 0.75], dtype=torch.float64), "sample")


@points(1)
def test_sample_leading_batch_dims(student):
    """sample returns one id per row for logits of shape (2, 3, V)"""
    logits = torch.full((2, 3, 6), INF)
    for i in range(6):
        logits.view(6, 6)[i, i] = 0.0  # row i can only draw token i
    out = student.sample(logits, generator=seeded(13))
    expect_tensor(out, dtype=torch.int64, shape=(2, 3))
    assert out.reshape(-1).tolist() == list(range(6)), "sample mixed up rows of a (2, 3, V) input"


@points(1)
def test_sample_half_precision(student):
    """sample accepts float16 and bfloat16 logits (the softmax in float32)"""
    for dtype in (torch.float16, torch.bfloat16):
        logits = torch.tensor([0.0, 1.0, INF, 0.5], dtype=dtype).expand(1000, 4)
        out = student.sample(logits, generator=seeded(14))
        expect_tensor(out, dtype=torch.int64, shape=(1000,))
        assert (out != 2).all(), f"sample drew a -inf token from {dtype} logits"
        assert len(set(out.tolist())) == 3, f"sample on {dtype} logits should draw all three finite tokens"


@points(2)
def test_sample_randomness_only_fromseeded(student):
    """sample takes its randomness from the generator: same seed, same draws; other seed, other draws"""
    logits = torch.zeros(1000, 10)
    first = student.sample(logits, generator=seeded(123))
    second = student.sample(logits, generator=seeded(123))
    other = student.sample(logits, generator=seeded(456))
    expect_tensor(first, dtype=torch.int64, shape=(1000,))
    assert first.tolist() == second.tolist(), (
        "two calls with identically seeded generators gave different draws: pass generator=generator to the random call"
    )
    # two independent uniform draws over 10 tokens agree on all 1000 rows with probability 10**-1000
    assert first.tolist() != other.tolist(), (
        "differently seeded generators gave the same draws: the randomness must come from the generator argument"
    )


# ================================================================ temperature


@points(1)
def test_temperature_values_batch(student):
    """apply_temperature divides every row by the temperature; -inf stays -inf"""
    logits = torch.tensor([[[1.0, INF, -3.0]], [[0.0, 2.5, 5.0]]])
    out = student.apply_temperature(logits, 0.5)
    expect_tensor(out, dtype=torch.float32, shape=(2, 1, 3))
    expected = torch.tensor([[[2.0, INF, -6.0]], [[0.0, 5.0, 10.0]]])
    torch.testing.assert_close(
        out,
        expected,
        rtol=0,
        atol=1e-6,
        msg="apply_temperature should return logits / temperature (a temperature < 1 sharpens)",
    )


@points(1)
def test_temperature_one_is_identity(student):
    """temperature 1 changes nothing"""
    logits = torch.tensor([0.3, -1.7, 2.2])
    out = student.apply_temperature(logits, 1.0)
    expect_tensor(out, dtype=torch.float32, shape=(3,))
    assert out.tolist() == logits.tolist(), "temperature 1 must leave the logits unchanged"


@points(1)
def test_temperature_keeps_dtype(student):
    """apply_temperature keeps float16 / bfloat16 logits in their dtype"""
    for dtype in (torch.float16, torch.bfloat16):
        logits = torch.tensor([1.0, -2.0, 3.0], dtype=dtype)
        out = student.apply_temperature(logits, 2.0)
        expect_tensor(out, dtype=dtype, shape=(3,))
        assert out.float().tolist() == [0.5, -1.0, 1.5], f"wrong values for {dtype} logits"


@points(1)
def test_temperature_negative_raises(student):
    """a negative temperature raises ValueError"""
    with pytest.raises(ValueError):
        student.apply_temperature(torch.tensor([1.0, 2.0]), -0.5)


# ================================================================ top-k


@points(2)
def test_top_k_rows_of_a_batch(student):
    """top_k_filter cuts each row of a (2, 3, V) batch at its own k-th largest logit"""
    logits = torch.tensor(
        [
            [[0.0, 1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0]],
            [[2.0, 9.0, 2.0, -1.0, 2.0], [INF, 5.0, INF, 3.0, 4.0], [-5.0, -4.0, -3.0, -2.0, -1.0]],
        ]
    )
    expected = torch.tensor(
        [
            [[INF, INF, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, INF, INF], [1.0, 1.0, 1.0, 1.0, 1.0]],
            [[2.0, 9.0, 2.0, INF, 2.0], [INF, 5.0, INF, 3.0, 4.0], [INF, INF, -3.0, -2.0, -1.0]],
        ]
    )
    out = student.top_k_filter(logits, 3)
    expect_tensor(out, dtype=torch.float32, shape=(2, 3, 5))
    for row, (got, want) in enumerate(zip(out.reshape(6, 5), expected.reshape(6, 5))):
        assert got.tolist() == want.tolist(), (
            f"top_k_filter with k=3 is wrong on row {row} of a (2, 3, V) batch: keep every token whose logit is >= "
            "the row's 3rd largest (ties kept), leave kept logits unchanged, set the others to -inf"
        )


@points(1)
def test_top_k_exactly_k_kept_without_ties(student):
    """without ties, top_k_filter keeps exactly k tokens"""
    logits = torch.tensor([0.3, -0.2, 1.7, 0.9, -1.1, 2.4, 0.0, 1.2])
    for k in (1, 2, 5, 7):
        out = student.top_k_filter(logits, k)
        expect_tensor(out, dtype=torch.float32, shape=(8,))
        kept = int(torch.isfinite(out).sum())
        assert kept == k, (
            f"with distinct logits top_k_filter(logits, k) must keep exactly k tokens; it kept {kept} for k={k}"
        )
        expected = logits.masked_fill(logits < logits.topk(k).values[-1], INF)
        assert out.tolist() == expected.tolist(), (
            f"top_k_filter kept the wrong tokens for k={k}: keep the k largest logits unchanged, the others -inf"
        )


@points(1)
def test_top_k_large_k_keeps_all(student):
    """k equal to or larger than the vocabulary keeps every token"""
    logits = torch.tensor([[0.5, -1.0, INF, 2.0]])
    for k in (4, 5, 1000):
        out = student.top_k_filter(logits, k)
        expect_tensor(out, dtype=torch.float32, shape=(1, 4))
        assert out.tolist() == logits.tolist(), f"k >= vocabulary size must keep every token (failed for k={k})"


@points(1)
def test_top_k_fewer_finite_than_k(student):
    """when a row has fewer finite logits than k, top_k_filter keeps them all and -inf stays -inf"""
    logits = torch.tensor([INF, 1.0, INF, INF, 0.5, INF])
    out = student.top_k_filter(logits, 3)
    expect_tensor(out, dtype=torch.float32, shape=(6,))
    assert out.tolist() == logits.tolist(), "a row with only 2 finite logits and k=3 must be returned unchanged"


@points(1)
def test_top_k_half_precision(student):
    """top_k_filter keeps float16 / bfloat16 logits in their dtype"""
    for dtype in (torch.float16, torch.bfloat16):
        logits = torch.tensor([1.0, 3.0, 2.0, 3.0], dtype=dtype)
        out = student.top_k_filter(logits, 2)
        expect_tensor(out, dtype=dtype, shape=(4,))
        assert out.float().tolist() == [INF, 3.0, INF, 3.0], f"top_k_filter is wrong on {dtype} logits"


@points(1)
def test_top_k_negative_k_raises(student):
    """a negative k raises ValueError"""
    with pytest.raises(ValueError):
        student.top_k_filter(torch.tensor([1.0, 2.0, 3.0]), -2)


# ================================================================ top-p


def _probability_rows():
    # each row's probabilities; with p = 0.7 every cumulative sum stays >= 0.05 away from p
    rows = [
        ([0.5, 0.3, 0.1, 0.05, 0.05], [True, True, False, False, False]),
        ([0.05, 0.05, 0.1, 0.3, 0.5], [False, False, False, True, True]),
        ([0.9, 0.025, 0.025, 0.025, 0.025], [True, False, False, False, False]),
        ([0.6, 0.05, 0.05, 0.05, 0.25], [True, False, False, False, True]),
        ([0.25, 0.25, 0.25, 0.125, 0.125], [True, True, True, False, False]),
        ([0.1, 0.5, 0.3, 0.05, 0.05], [False, True, True, False, False]),
    ]
    probs = torch.tensor([r[0] for r in rows])
    return torch.log(probs).reshape(2, 3, 5), torch.tensor([r[1] for r in rows]).reshape(2, 3, 5)


@points(2)
def test_top_p_rows_of_a_batch(student):
    """top_p_filter decides each row of a (2, 3, V) batch on its own sorted probabilities"""
    logits, keep = _probability_rows()
    out = student.top_p_filter(logits, 0.7)
    expect_tensor(out, dtype=torch.float32, shape=(2, 3, 5))
    for row, (got, want, original) in enumerate(zip(out.reshape(6, 5), keep.reshape(6, 5), logits.reshape(6, 5))):
        kept = torch.isfinite(got)
        assert kept.tolist() == want.tolist(), (
            f"top_p_filter with p=0.7 kept the wrong tokens on row {row} of a (2, 3, V) batch: sort each row by "
            "probability (not by position), keep a token while the mass ranked above it is < p, map back to the "
            "original order"
        )
        assert got[kept].tolist() == original[kept].tolist(), "kept tokens must keep their original logits"


@points(1)
def test_top_p_keeps_crossing_token_unsorted(student):
    """the token whose probability crosses p is kept, even when the logits are not in sorted order"""
    logits = torch.log(torch.tensor([0.15, 0.05, 0.45, 0.35]))
    out = student.top_p_filter(logits, 0.6)
    expect_tensor(out, dtype=torch.float32, shape=(4,))
    assert torch.isfinite(out).tolist() == [False, False, True, True], (
        "top_p_filter dropped the token whose probability crosses p, or kept one ranked after it: a token is kept "
        "when the probability mass ranked above it is < p"
    )


@points(1)
def test_top_p_small_p_keeps_only_the_top(student):
    """a tiny p keeps exactly the most likely token (a row is never left empty)"""
    logits = torch.tensor([[0.1, 0.3, 0.2], [5.0, 0.0, 1.0]])
    out = student.top_p_filter(logits, 1e-4)
    expect_tensor(out, dtype=torch.float32, shape=(2, 3))
    assert torch.isfinite(out).tolist() == [[False, True, False], [True, False, False]], (
        "with a tiny p only the most likely token of each row survives; it must always survive"
    )


@points(1)
def test_top_p_one_keeps_tiny_probabilities(student):
    """p = 1 keeps every token, even those whose probability is too small to move a float32 sum"""
    logits = torch.tensor([0.0, -30.0, -60.0, -90.0, INF])
    out = student.top_p_filter(logits, 1.0)
    expect_tensor(out, dtype=torch.float32, shape=(5,))
    assert out.tolist() == logits.tolist(), (
        "p = 1 must keep every token; the float32 cumulative sum reaches 1.0 before the last tokens, so check p = 1 "
        "explicitly rather than rely on the sum"
    )


@points(1)
def test_top_p_with_minus_inf_in_input(student):
    """top_p_filter accepts logits that already hold -inf (they stay -inf, and don't count)"""
    logits = torch.tensor([INF, math.log(0.55), INF, math.log(0.35), math.log(0.1)])
    out = student.top_p_filter(logits, 0.8)
    expect_tensor(out, dtype=torch.float32, shape=(5,))
    assert torch.isfinite(out).tolist() == [False, True, False, True, False], (
        "top_p_filter is wrong on a row that already holds -inf logits"
    )
    assert not torch.isnan(out).any(), "top_p_filter produced NaN"


@points(2)
def test_top_p_in_float32_for_half_inputs(student):
    """top_p_filter computes probabilities and their cumulative sum in float32 for float16/bfloat16 logits"""
    # each case: the float32 mass of the two most likely tokens sits 7e-5 to 1.4e-3 from p, far above float32
    # rounding (1e-7) but within the rounding of a float16/bfloat16 softmax, which gets the decision wrong
    cases = [
        (torch.bfloat16, [3.0, 2.5, 1.25, 0.5], 0.8615, [True, True, False, False]),  # float32 mass 0.86262
        (torch.bfloat16, [1.0, 0.75, 0.5, 0.0], 0.6475, [True, True, True, False]),  # float32 mass 0.64608
        (torch.float16, [2.0, 1.75, 0.5, 0.25], 0.8175, [True, True, False, False]),  # float32 mass 0.81757
    ]
    for dtype, values, p, want in cases:
        logits = torch.tensor(values, dtype=dtype)
        out = student.top_p_filter(logits, p)
        expect_tensor(out, dtype=dtype, shape=(4,))
        assert torch.isfinite(out).tolist() == want, (
            f"top_p_filter on {dtype} logits kept the wrong tokens near the boundary: convert to float32 "
            "(logits.float()) before the softmax and the cumulative sum, and return the logits in their dtype"
        )


@points(1)
def test_top_p_sum_from_the_small_end_in_float32(student):
    """top_p_filter decides in float32 even where a bfloat16 sum from the least likely token up goes wrong"""
    logits = torch.tensor([0.66796875, 3.28125, -2.5, -0.1181640625, 2.375, 2.453125], dtype=torch.bfloat16)
    out = student.top_p_filter(logits, 0.5143438)
    expect_tensor(out, dtype=torch.bfloat16, shape=(6,))
    kept = torch.isfinite(out).tolist()
    assert kept == [False, True, False, False, False, True], (
        "top_p_filter kept the wrong tokens on bfloat16 logits [0.668, 3.281, -2.5, -0.118, 2.375, 2.453] with "
        "p = 0.5143438: in float32 the most likely token holds 0.51264, below p, so the next one (token 5) crosses p "
        f"and stays; kept mask was {kept}. A sum of bfloat16 probabilities (for example Hugging Face's and litgpt's "
        "sum from the least likely token up, in the logits' dtype) rounds that margin away: compute the softmax and "
        "the cumulative sum in float32"
    )


@points(1)
def test_top_p_out_of_range_raises(student):
    """p > 1 and p < 0 raise ValueError"""
    for p in (1.5, -0.2):
        with pytest.raises(ValueError):
            student.top_p_filter(torch.tensor([1.0, 2.0]), p)


# ================================================================ min-p


@points(2)
def test_min_p_rows_of_a_batch(student):
    """min_p_filter sets each row's bar from that row's own largest probability, in a (2, 3, V) batch"""
    rows = [
        ([0.5, 0.3, 0.1, 0.06, 0.04], [True, True, False, False, False]),  # bar 0.15
        ([0.04, 0.06, 0.1, 0.3, 0.5], [False, False, False, True, True]),
        ([0.2, 0.2, 0.2, 0.2, 0.2], [True, True, True, True, True]),  # bar 0.06: all tied with the top
        ([0.9, 0.04, 0.03, 0.02, 0.01], [True, False, False, False, False]),  # bar 0.27
        ([0.28, 0.26, 0.2, 0.14, 0.12], [True, True, True, True, True]),  # bar 0.084
        ([0.1, 0.45, 0.3, 0.1, 0.05], [False, True, True, False, False]),  # bar 0.135
    ]
    logits = torch.log(torch.tensor([r[0] for r in rows])).reshape(2, 3, 5) + torch.tensor([[[3.0]], [[-2.0]]])
    keep = torch.tensor([r[1] for r in rows]).reshape(2, 3, 5)
    out = student.min_p_filter(logits, 0.3)
    expect_tensor(out, dtype=torch.float32, shape=(2, 3, 5))
    for row, (got, want, original) in enumerate(zip(out.reshape(6, 5), keep.reshape(6, 5), logits.reshape(6, 5))):
        kept = torch.isfinite(got)
        assert kept.tolist() == want.tolist(), (
            f"min_p_filter with min_p=0.3 kept the wrong tokens on row {row} of a (2, 3, V) batch: each row's bar is "
            "min_p times that row's own largest probability (of the softmax over the vocabulary, not of the logits)"
        )
        assert got[kept].tolist() == original[kept].tolist(), "kept tokens must keep their original logits"


@points(1)
def test_min_p_one_keeps_only_the_top(student):
    """min_p = 1 keeps exactly the tokens tied with the most likely one"""
    out = student.min_p_filter(torch.tensor([[1.0, 3.0, 3.0, 2.9], [0.0, -1.0, 5.0, 4.0]]), 1.0)
    expect_tensor(out, dtype=torch.float32, shape=(2, 4))
    assert torch.isfinite(out).tolist() == [[False, True, True, False], [False, False, True, False]], (
        "with min_p = 1 the bar is the largest probability itself: only the most likely token (and any tied with it) "
        "survives, and it always does"
    )


@points(1)
def test_min_p_with_minus_inf_in_input(student):
    """min_p_filter accepts logits that already hold -inf (they stay -inf, and no NaN appears)"""
    logits = torch.tensor([INF, math.log(0.6), INF, math.log(0.3), math.log(0.1)])
    out = student.min_p_filter(logits, 0.4)
    expect_tensor(out, dtype=torch.float32, shape=(5,))
    assert not torch.isnan(out).any(), "min_p_filter produced NaN"
    assert torch.isfinite(out).tolist() == [False, True, False, True, False], (
        "min_p_filter is wrong on a row that already holds -inf logits"
    )


@points(1)
def test_min_p_in_float32_for_half_inputs(student):
    """min_p_filter computes the probabilities in float32 and returns the logits in their dtype"""
    # exp(-3) = 0.049787 of the top probability: below min_p = 0.05 by 2e-4, far above float32 rounding, but a
    # bfloat16 softmax rounds it to above the bar
    logits = torch.tensor([0.0, -1.5625, -3.0], dtype=torch.bfloat16)
    out = student.min_p_filter(logits, 0.05)
    expect_tensor(out, dtype=torch.bfloat16, shape=(3,))
    assert torch.isfinite(out).tolist() == [True, True, False], (
        "min_p_filter on bfloat16 logits kept a token just below the bar: compute the softmax in float32 "
        "(logits.float()), and return the logits in their own dtype"
    )
    half = student.min_p_filter(torch.tensor([2.0, 0.0, -4.0], dtype=torch.float16), 0.1)
    expect_tensor(half, dtype=torch.float16, shape=(3,))
    assert half.float().tolist() == [2.0, 0.0, INF], "min_p_filter is wrong on float16 logits"


@points(1)
def test_min_p_out_of_range_raises(student):
    """min_p < 0 and min_p > 1 raise ValueError"""
    for min_p in (-0.1, 1.01):
        with pytest.raises(ValueError):
            student.min_p_filter(torch.tensor([1.0, 2.0]), min_p)


# ================================================================ sample_next


def _draw(student, logits, seed, **arguments):
    """student.sample_next(logits, **arguments); if it raises, the feedback names the filter at fault, if one is."""
    try:
        return student.sample_next(logits, generator=seeded(seed), **arguments)
    except StudentError as error:
        raise AssertionError(trusted.first_wrong_stage(student, logits, **arguments) or str(error)) from None


def _expect_only(student, out, logits, allowed, ordering_message, **arguments):
    """Every draw is one of `allowed`, else the feedback names a wrong filter, or the order."""
    expect_tensor(out, dtype=torch.int64, shape=logits.shape[:-1])
    if not set(out.tolist()) <= allowed:
        raise AssertionError(trusted.blame(student, logits, ordering_message, **arguments))


def _expect_frequencies(student, out, logits, expected, what, **arguments):
    expect_tensor(out, dtype=torch.int64, shape=logits.shape[:-1])
    try:
        expect_frequencies(out, expected, what)
    except AssertionError as failure:
        raise AssertionError(trusted.blame(student, logits, str(failure), **arguments)) from None


@points(1)
def test_sample_next_temperature_before_top_p(student):
    """sample_next applies the temperature before top-p"""
    # probabilities [0.6, 0.3, 0.1]: top-p 0.65 keeps 2 tokens at T=1, but at T=0.5 ([0.78, 0.20, 0.02]) only 1
    logits = torch.log(torch.tensor([0.6, 0.3, 0.1])).expand(2000, 3)
    arguments = {"temperature": 0.5, "top_p": 0.65}
    out = _draw(student, logits, 21, **arguments)
    _expect_only(
        student,
        out,
        logits,
        {0},
        "sample_next drew a token that top-p removes once the temperature has sharpened "
        "the distribution: apply the temperature first, then the filters",
        **arguments,
    )


@points(1)
def test_sample_next_top_k_before_top_p(student):
    """sample_next applies top-k before top-p (top-p sees the renormalised top-k tokens)"""
    # probabilities [0.4, 0.3, 0.2, 0.1]; top-k 2 leaves [0.57, 0.43], so top-p 0.5 keeps only token 0;
    # top-p first would keep tokens 0 and 1
    logits = torch.log(torch.tensor([0.4, 0.3, 0.2, 0.1])).expand(2000, 4)
    arguments = {"top_k": 2, "top_p": 0.5}
    out = _draw(student, logits, 22, **arguments)
    _expect_only(
        student,
        out,
        logits,
        {0},
        "sample_next drew a token that top-p removes from what top-k left: apply top-k before top-p",
        **arguments,
    )


@points(1)
def test_sample_next_temperature_before_min_p(student):
    """sample_next applies the temperature before min-p (min-p compares the tempered probabilities)"""
    # probabilities [0.6, 0.3, 0.1]: min_p 0.4 keeps tokens 0 and 1 at T=1 (ratio 0.5), only token 0 at T=0.5 (0.25)
    logits = torch.log(torch.tensor([0.6, 0.3, 0.1])).expand(2000, 3)
    arguments = {"temperature": 0.5, "min_p": 0.4}
    out = _draw(student, logits, 26, **arguments)
    _expect_only(
        student,
        out,
        logits,
        {0},
        "sample_next drew a token below min-p's bar after the temperature: apply the "
        "temperature, then min-p (when min_p is given), then draw",
        **arguments,
    )


@points(1)
def test_sample_next_top_p_before_min_p(student):
    """sample_next applies top-p before min-p (top-p adds up the probabilities min-p has not renormalised)"""
    # probabilities [0.5, 0.3, 0.2]: top-p 0.6 keeps tokens 0 and 1, then min_p 0.5 keeps both (0.3 >= 0.25);
    # min-p first leaves [0.625, 0.375], and top-p 0.6 would then keep token 0 only
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2])).expand(4000, 3)
    arguments = {"top_p": 0.6, "min_p": 0.5}
    out = _draw(student, logits, 27, **arguments)
    expected = torch.tensor([0.625, 0.375, 0.0], dtype=torch.float64)
    _expect_frequencies(
        student, out, logits, expected, "sample_next(top_p=0.6, min_p=0.5): apply top-p before min-p", **arguments
    )


@points(2)
def test_sample_next_distribution(student):
    """sample_next with temperature and top-k draws from the renormalised, tempered top-k distribution"""
    logits = torch.tensor([2.0, 1.0, 0.0, 3.0, -1.0]).expand(20_000, 5)
    arguments = {"temperature": 2.0, "top_k": 3}
    out = _draw(student, logits, 23, **arguments)
    expected = torch.softmax(torch.tensor([1.0, 0.5, INF, 1.5, INF], dtype=torch.float64), -1)
    _expect_frequencies(student, out, logits, expected, "sample_next(temperature=2, top_k=3)", **arguments)


@points(1)
def test_sample_next_min_p_distribution(student):
    """sample_next with temperature and min-p draws from the renormalised tokens above the tempered bar"""
    logits = torch.tensor([2.0, 1.0, 0.0, 3.0, -1.0]).expand(20_000, 5)
    arguments = {"temperature": 2.0, "min_p": 0.3}
    out = _draw(student, logits, 28, **arguments)
    # tempered logits [1, 0.5, 0, 1.5, -0.5]: ratios to the top exp(-0.5) = 0.61, exp(-1) = 0.37, exp(-1.5) = 0.22,
    # exp(-2) = 0.14, so min_p 0.3 keeps tokens 3, 0 and 1
    expected = torch.softmax(torch.tensor([1.0, 0.5, INF, 1.5, INF], dtype=torch.float64), -1)
    _expect_frequencies(student, out, logits, expected, "sample_next(temperature=2, min_p=0.3)", **arguments)


@points(1)
def test_sample_next_defaults_full_distribution(student):
    """sample_next with its defaults draws from the whole distribution"""
    logits = torch.tensor([0.0, 1.0, -1.0, 0.5])
    n = 20_000
    out = student.sample_next(logits.expand(n, 4), generator=seeded(24))
    expect_tensor(out, dtype=torch.int64, shape=(n,))
    expect_frequencies(out, _probs(logits), "sample_next with default arguments")


@points(1)
def test_sample_next_randomness_only_fromseeded(student):
    """sample_next takes its randomness from the generator only"""
    logits = torch.zeros(1000, 10)
    first = student.sample_next(logits, top_k=8, generator=seeded(77))
    second = student.sample_next(logits, top_k=8, generator=seeded(77))
    other = student.sample_next(logits, top_k=8, generator=seeded(78))
    expect_tensor(first, dtype=torch.int64, shape=(1000,))
    assert first.tolist() == second.tolist(), "identically seeded generators gave different draws"
    assert first.tolist() != other.tolist(), "differently seeded generators gave identical draws"


@points(1)
def test_sample_next_shape_and_invalid(student):
    """sample_next returns logits.shape[:-1] ids and passes invalid parameters on as ValueError"""
    out = student.sample_next(torch.zeros(2, 3, 4), temperature=0.9, top_k=2, top_p=0.8, generator=seeded(25))
    expect_tensor(out, dtype=torch.int64, shape=(2, 3))
    with pytest.raises(ValueError):
        student.sample_next(torch.zeros(4), temperature=0.0)
    with pytest.raises(ValueError):
        student.sample_next(torch.zeros(4), top_p=2.0)


# ================================================================ predictions (constants the student writes before running)


@points(1)
def test_predicted_top_p_count(student):
    """PREDICT_TOP_P_KEPT: how many tokens top-p keeps of [0.5, 0.3, 0.12, 0.08] with p = 0.85"""
    expect_prediction(student.PREDICT_TOP_P_KEPT, 3, "PREDICT_TOP_P_KEPT")


@points(1)
def test_predicted_min_p_count(student):
    """PREDICT_MIN_P_KEPT: how many tokens min-p keeps of [0.5, 0.3, 0.12, 0.08] with min_p = 0.25"""
    expect_prediction(student.PREDICT_MIN_P_KEPT, 2, "PREDICT_MIN_P_KEPT")


@points(1)
def test_predicted_filter_with_a_fixed_count(student):
    """PREDICT_SAME_COUNT: the filter that keeps as many tokens on the flat prompt as on the peaked one"""
    expect_prediction(student.PREDICT_SAME_COUNT, "top-k", "PREDICT_SAME_COUNT")
