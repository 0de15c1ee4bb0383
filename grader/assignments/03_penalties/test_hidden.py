"""Hidden tests of 03_penalties (not shipped to students).

The notebook gives 02's functions as reference code, so the tests of sample_with_penalties check only what
the penalties add: their values and their place before temperature, top-k and top-p.
Tolerances: 1e-5 on arithmetic; Bernstein bounds (grader.testing.frequency_tolerance) on sampled frequencies.
"""


import pytest
import torch

from grader.testing import expect_tensor, frequency_tolerance, points

INF = float("-inf")


def _generator(seed):
    return torch.Generator().manual_seed(seed)


def _close(actual, expected, message, atol=1e-5):
    torch.testing.assert_close(actual.double(), torch.as_tensor(expected, dtype=torch.float64), rtol=0, atol=atol,
                               equal_nan=False, msg=message)


# ================================================================ penalty_scales


@points(1)
def test_scales_empty_history(student):
    """an empty history gives k = 1 for every token"""
    k = student.penalty_scales([], 6, frequency_penalty=1.7, presence_penalty=1.4)
    expect_tensor(k, dtype=torch.float32, shape=(6,))
    assert k.tolist() == [1.0] * 6, "no token has occurred yet, so no token is penalised"


@points(2)
def test_scales_frequency_grows_with_count(student):
    """the frequency penalty is paid once per occurrence"""
    k = student.penalty_scales([2, 2, 2, 4, 2, 4, 0], 5, frequency_penalty=1.25)
    expect_tensor(k, dtype=torch.float32, shape=(5,))
    _close(k, [1.25, 1.0, 2.0, 1.0, 1.5],
           "with only a frequency penalty f, k_i = 1 + (f - 1) * count_i: count every occurrence of each token")


@points(2)
def test_scales_presence_paid_once(student):
    """the presence penalty is paid once by every token that occurred, whatever its count"""
    k = student.penalty_scales([3, 3, 3, 0], 5, presence_penalty=1.5)
    expect_tensor(k, dtype=torch.float32, shape=(5,))
    _close(k, [1.5, 1.0, 1.0, 1.5, 1.0],
           "with only a presence penalty r, k_i = r for tokens that occurred (once or more) and 1 for the others")


@points(1)
def test_scales_both_penalties(student):
    """frequency and presence penalties add up as in the formula"""
    k = student.penalty_scales(torch.tensor([1, 0, 1, 1, 5]), 6, frequency_penalty=1.3, presence_penalty=1.05)
    expect_tensor(k, dtype=torch.float32, shape=(6,))
    _close(k, [1.35, 1.95, 1.0, 1.0, 1.0, 1.35],
           "k_i = 1 + (f - 1) * count_i + (r - 1) * [count_i > 0] is wrong for some token (history given as a tensor)")


@points(1)
def test_scales_below_one_allowed(student):
    """penalties below 1 are allowed while every k_i stays positive"""
    k = student.penalty_scales([1, 1, 1], 3, frequency_penalty=0.9, presence_penalty=0.95)
    expect_tensor(k, dtype=torch.float32, shape=(3,))
    _close(k, [1.0, 0.65, 1.0], "a penalty below 1 is allowed (it favours repetition) while k_i > 0")


@points(1)
def test_scales_zero_or_negative_raises(student):
    """k_i = 0 and k_i < 0 both raise ValueError"""
    with pytest.raises(ValueError):
        student.penalty_scales([1, 1], 3, frequency_penalty=0.5)  # k_1 = 0
    with pytest.raises(ValueError):
        student.penalty_scales([2], 3, frequency_penalty=1.0, presence_penalty=-1.0)  # k_2 = -1


@points(1)
def test_scales_batch_history(student):
    """a 2-D history (batch, L) gives one row of scales per batch row"""
    history = torch.tensor([[0, 0, 2], [1, 3, 3]])
    k = student.penalty_scales(history, 4, frequency_penalty=1.5, presence_penalty=1.1)
    expect_tensor(k, dtype=torch.float32, shape=(2, 4))
    _close(k, [[2.1, 1.0, 1.6, 1.0], [1.0, 1.6, 1.0, 2.1]], "each row of a 2-D history is counted on its own")


# ================================================================ apply_penalties


@points(1)
def test_apply_no_shift_when_non_negative(student):
    """logits that are all >= 0 are divided without a shift"""
    out = student.apply_penalties(torch.tensor([2.0, 0.5, 1.0, 3.0]), [0, 3, 3], frequency_penalty=2.0)
    expect_tensor(out, dtype=torch.float32, shape=(4,))
    _close(out, [1.0, 0.5, 1.0, 1.0], "no logit is negative, so apply_penalties must not shift: just divide by k")


@points(2)
def test_apply_shift_by_row_minimum(student):
    """with a negative logit the row is shifted by its own minimum before the division"""
    out = student.apply_penalties(torch.tensor([-1.0, 2.0, -3.0, 0.5]), [1, 0], frequency_penalty=2.0,
                                  presence_penalty=1.5)
    expect_tensor(out, dtype=torch.float32, shape=(4,))
    _close(out, [2.0 / 2.5, 5.0 / 2.5, 0.0, 3.5],
           "when a logit is negative, subtract the row's minimum logit first (the smallest becomes 0), then divide by k")


@points(2)
def test_apply_minus_inf_stays(student):
    """-inf logits stay -inf; the shift uses the minimum of the finite logits; no NaN"""
    out = student.apply_penalties(torch.tensor([INF, -1.0, 1.0, INF, -2.0]), [1, 2, 3], frequency_penalty=2.0)
    expect_tensor(out, dtype=torch.float32, shape=(5,))
    assert not torch.isnan(out).any(), "apply_penalties produced NaN: -inf - (-inf) is NaN; take the minimum over finite logits"
    assert out[0].item() == INF and out[3].item() == INF, "a -inf logit must stay -inf"
    finite = out[[1, 2, 4]]
    _close(finite, [0.5, 1.5, 0.0], "with -inf present, shift by the minimum of the finite logits, then divide by k")


@points(2)
def test_apply_batch_rows_shift_independently(student):
    """with 2-D logits and a 2-D history, each row gets its own shift and its own scales"""
    logits = torch.tensor([[1.0, 2.0, 0.0], [-1.0, 1.0, 3.0]])
    history = torch.tensor([[1, 1], [2, 2]])
    out = student.apply_penalties(logits, history, frequency_penalty=1.5)
    expect_tensor(out, dtype=torch.float32, shape=(2, 3))
    _close(out, [[1.0, 1.0, 0.0], [0.0, 2.0, 2.0]],
           "rows are independent: each row is shifted only if it has a negative logit, by its own minimum, "
           "and divided by the scales of its own history row")


@points(1)
def test_apply_half_precision(student):
    """apply_penalties keeps float16 / bfloat16 logits in their dtype"""
    for dtype in (torch.float16, torch.bfloat16):
        out = student.apply_penalties(torch.tensor([1.0, -1.0, 2.0], dtype=dtype), [2, 2], frequency_penalty=1.5)
        expect_tensor(out, dtype=dtype, shape=(3,))
        _close(out, [2.0, 0.0, 1.5], f"wrong values for {dtype} logits", atol=1e-2)


@points(1)
def test_apply_no_penalty_is_identity_up_to_shift(student):
    """with penalties of 1 the probabilities do not change"""
    logits = torch.tensor([0.3, -1.2, 2.0, 0.0])
    out = student.apply_penalties(logits, [0, 1, 2])
    expect_tensor(out, dtype=torch.float32, shape=(4,))
    _close(torch.softmax(out.double(), -1), torch.softmax(logits.double(), -1),
           "with frequency and presence penalties of 1, the probabilities must stay the same")


@points(1)
def test_apply_invalid_penalty_raises(student):
    """apply_penalties raises ValueError when some k_i <= 0"""
    with pytest.raises(ValueError):
        student.apply_penalties(torch.tensor([1.0, 2.0]), [0, 0, 0, 0], frequency_penalty=0.7)


# ================================================================ sample_with_penalties


@points(2)
def test_swp_distribution(student):
    """sample_with_penalties draws from softmax(penalised logits / temperature) (20,000 draws)"""
    n = 20_000
    logits = torch.tensor([0.8, 0.9, 0.1, 0.4])
    history = torch.tensor([0, 1, 0, 2, 0, 0]).expand(n, 6)
    out = student.sample_with_penalties(logits.expand(n, 4), history, temperature=0.5, frequency_penalty=1.1,
                                        presence_penalty=1.2, generator=_generator(31))
    expect_tensor(out, dtype=torch.int64, shape=(n,))
    expected = torch.softmax(torch.tensor([0.5, 0.9 / 1.3, 0.1 / 1.3, 0.4], dtype=torch.float64) / 0.5, -1)
    freq = torch.bincount(out, minlength=4).double() / n
    for i, p in enumerate(expected.tolist()):
        tol = frequency_tolerance(p, n)
        assert abs(freq[i].item() - p) <= tol, (
            f"a token of probability {p:.3f} (after penalties, then temperature) came out {freq[i].item():.3f} "
            f"of the time (tolerance {tol:.3f})"
        )


@points(2)
def test_swp_penalties_before_top_k(student):
    """the penalties come before top-k: top-k cuts the penalised logits"""
    # unpenalised, token 0 is the most likely; after the penalties token 2 is. 1-D logits, 1-D history.
    logits = torch.tensor([3.0, 1.0, 2.5, 0.5])
    out = [
        student.sample_with_penalties(logits, [0, 0, 1], top_k=1, frequency_penalty=1.2, generator=_generator(s)).item()
        for s in range(3)
    ]
    assert out == [2, 2, 2], "apply the penalties first, then temperature, top-k and top-p"


@points(2)
def test_swp_penalties_before_top_p_batch(student):
    """penalties, then top-p, row by row for 2-D logits and a 2-D history"""
    n = 2000
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1], [0.6, 0.3, 0.1]])).repeat(n // 2, 1)
    # shifted by log(0.1): [1.792, 1.099, 0]; row A penalises token 0 twice (k=1.5), row B never
    history = torch.tensor([[0, 0], [2, 2]]).repeat(n // 2, 1)
    out = student.sample_with_penalties(logits, history, top_p=0.55, frequency_penalty=1.25, generator=_generator(32))
    expect_tensor(out, dtype=torch.int64, shape=(n,))
    # row A: [1.195, 1.099, 0] -> probs [0.45, 0.41, 0.14]: top-p 0.55 keeps tokens 0 and 1
    # row B: [1.792, 1.099, 0] -> probs [0.6, 0.3, 0.1]: top-p 0.55 keeps token 0 only
    rows_a, rows_b = out[0::2], out[1::2]
    assert (rows_b == 0).all(), "a row whose history has no penalised token kept too many tokens under top-p"
    assert set(rows_a.tolist()) == {0, 1}, (
        "top-p must see the penalised distribution of each row: apply penalties first, row by row"
    )


@points(1)
def test_swp_generator_only(student):
    """sample_with_penalties takes its randomness from the generator only"""
    logits = torch.zeros(1000, 10)
    history = torch.zeros(1000, 3, dtype=torch.int64)
    first = student.sample_with_penalties(logits, history, frequency_penalty=1.2, generator=_generator(5))
    second = student.sample_with_penalties(logits, history, frequency_penalty=1.2, generator=_generator(5))
    other = student.sample_with_penalties(logits, history, frequency_penalty=1.2, generator=_generator(6))
    expect_tensor(first, dtype=torch.int64, shape=(1000,))
    assert first.tolist() == second.tolist(), "identically seeded generators gave different draws: pass the generator on"
    assert first.tolist() != other.tolist(), "differently seeded generators gave identical draws"


@points(1)
def test_swp_invalid_penalty_raises(student):
    """sample_with_penalties raises ValueError when a penalty makes some k_i <= 0"""
    with pytest.raises(ValueError):
        student.sample_with_penalties(torch.zeros(3), [1, 1], presence_penalty=0.0)
