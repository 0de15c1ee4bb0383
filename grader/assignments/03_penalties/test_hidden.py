"""Hidden tests of 03_penalties (not shipped to students).

The student pastes their own 02 functions, so the tests of sample_with_penalties check only what the penalties
add (own_pipeline.py): their values and their place before temperature, top-k and top-p. A wrong apply_penalties
is told which mistake its output shows (a shift where none is due, a product, a subtraction).
Tolerances: 1e-5 on arithmetic; Bernstein bounds (grader.testing.expect_frequencies) on sampled frequencies.
"""

import pytest
import torch

from grader.answers import expect_prediction
from grader.testing import expect_tensor, helper_module, points, seeded

pipeline = helper_module(__file__, "own_pipeline.py")
INF = float("-inf")


def _close(actual, expected, message, atol=1e-5):
    torch.testing.assert_close(
        actual.double(), torch.as_tensor(expected, dtype=torch.float64), rtol=0, atol=atol, equal_nan=False, msg=message
    )


def _scales(history, vocab_size, frequency_penalty, presence_penalty):
    counts = torch.bincount(torch.as_tensor(history, dtype=torch.long), minlength=vocab_size).double()
    return 1 + (frequency_penalty - 1) * counts + (presence_penalty - 1) * (counts > 0).double()


def _what_apply_penalties_did(out, logits, history, frequency_penalty=1.0, presence_penalty=1.0):
    """A sentence naming the recognisable mistake that `out` (of one 1-D row, with finite logits) shows, or None."""
    x = logits.double()
    k = _scales(history, len(x), frequency_penalty, presence_penalty)
    shifted = x - min(x.min().item(), 0.0)
    mistakes = {
        "shifted the row by its minimum although no logit is negative": (x - x.min()) / k,
        "divided by k without first shifting the row by its minimum": x / k,
        "multiplied by k instead of dividing": shifted * k,
        "subtracted the penalties (k - 1) from the logits instead of dividing by k": x - (k - 1),
        "left the logits unchanged": x,
    }
    for sentence, wrong in mistakes.items():
        if out.shape == wrong.shape and torch.allclose(out.double(), wrong, rtol=0, atol=1e-4):
            return sentence
    return None


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
    _close(
        k,
        [1.25, 1.0, 2.0, 1.0, 1.5],
        "with only a frequency penalty f, k_i = 1 + (f - 1) * count_i: count every occurrence of each token",
    )


@points(2)
def test_scales_presence_paid_once(student):
    """the presence penalty is paid once by every token that occurred, whatever its count"""
    k = student.penalty_scales([3, 3, 3, 0], 5, presence_penalty=1.5)
    expect_tensor(k, dtype=torch.float32, shape=(5,))
    _close(
        k,
        [1.5, 1.0, 1.0, 1.5, 1.0],
        "with only a presence penalty r, k_i = r for tokens that occurred (once or more) and 1 for the others",
    )


@points(1)
def test_scales_both_penalties(student):
    """frequency and presence penalties add up as in the formula"""
    k = student.penalty_scales(torch.tensor([1, 0, 1, 1, 5]), 6, frequency_penalty=1.3, presence_penalty=1.05)
    expect_tensor(k, dtype=torch.float32, shape=(6,))
    _close(
        k,
        [1.35, 1.95, 1.0, 1.0, 1.0, 1.35],
        "k_i = 1 + (f - 1) * count_i + (r - 1) * [count_i > 0] is wrong for some token (history given as a tensor)",
    )


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
    logits = torch.tensor([2.0, 0.5, 1.0, 3.0])
    out = student.apply_penalties(logits, [0, 3, 3], frequency_penalty=1.5)
    expect_tensor(out, dtype=torch.float32, shape=(4,))
    if not torch.allclose(out.double(), torch.tensor([2.0 / 1.5, 0.5, 1.0, 1.5], dtype=torch.float64), atol=1e-5):
        mistake = _what_apply_penalties_did(out, logits, [0, 3, 3], frequency_penalty=1.5)
        if mistake == "shifted the row by its minimum although no logit is negative":
            raise AssertionError("no logit is negative, so apply_penalties must not shift: just divide by k")
        raise AssertionError(
            f"apply_penalties {mistake or 'gave wrong values'} on logits that are all >= 0: divide each logit by its k_i"
        )


@points(2)
def test_apply_shift_by_row_minimum(student):
    """with a negative logit the row is shifted by its own minimum before the division"""
    logits = torch.tensor([-1.0, 2.0, -3.0, 0.5])
    out = student.apply_penalties(logits, [1, 0], frequency_penalty=2.0, presence_penalty=1.5)
    expect_tensor(out, dtype=torch.float32, shape=(4,))
    if not torch.allclose(out.double(), torch.tensor([2.0 / 2.5, 5.0 / 2.5, 0.0, 3.5], dtype=torch.float64), atol=1e-5):
        mistake = _what_apply_penalties_did(out, logits, [1, 0], frequency_penalty=2.0, presence_penalty=1.5)
        raise AssertionError(
            f"apply_penalties {mistake or 'gave wrong values'}: when a logit is negative, subtract the row's minimum "
            "logit first (the smallest becomes 0), then divide by k"
        )


@points(2)
def test_apply_minus_inf_stays(student):
    """-inf logits stay -inf; the shift uses the minimum of the finite logits; no NaN"""
    out = student.apply_penalties(torch.tensor([INF, -1.0, 1.0, INF, -2.0]), [1, 2, 3], frequency_penalty=2.0)
    expect_tensor(out, dtype=torch.float32, shape=(5,))
    assert not torch.isnan(out).any(), (
        "apply_penalties produced NaN: -inf - (-inf) is NaN; take the minimum over finite logits"
    )
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
    _close(
        out,
        [[1.0, 1.0, 0.0], [0.0, 2.0, 2.0]],
        "rows are independent: each row is shifted only if it has a negative logit, by its own minimum, "
        "and divided by the scales of its own history row",
    )


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
    _close(
        torch.softmax(out.double(), -1),
        torch.softmax(logits.double(), -1),
        "with frequency and presence penalties of 1, the probabilities must stay the same",
    )


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
    expected = torch.softmax(torch.tensor([0.5, 0.9 / 1.3, 0.1 / 1.3, 0.4], dtype=torch.float64) / 0.5, -1)
    pipeline.check_draws(
        student, logits.expand(n, 4), history, expected, "penalties, then temperature", 31,
        temperature=0.5, frequency_penalty=1.1, presence_penalty=1.2,
    )  # fmt: skip


@points(2)
def test_swp_penalties_before_top_k(student):
    """the penalties come before top-k: top-k cuts the penalised logits"""
    # unpenalised, token 0 is the most likely; after the penalties token 2 is. 1-D logits, 1-D history.
    logits = torch.tensor([3.0, 1.0, 2.5, 0.5])
    only_token_2 = torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    for seed in range(3):
        pipeline.check_draws(
            student, logits, [0, 0, 1], only_token_2, "apply the penalties first, then temperature, top-k and top-p",
            seed, top_k=1, frequency_penalty=1.2,
        )  # fmt: skip


@points(2)
def test_swp_penalties_before_top_p_batch(student):
    """penalties, then top-p, row by row for 2-D logits and a 2-D history"""
    n = 2000
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1], [0.6, 0.3, 0.1]])).repeat(n // 2, 1)
    # shifted by log(0.1): [1.792, 1.099, 0]; row A penalises token 0 twice (k=1.5), row B only token 2 (logit 0)
    history = torch.tensor([[0, 0], [2, 2]]).repeat(n // 2, 1)
    shifted = torch.log(torch.tensor([6.0, 3.0, 1.0], dtype=torch.float64))
    # row A: [1.195, 1.099, 0] -> probs [0.45, 0.41, 0.14]: top-p 0.55 keeps tokens 0 and 1
    row_a = torch.softmax(shifted / torch.tensor([1.5, 1.0, 1.0], dtype=torch.float64), -1)
    row_a = torch.cat([row_a[:2] / row_a[:2].sum(), torch.zeros(1, dtype=torch.float64)])
    # row B: [1.792, 1.099, 0] -> probs [0.6, 0.3, 0.1]: top-p 0.55 keeps token 0 only
    row_b = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    expected = torch.stack([row_a, row_b]).repeat(n // 2, 1)
    pipeline.check_draws(
        student, logits, history, expected, "top-p must see each row's penalised distribution: penalties first, "
        "row by row", 32, top_p=0.55, frequency_penalty=1.25,
    )  # fmt: skip


@points(1)
def test_swp_generator_only(student):
    """sample_with_penalties takes its randomness from the generator only"""
    logits = torch.zeros(1000, 10)
    history = torch.zeros(1000, 3, dtype=torch.int64)
    first = student.sample_with_penalties(logits, history, frequency_penalty=1.2, generator=seeded(5))
    second = student.sample_with_penalties(logits, history, frequency_penalty=1.2, generator=seeded(5))
    other = student.sample_with_penalties(logits, history, frequency_penalty=1.2, generator=seeded(6))
    expect_tensor(first, dtype=torch.int64, shape=(1000,))
    assert first.tolist() == second.tolist(), (
        "identically seeded generators gave different draws: pass the generator on"
    )
    assert first.tolist() != other.tolist(), "differently seeded generators gave identical draws"


@points(1)
def test_swp_invalid_penalty_raises(student):
    """sample_with_penalties raises ValueError when a penalty makes some k_i <= 0"""
    with pytest.raises(ValueError):
        student.sample_with_penalties(torch.zeros(3), [1, 1], presence_penalty=0.0)


# ================================================================ repetition_penalty (CTRL's)


@points(1)
def test_repetition_penalty_ignores_the_count(student):
    """repetition_penalty treats a token used once and a token used five times alike"""
    out = student.repetition_penalty(torch.tensor([2.0, 2.0, 2.0]), [0, 1, 1, 1, 1, 1], 1.6)
    expect_tensor(out, dtype=torch.float32, shape=(3,))
    _close(out, [1.25, 1.25, 2.0], "CTRL's penalty divides every token that occurred by the same penalty, once")


@points(2)
def test_repetition_penalty_rows_of_a_batch(student):
    """with 2-D logits and a 2-D history, each row is penalised by its own history; -inf and 0 stay"""
    logits = torch.tensor([[1.5, -1.0, 0.0, INF], [-3.0, 2.0, 0.5, 1.0]])
    history = torch.tensor([[0, 1, 2, 3], [0, 0, 0, 3]])
    out = student.repetition_penalty(logits, history, 1.5)
    expect_tensor(out, dtype=torch.float32, shape=(2, 4))
    assert not torch.isnan(out).any(), "repetition_penalty produced NaN"
    assert out[0, 3].item() == INF, "a -inf logit must stay -inf"
    _close(out[0, :3], [1.0, -1.5, 0.0], "positive logits are divided, negative ones multiplied, 0 stays 0")
    _close(out[1], [-4.5, 2.0, 0.5, 1.0 / 1.5], "each row is penalised by the tokens of its own history row")


@points(1)
def test_repetition_penalty_keeps_dtype_and_one_is_identity(student):
    """repetition_penalty keeps float16 / bfloat16 logits in their dtype, and a penalty of 1 changes nothing"""
    for dtype in (torch.float16, torch.bfloat16):
        out = student.repetition_penalty(torch.tensor([1.0, -1.0, 2.0], dtype=dtype), [0, 1], 2.0)
        expect_tensor(out, dtype=dtype, shape=(3,))
        _close(out, [0.5, -2.0, 2.0], f"wrong values for {dtype} logits", atol=1e-2)
    logits = torch.tensor([0.3, -1.2, 2.0])
    out = student.repetition_penalty(logits, [0, 1, 2], 1.0)
    expect_tensor(out, dtype=torch.float32, shape=(3,))
    assert out.tolist() == logits.tolist(), "a penalty of 1 must leave the logits unchanged"


@points(1)
def test_repetition_penalty_not_positive_raises(student):
    """a penalty <= 0 raises ValueError"""
    for penalty in (0.0, -1.2):
        with pytest.raises(ValueError):
            student.repetition_penalty(torch.tensor([1.0, 2.0]), [0], penalty)


# ================================================================ additive_penalties (OpenAI's, vLLM's)


@points(2)
def test_additive_rows_of_a_batch(student):
    """with 2-D logits and a 2-D history, each row pays for its own counts; -inf stays -inf"""
    logits = torch.tensor([[1.0, 2.0, INF, 0.0], [1.0, 2.0, 3.0, 0.0]])
    history = torch.tensor([[1, 1, 1, 2], [3, 0, 0, 0]])
    out = student.additive_penalties(logits, history, frequency_penalty=0.5, presence_penalty=0.25)
    expect_tensor(out, dtype=torch.float32, shape=(2, 4))
    assert not torch.isnan(out).any(), "additive_penalties produced NaN"
    assert out[0, 2].item() == INF, "a -inf logit must stay -inf"
    _close(
        out[0, [0, 1, 3]],
        [1.0, 0.25, 0.0],
        "subtract frequency * count + presence once, for each token used in the row's own history row",
    )
    _close(out[1], [-0.75, 2.0, 3.0, -0.75], "each row pays for the counts of its own history row")


@points(1)
def test_additive_negative_favours_repetition(student):
    """negative additive penalties raise the logits of the tokens used"""
    out = student.additive_penalties(
        torch.tensor([0.0, 1.0, 2.0]), [2, 2], frequency_penalty=-0.5, presence_penalty=-1.0
    )
    expect_tensor(out, dtype=torch.float32, shape=(3,))
    _close(out, [0.0, 1.0, 4.0], "a negative penalty is subtracted too: it adds to the logit")


@points(1)
def test_additive_keeps_dtype_and_zero_is_identity(student):
    """additive_penalties keeps float16 / bfloat16 logits in their dtype, and penalties of 0 change nothing"""
    for dtype in (torch.float16, torch.bfloat16):
        out = student.additive_penalties(torch.tensor([1.0, -1.0, 2.0], dtype=dtype), [0, 0], frequency_penalty=0.5)
        expect_tensor(out, dtype=dtype, shape=(3,))
        _close(out, [0.0, -1.0, 2.0], f"wrong values for {dtype} logits", atol=1e-2)
    logits = torch.tensor([0.3, -1.2, 2.0])
    out = student.additive_penalties(logits, [0, 1, 2])
    expect_tensor(out, dtype=torch.float32, shape=(3,))
    assert out.tolist() == logits.tolist(), "penalties of 0 must leave the logits unchanged"


# ================================================================ predictions (constants the student writes before running)


@points(1)
def test_predicted_definition_that_penalises_a_most(student):
    """PREDICT_MOST_LOSS: the definition under which `a` of the lecture's example loses the most probability"""
    expect_prediction(student.PREDICT_MOST_LOSS, "OpenAI", "PREDICT_MOST_LOSS")


@points(1)
def test_predicted_ctrl_on_a_negative_logit(student):
    """PREDICT_CTRL_NEGATIVE: CTRL's penalty 2 on a used token whose logit is -0.5"""
    expect_prediction(student.PREDICT_CTRL_NEGATIVE, -1.0, "PREDICT_CTRL_NEGATIVE", tolerance=1e-6)


@points(1)
def test_predicted_effect_of_the_lowest_logit(student):
    """PREDICT_LOWER_MINIMUM: what a lower minimum logit does to the lecture's penalty on another token"""
    expect_prediction(student.PREDICT_LOWER_MINIMUM, "stronger", "PREDICT_LOWER_MINIMUM")
