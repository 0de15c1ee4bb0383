"""Visible tests of 02_sampling: shipped with the assignment, run by `grader check("02_sampling")`.

They use small inputs you can check by hand, one test at least for each rule of the notebook. The hidden tests
check the same rules on other inputs: larger batches, ties, -inf, other float16/bfloat16 boundaries, untouched
inputs, seeded generators. Where a float16/bfloat16 case sits near a boundary, the float32 result keeps a margin
of at least 1e-4 from it, a thousand times float32's rounding.
"""

import pytest
import torch

from grader.testing import StudentRaised, expect_frequencies, expect_tensor, points, seeded

INF = float("-inf")


# ---------------------------------------------------------------- greedy


@points(1)
def test_greedy_picks_the_largest_logit(student):
    """greedy returns the index of the largest logit, as an int64 0-d tensor for one row"""
    out = student.greedy(torch.tensor([0.1, 3.0, 2.0, -1.0]))
    expect_tensor(out, dtype=torch.int64, shape=())
    assert out.item() == 1, f"greedy should return 1 (the index of the largest logit, 3.0), got {out.item()}"


@points(1)
def test_greedy_one_index_per_row(student):
    """greedy on a (batch, vocab) tensor returns one index per row"""
    logits = torch.tensor([[0.0, 1.0, 5.0], [7.0, 1.0, 2.0]])
    out = student.greedy(logits)
    expect_tensor(out, dtype=torch.int64, shape=(2,))
    assert out.tolist() == [2, 0], f"expected [2, 0] (the argmax of each row), got {out.tolist()}"


# ---------------------------------------------------------------- sample


@points(1)
def test_sample_shape_and_dtype(student):
    """sample returns int64 ids of shape logits.shape[:-1]"""
    out = student.sample(torch.zeros(3, 5), generator=seeded(0))
    expect_tensor(out, dtype=torch.int64, shape=(3,))
    assert all(0 <= i < 5 for i in out.tolist()), f"ids must lie in [0, 5), got {out.tolist()}"


@points(1)
def test_sample_never_draws_a_removed_token(student):
    """a token whose logit is -inf has probability 0 and is never drawn"""
    logits = torch.tensor([INF, 0.0, INF, INF]).expand(200, 4)
    out = student.sample(logits, generator=seeded(1))
    expect_tensor(out, dtype=torch.int64, shape=(200,))
    assert (out == 1).all(), "only token 1 has a finite logit, but sample drew another token"


@points(2)
def test_sample_follows_softmax(student):
    """sample draws each token with probability softmax(logits) (20,000 draws)"""
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2]))
    n = 20_000
    out = student.sample(logits.expand(n, 3), generator=seeded(2))
    expect_tensor(out, dtype=torch.int64, shape=(n,))
    expect_frequencies(out, [0.5, 0.3, 0.2], "sample should draw each token with probability softmax(logits)")


# ---------------------------------------------------------------- temperature


@points(1)
def test_temperature_divides(student):
    """apply_temperature divides the logits by the temperature"""
    out = student.apply_temperature(torch.tensor([1.0, -2.0, 4.0]), 2.0)
    expect_tensor(out, dtype=torch.float32, shape=(3,))
    torch.testing.assert_close(
        out,
        torch.tensor([0.5, -1.0, 2.0]),
        rtol=0,
        atol=1e-6,
        msg="apply_temperature(logits, 2.0) should be logits / 2",
    )


@points(1)
def test_temperature_zero_raises(student):
    """a temperature of 0 raises ValueError (greedy is the limit, not a value)"""
    with pytest.raises(ValueError):
        student.apply_temperature(torch.tensor([1.0, 2.0]), 0.0)


# ---------------------------------------------------------------- top-k


@points(1)
def test_top_k_keeps_the_k_largest(student):
    """top_k_filter keeps the k largest logits unchanged and sets the others to -inf"""
    logits = torch.tensor([1.0, 4.0, 2.0, 3.0])
    out = student.top_k_filter(logits, 2)
    expect_tensor(out, dtype=torch.float32, shape=(4,))
    assert out.tolist() == [INF, 4.0, INF, 3.0], f"expected [-inf, 4.0, -inf, 3.0], got {out.tolist()}"


@points(1)
def test_top_k_keeps_ties_at_the_boundary(student):
    """top_k_filter keeps every token tied with the k-th largest logit"""
    out = student.top_k_filter(torch.tensor([5.0, 3.0, 3.0, 1.0]), 2)
    expect_tensor(out, dtype=torch.float32, shape=(4,))
    assert out.tolist() == [5.0, 3.0, 3.0, INF], (
        f"with k=2 the 2nd largest logit is 3.0 and two tokens have it: keep both; got {out.tolist()}"
    )


@points(1)
def test_top_k_invalid_k_raises(student):
    """k = 0 raises ValueError"""
    with pytest.raises(ValueError):
        student.top_k_filter(torch.tensor([1.0, 2.0]), 0)


@points(1)
def test_top_k_larger_than_the_vocabulary_keeps_everything(student):
    """k larger than the vocabulary keeps every token"""
    logits = torch.tensor([1.0, 3.0, 2.0])
    try:
        out = student.top_k_filter(logits, 5)
    except StudentRaised as error:
        raise AssertionError(
            f"top_k_filter(3 logits, k=5) failed ({error}): torch.topk refuses a k larger than the row; "
            "k >= the vocabulary size keeps every token"
        ) from None
    expect_tensor(out, dtype=torch.float32, shape=(3,))
    assert out.tolist() == logits.tolist(), f"k=5 on 3 tokens must keep them all unchanged; got {out.tolist()}"


# ---------------------------------------------------------------- top-p


@points(1)
def test_top_p_keeps_the_token_that_crosses_p(student):
    """top_p_filter keeps the most likely tokens up to and including the one whose probability crosses p"""
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    out = student.top_p_filter(logits, 0.7)
    expect_tensor(out, dtype=torch.float32, shape=(4,))
    kept = torch.isfinite(out).tolist()
    assert kept == [True, True, False, False], (
        f"probabilities [0.5, 0.3, 0.15, 0.05], p=0.7: the mass above token 1 is 0.5 < 0.7, so tokens 0 and 1 "
        f"are kept, the others removed; kept mask was {kept}"
    )
    torch.testing.assert_close(out[:2], logits[:2], msg="kept tokens must keep their original logits")


@points(1)
def test_top_p_one_keeps_everything(student):
    """p = 1 keeps every token"""
    logits = torch.tensor([2.0, 0.0, -1.0])
    out = student.top_p_filter(logits, 1.0)
    expect_tensor(out, dtype=torch.float32, shape=(3,))
    assert out.tolist() == logits.tolist(), f"p=1 must keep all tokens unchanged; got {out.tolist()}"


@points(1)
def test_top_p_one_keeps_every_token_of_a_large_vocabulary(student):
    """p = 1 keeps every token even of the kit's 16,384-token peaked example (a float32 running sum reaches 1 early)"""
    from course import fixtures

    _, logits = fixtures.distributions()["peaked"]
    out = student.top_p_filter(logits, 1.0)
    expect_tensor(out, dtype=logits.dtype, shape=tuple(logits.shape))
    removed = int(torch.isinf(out).sum()) - int(torch.isinf(logits).sum())
    assert removed == 0, (
        f"p = 1 removed {removed} of the {logits.numel()} tokens: in float32 the running sum of the sorted "
        "probabilities reaches 1.0 before the last token, so a test like `mass before < p` fails for the tail; "
        "p = 1 must keep everything"
    )


@points(1)
def test_top_p_ranks_the_tokens_by_probability(student):
    """top_p_filter adds up the probabilities from the most likely token down, whatever the tokens' order"""
    logits = torch.log(torch.tensor([0.05, 0.15, 0.3, 0.5]))
    out = student.top_p_filter(logits, 0.7)
    expect_tensor(out, dtype=torch.float32, shape=(4,))
    kept = torch.isfinite(out).tolist()
    assert kept == [False, False, True, True], (
        f"probabilities [0.05, 0.15, 0.3, 0.5], p=0.7: ranked from the most likely, the mass above token 2 is 0.5 "
        f"< 0.7 and above token 1 is 0.8, so tokens 2 and 3 are kept; kept mask was {kept}"
        + (": sort the probabilities before the cumulative sum" if all(kept) else "")
    )


@points(1)
def test_top_p_decides_in_float32_for_bfloat16_logits(student):
    """top_p_filter on bfloat16 logits computes the softmax and the cumulative sum in float32"""
    # float32 probabilities of the sorted tokens 2, 0, 3, 1: their running sums are 0.80019, 0.92290, 0.98859
    logits = torch.tensor([1.125, -1.25, 3.0, 0.5], dtype=torch.bfloat16)
    out = student.top_p_filter(logits, 0.923)
    expect_tensor(out, dtype=torch.bfloat16, shape=(4,))
    kept = torch.isfinite(out).tolist()
    rounded = (
        ". A softmax or a cumulative sum in bfloat16 rounds that margin away: compute them in float32 "
        "(logits.float()), and return the logits in their dtype"
    )
    assert kept == [True, False, True, True], (
        "bfloat16 logits [1.125, -1.25, 3.0, 0.5], p = 0.923: in float32 the two most likely tokens hold 0.92290, "
        f"just under p, so the third (token 3) is kept too; kept mask was {kept}"
        + (rounded if kept == [True, False, True, False] else "")
    )


@points(1)
def test_top_p_invalid_p_raises(student):
    """p = 0 raises ValueError"""
    with pytest.raises(ValueError):
        student.top_p_filter(torch.tensor([1.0, 2.0]), 0.0)


# ---------------------------------------------------------------- min-p


@points(1)
def test_min_p_keeps_tokens_above_the_bar(student):
    """min_p_filter keeps the tokens at least min_p times as likely as the most likely one"""
    logits = torch.log(torch.tensor([0.1, 0.5, 0.3, 0.05, 0.05]))
    out = student.min_p_filter(logits, 0.25)
    expect_tensor(out, dtype=torch.float32, shape=(5,))
    kept = torch.isfinite(out).tolist()
    assert kept == [False, True, True, False, False], (
        f"probabilities [0.1, 0.5, 0.3, 0.05, 0.05], min_p=0.25: the bar is 0.25 * 0.5 = 0.125, so tokens 1 and 2 "
        f"are kept, the others removed; kept mask was {kept}"
    )
    torch.testing.assert_close(out[1:3], logits[1:3], msg="kept tokens must keep their original logits")


@points(1)
def test_min_p_bar_is_a_fraction_of_the_largest_probability(student):
    """min_p_filter's bar is min_p times the largest probability, not min_p itself"""
    logits = torch.log(torch.tensor([0.2, 0.4, 0.3, 0.1]))
    out = student.min_p_filter(logits, 0.4)
    expect_tensor(out, dtype=torch.float32, shape=(4,))
    kept = torch.isfinite(out).tolist()
    assert kept == [True, True, True, False], (
        f"probabilities [0.2, 0.4, 0.3, 0.1], min_p=0.4: the bar is 0.4 * 0.4 = 0.16, so only token 3 is removed; "
        f"kept mask was {kept}" + (" (that is a bar of min_p itself, 0.4)" if kept[0] is False and kept[1] else "")
    )


@points(1)
def test_min_p_one_keeps_the_most_likely_token(student):
    """min_p = 1 keeps the most likely token: it always clears its own bar"""
    out = student.min_p_filter(torch.tensor([0.5, 2.0, 1.0]), 1.0)
    expect_tensor(out, dtype=torch.float32, shape=(3,))
    kept = torch.isfinite(out).tolist()
    assert kept == [False, True, False], (
        f"with min_p = 1 the bar is the largest probability itself, and token 1 has it: keep the tokens whose "
        f"probability is >= the bar (not >); kept mask was {kept}"
    )


@points(1)
def test_min_p_one_bar_per_row(student):
    """in a batch, each row's bar is min_p times that row's own largest probability"""
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.3, 0.3]]))
    out = student.min_p_filter(logits, 0.5)
    expect_tensor(out, dtype=torch.float32, shape=(2, 3))
    kept = torch.isfinite(out).tolist()
    assert kept == [[True, False, False], [True, True, True]], (
        f"rows [0.7, 0.2, 0.1] and [0.4, 0.3, 0.3], min_p=0.5: row 0's bar is 0.35, row 1's is 0.2, so row 1 keeps "
        f"all three tokens; kept masks were {kept}"
        + (": take the largest probability of each row (over the last dimension)" if kept[1] == kept[0] else "")
    )


@points(1)
def test_min_p_decides_in_float32_for_bfloat16_logits(student):
    """min_p_filter on bfloat16 logits computes the probabilities in float32"""
    # float32 ratios to the top probability: 0.12714, 0.82903, 0.28651, 1
    logits = torch.tensor([-1.0625, 0.8125, -0.25, 1.0], dtype=torch.bfloat16)
    out = student.min_p_filter(logits, 0.2867)
    expect_tensor(out, dtype=torch.bfloat16, shape=(4,))
    kept = torch.isfinite(out).tolist()
    rounded = (
        ". A bfloat16 softmax rounds that margin away: compute the probabilities in float32 (logits.float()), and "
        "return the logits in their dtype"
    )
    assert kept == [False, True, False, True], (
        "bfloat16 logits [-1.0625, 0.8125, -0.25, 1.0], min_p = 0.2867: in float32 token 2 is 0.28651 times as likely "
        f"as token 3, just under the bar, so it is removed; kept mask was {kept}"
        + (rounded if kept == [False, True, True, True] else "")
    )


@points(1)
def test_min_p_zero_keeps_everything(student):
    """min_p = 0 keeps every token"""
    logits = torch.tensor([2.0, 0.0, -40.0])
    out = student.min_p_filter(logits, 0.0)
    expect_tensor(out, dtype=torch.float32, shape=(3,))
    assert out.tolist() == logits.tolist(), f"min_p=0 must keep all tokens unchanged; got {out.tolist()}"


@points(1)
def test_min_p_invalid_raises(student):
    """min_p = 1.5 raises ValueError"""
    with pytest.raises(ValueError):
        student.min_p_filter(torch.tensor([1.0, 2.0]), 1.5)


# ---------------------------------------------------------------- sample_next


@points(1)
def test_sample_next_top_k_1_is_greedy(student):
    """sample_next with top_k=1 always returns the most likely token"""
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 1.0, 0.0]]).repeat(50, 1)
    out = student.sample_next(logits, top_k=1, generator=seeded(3))
    expect_tensor(out, dtype=torch.int64, shape=(100,))
    assert out.tolist() == [1, 0] * 50, "with top_k=1 only the most likely token of each row may be drawn"


@points(1)
def test_sample_next_is_reproducible(student):
    """two calls with identically seeded generators give the same tokens"""
    logits = torch.zeros(50, 10)
    first = student.sample_next(logits, temperature=0.7, top_p=0.9, generator=seeded(4))
    second = student.sample_next(logits, temperature=0.7, top_p=0.9, generator=seeded(4))
    expect_tensor(first, dtype=torch.int64, shape=(50,))
    assert first.tolist() == second.tolist(), "the same seeded generator must give the same draws"


@points(1)
def test_sample_next_min_p_cuts_the_tail(student):
    """sample_next with min_p never draws a token below the bar"""
    logits = torch.log(torch.tensor([0.6, 0.3, 0.06, 0.04])).expand(500, 4)
    out = student.sample_next(logits, min_p=0.2, generator=seeded(5))
    expect_tensor(out, dtype=torch.int64, shape=(500,))
    assert set(out.tolist()) <= {0, 1}, "with min_p=0.2 the bar is 0.2 * 0.6 = 0.12: only tokens 0 and 1 may be drawn"


ORDER = "temperature, then top-k, then top-p, then min-p"


@pytest.mark.parametrize(
    "probabilities, settings, kept, wrong_order",
    [
        # [0.5, 0.35, 0.15] at T=0.5 is [0.64, 0.31, 0.06]: top-p 0.6 keeps token 0 alone (at T=1, tokens 0 and 1)
        pytest.param(
            [0.5, 0.35, 0.15],
            dict(temperature=0.5, top_p=0.6),
            [0],
            "the filters ran before the temperature",
            id="temperature-before-the-filters",
        ),
        # top-k 2 leaves [0.5625, 0.4375], where top-p 0.55 keeps token 0 alone (top-p first: tokens 0 and 1)
        pytest.param(
            [0.45, 0.35, 0.2], dict(top_k=2, top_p=0.55), [0], "top-p ran before top-k", id="top-k-before-top-p"
        ),
        # top-p 0.55 keeps tokens 0 and 1 ([0.6, 0.4]) and min-p 0.6 (bar 0.36) keeps both; min-p first leaves
        # [0.6, 0.4], where top-p keeps token 0 alone. A correct sampler misses token 1 in all 400 draws with
        # probability 0.6 ** 400 < 1e-88.
        pytest.param(
            [0.45, 0.3, 0.25], dict(top_p=0.55, min_p=0.6), [0, 1], "min-p ran before top-p", id="top-p-before-min-p"
        ),
    ],
)
@points(1)
def test_sample_next_filters_in_order(student, probabilities, settings, kept, wrong_order):
    """sample_next divides by the temperature, then applies top-k, top-p and min-p, each on what the last left"""
    logits = torch.log(torch.tensor(probabilities)).expand(400, len(probabilities))
    out = student.sample_next(logits, **settings, generator=seeded(9))
    expect_tensor(out, dtype=torch.int64, shape=(400,))
    drawn = sorted(set(out.tolist()))
    called = ", ".join(f"{name}={value}" for name, value in settings.items())
    assert drawn == kept, (
        f"sample_next({called}) on probabilities {probabilities} drew tokens {drawn}, where it should draw {kept}: "
        f"{'tokens' if len(drawn) > 1 else 'token'} {drawn} mean{'' if len(drawn) > 1 else 's'} {wrong_order} "
        f"({ORDER})"
    )
