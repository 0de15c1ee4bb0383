"""Visible tests of 02_sampling: shipped with the assignment, run by `grader check("02_sampling")`.

They use small inputs you can check by hand. The hidden tests check the same rules (the notebook's) on
other inputs: batch dimensions, ties, -inf, float16/bfloat16, untouched inputs, seeded generators.
"""

import pytest
import torch

from grader.testing import expect_frequencies, expect_tensor, points, seeded

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
def test_sample_next_applies_the_temperature_before_the_filters(student):
    """sample_next divides by the temperature first, then filters: top-p sees the sharpened distribution"""
    # probabilities [0.5, 0.35, 0.15]: top-p 0.6 keeps tokens 0 and 1 at T=1, but at T=0.5 ([0.64, 0.31, 0.06])
    # token 0 alone holds 0.6
    logits = torch.log(torch.tensor([0.5, 0.35, 0.15])).expand(400, 3)
    out = student.sample_next(logits, temperature=0.5, top_p=0.6, generator=seeded(9))
    expect_tensor(out, dtype=torch.int64, shape=(400,))
    drawn = sorted(set(out.tolist()))
    assert drawn == [0], (
        f"sample_next drew tokens {drawn}: at temperature 0.5 top-p 0.6 keeps token 0 only; a token 1 means the "
        "filters ran before the temperature (temperature, then top-k, then top-p, then min-p)"
    )


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
