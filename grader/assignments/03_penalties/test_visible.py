"""Visible tests of 03_penalties: shipped with the assignment, run by `grader check("03_penalties")`.

The lecture's worked example and small cases you can check by hand. The hidden tests check the same
rules (the notebook's) on other inputs.
"""

import pytest
import torch

from grader.testing import expect_tensor, helper_module, points, seeded

pipeline = helper_module(__file__, "own_pipeline.py")
INF = float("-inf")
HISTORY = [0, 1, 0, 2, 0, 0]  # a, b, a, c, a, a
LOGITS = [0.8, 0.9, 0.1, 0.4]


@points(2)
def test_scales_worked_example(student):
    """penalty_scales reproduces the lecture's k = [1.6, 1.3, 1.3, 1.0]"""
    k = student.penalty_scales(HISTORY, 4, frequency_penalty=1.1, presence_penalty=1.2)
    expect_tensor(k, dtype=torch.float32, shape=(4,))
    torch.testing.assert_close(
        k,
        torch.tensor([1.6, 1.3, 1.3, 1.0]),
        rtol=0,
        atol=1e-5,
        msg=f"expected k = [1.6, 1.3, 1.3, 1.0] (tolerance 1e-5), got {k.tolist()}",
    )


@points(1)
def test_scales_no_penalty(student):
    """penalties of 1 give k = 1 everywhere"""
    k = student.penalty_scales([3, 3, 1], 5)
    expect_tensor(k, dtype=torch.float32, shape=(5,))
    assert k.tolist() == [1.0] * 5, f"with the default penalties every k_i is 1, got {k.tolist()}"


@points(2)
def test_apply_worked_example(student):
    """apply_penalties reproduces the lecture's logits [0.5, 0.6923, 0.0769, 0.4] and probabilities"""
    out = student.apply_penalties(torch.tensor(LOGITS), HISTORY, frequency_penalty=1.1, presence_penalty=1.2)
    expect_tensor(out, dtype=torch.float32, shape=(4,))
    # exact values 0.8/1.6, 0.9/1.3, 0.1/1.3, 0.4/1: tolerance 1e-5
    torch.testing.assert_close(
        out,
        torch.tensor([0.5, 0.9 / 1.3, 0.1 / 1.3, 0.4]),
        rtol=0,
        atol=1e-5,
        msg=f"expected logits [0.5, 0.6923, 0.0769, 0.4] (no shift: no logit is negative), got {out.tolist()}",
    )
    probs = torch.softmax(out.double(), -1)
    # the lecture's rounded probabilities: tolerance 0.002 accepts [0.2651, 0.3213, 0.1737, 0.2399] and [0.265, 0.320, 0.174, 0.240]
    torch.testing.assert_close(
        probs,
        torch.tensor([0.2651, 0.3213, 0.1737, 0.2399], dtype=torch.float64),
        rtol=0,
        atol=0.002,
        msg="the probabilities should be [0.2651, 0.3213, 0.1737, 0.2399]",
    )


@points(2)
def test_apply_shifts_negative_logits(student):
    """with a negative logit, apply_penalties first subtracts the minimum, so the penalty lowers the token"""
    out = student.apply_penalties(torch.tensor([1.0, -0.5, -2.0]), [1, 1], frequency_penalty=1.5)
    expect_tensor(out, dtype=torch.float32, shape=(3,))
    torch.testing.assert_close(
        out,
        torch.tensor([3.0, 0.75, 0.0]),
        rtol=0,
        atol=1e-5,
        msg=f"shift by the minimum (-2) to [3, 1.5, 0], then divide by k = [1, 2, 1]: expected [3, 0.75, 0], got {out.tolist()}",
    )


@points(1)
def test_apply_keeps_minus_inf_and_never_gives_nan(student):
    """a -inf logit stays -inf and nothing becomes NaN: the shift is by the minimum of the finite logits"""
    out = student.apply_penalties(torch.tensor([INF, 2.0, -1.0]), [1], frequency_penalty=3.0)
    expect_tensor(out, dtype=torch.float32, shape=(3,))
    assert not torch.isnan(out).any(), (
        f"apply_penalties gave {out.tolist()}: -inf minus the minimum -inf is NaN; take the minimum over the "
        "finite logits (-1 here)"
    )
    assert out[0].item() == INF, f"a removed token's -inf must stay -inf, got {out[0].item()}"
    torch.testing.assert_close(
        out[1:], torch.tensor([1.0, 0.0]), rtol=0, atol=1e-5,
        msg=f"shift the finite logits by their minimum (-1) to [3, 0], then divide by k = [3, 1]: got {out.tolist()}",
    )  # fmt: skip


@points(1)
def test_scale_not_positive_raises(student):
    """a penalty that makes some k_i <= 0 raises ValueError"""
    with pytest.raises(ValueError):
        student.penalty_scales([0, 0, 0], 2, frequency_penalty=0.5)


@points(2)
def test_sample_with_penalties_changes_greedy_choice(student):
    """with top_k=1, sample_with_penalties picks the most likely token after the penalties"""
    only_b = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    pipeline.check_draws(
        student, torch.tensor(LOGITS), HISTORY, only_b,
        "after the penalties token 1 (b) has the largest logit, 0.6923, so top_k=1 must pick it", 0,
        top_k=1, frequency_penalty=1.1, presence_penalty=1.2,
    )  # fmt: skip


@points(1)
def test_repetition_penalty_worked_example(student):
    """repetition_penalty (CTRL's) divides the positive logits of the tokens in the history"""
    out = student.repetition_penalty(torch.tensor(LOGITS), HISTORY, 1.3)
    expect_tensor(out, dtype=torch.float32, shape=(4,))
    expected = torch.tensor([0.8 / 1.3, 0.9 / 1.3, 0.1 / 1.3, 0.4])
    assert torch.allclose(out, expected, rtol=0, atol=1e-5), (
        f"a, b and c occur in the history, d does not: expected [0.8/1.3, 0.9/1.3, 0.1/1.3, 0.4] "
        f"(how often a token occurred does not matter), got {out.tolist()}"
    )


@points(1)
def test_repetition_penalty_multiplies_negative_logits(student):
    """repetition_penalty multiplies a negative logit by the penalty, so the token still loses probability"""
    out = student.repetition_penalty(torch.tensor([1.0, -0.5, -2.0]), [1, 1], 2.0)
    expect_tensor(out, dtype=torch.float32, shape=(3,))
    assert torch.allclose(out, torch.tensor([1.0, -1.0, -2.0]), rtol=0, atol=1e-6), (
        f"token 1 occurred and its logit -0.5 is negative: multiply it by 2 to get -1.0; got {out.tolist()}"
    )


@points(1)
def test_additive_penalties_worked_example(student):
    """additive_penalties subtracts frequency * count + presence * [count > 0]"""
    out = student.additive_penalties(torch.tensor(LOGITS), HISTORY, frequency_penalty=0.1, presence_penalty=0.2)
    expect_tensor(out, dtype=torch.float32, shape=(4,))
    expected = torch.tensor([0.8 - 0.4 - 0.2, 0.9 - 0.1 - 0.2, 0.1 - 0.1 - 0.2, 0.4])
    assert torch.allclose(out, expected, rtol=0, atol=1e-5), (
        f"counts [4, 1, 1, 0]: expected [0.8 - 0.4 - 0.2, 0.9 - 0.1 - 0.2, 0.1 - 0.1 - 0.2, 0.4] = "
        f"{[round(x, 4) for x in expected.tolist()]}, got {out.tolist()}"
    )
