"""Visible tests of 05_decoding: shipped with the assignment, run by `grader check("05_decoding")`.

They are the notebook's worked examples, numbers you can check by hand. Beam search runs on small models
that live in the grader (decoding_support.py): the table model of the notebook, and models whose logits
come from a hash of the prefix (so every prefix has its own distribution, the same in every run), where
beam search must find what greedy decoding and an exhaustive search over every sequence find (fixed
expected tokens).
The hidden tests check the same rules on other inputs: eos_id, other widths, context lengths, ties of the
repetition rule, the `top` of the Zipf fit, pooling. Tolerances: 1e-6 relative on counts and fits,
1e-4 relative on perplexities (float32 log-probabilities).
"""

import pytest
import torch

from grader.testing import expect_number, hashed_model, helper_module, points

support = helper_module(__file__, "decoding_support.py")
A, B, C = support.A, support.B, support.C
SPELL = "ABC"


def _spell(ids):
    return " ".join(SPELL[i] for i in ids)


def _beam(student, model, prompt, width, max_new_tokens, eos_id=None):
    out = student.beam_search(model.exposed(), torch.tensor([prompt]), width, max_new_tokens, eos_id)
    return support.check_ids(out, prompt)


# ---------------------------------------------------------------- beam_search


@pytest.mark.parametrize(
    "width,expected,why",
    [
        pytest.param(1, [A, A, A], "width 1 is greedy: A (0.45), then A (0.40), then A (0.40)", id="width-1"),
        pytest.param(
            2, [B, A, B], "width 2 keeps A and B after step 1, and B A (0.315) beats every pair", id="width-2"
        ),
        pytest.param(3, [C, C, C], "width 3 also keeps C, and C C C (0.192) is the best of all", id="width-3"),
    ],
)
@points(2)
def test_beam_search_on_the_worked_example(student, width, expected, why):
    """beam_search on the notebook's table model finds A A A, B A B and C C C with widths 1, 2 and 3"""
    found = _beam(student, support.worked_example(), [0], width, 3)
    assert found == expected, f"beam width {width} should return {_spell(expected)} ({why}), not {_spell(found)}"


@points(2)
def test_beam_width_one_is_greedy(student):
    """beam_search with beam_width 1 returns the greedy continuation"""
    found = _beam(student, hashed_model(vocab_size=6, seed=1), [2, 4], 1, 6)
    assert found == [5, 5, 0, 4, 0, 5], (
        "with beam_width 1, beam search must pick the most likely token at every step (greedy): 5 5 0 4 0 5 here"
    )


@points(3)
def test_beam_search_as_wide_as_every_sequence_is_exhaustive(student):
    """beam_search with a width covering all 3**4 sequences finds the most likely one"""
    found = _beam(student, hashed_model(vocab_size=3, seed=4), [1], 3**4, 4)
    assert found == [0, 2, 2, 1], (
        "a beam of width 81 keeps every sequence of 4 tokens over 3, so it must return the most likely one: "
        f"0 2 2 1 (log-probability -2.6184; the next best, 0 2 2 0, has -2.6294), not {found}"
    )


@points(1)
def test_beam_width_below_one_raises(student):
    """beam_search raises ValueError when beam_width < 1"""
    with pytest.raises(ValueError):
        student.beam_search(support.worked_example().exposed(), torch.tensor([[0]]), 0, 3)


# ---------------------------------------------------------------- distinct_n


@points(2)
def test_distinct_n_worked_example(student):
    """distinct_n pools the n-grams of every sample: 4 distinct bigrams of 6 in the worked example"""
    out = student.distinct_n([[1, 2, 3, 1, 2], [1, 2, 4]], 2)
    expect_number(out, what="distinct_n([[1, 2, 3, 1, 2], [1, 2, 4]], 2)")
    assert out == pytest.approx(4 / 6, rel=1e-6), (
        f"the bigrams (1,2) (2,3) (3,1) (1,2) (1,2) (2,4) are 6, of which 4 distinct: expected 0.6667, got {out:.4f}"
        + (" (that is the mean of each sample's own ratio: pool the n-grams)" if out == pytest.approx(0.875) else "")
    )


@points(1)
def test_distinct_n_without_any_ngram_is_zero(student):
    """distinct_n is 0.0 when no sample has n tokens"""
    out = student.distinct_n([[1, 2], [3]], 3)
    expect_number(out, 0.0, what="distinct_n([[1, 2], [3]], 3)")


@points(1)
def test_distinct_n_below_one_raises(student):
    """distinct_n raises ValueError when n < 1"""
    with pytest.raises(ValueError):
        student.distinct_n([[1, 2, 3]], 0)


# ---------------------------------------------------------------- zipf_coefficient


@pytest.mark.parametrize(
    "samples,expected,what",
    [
        pytest.param([[1] * 12 + [2] * 6, [3] * 4 + [4] * 3], 1.0, "counts 12, 6, 4, 3 are 12/rank: s = 1", id="s=1"),
        pytest.param([[5] * 8 + [6] * 2], 2.0, "counts 8, 2 fall by 4 when the rank doubles: s = 2", id="s=2"),
    ],
)
@points(2)
def test_zipf_coefficient_worked_examples(student, samples, expected, what):
    """zipf_coefficient is minus the least-squares slope of log count against log rank"""
    out = student.zipf_coefficient(samples)
    expect_number(out, what="zipf_coefficient")
    assert out == pytest.approx(expected, rel=1e-6), f"{what}; got {out:.4f}" + (
        " (the sign is flipped: return minus the slope)" if out == pytest.approx(-expected, rel=1e-6) else ""
    )


# ---------------------------------------------------------------- repetition


@pytest.mark.parametrize(
    "sample,loop,why",
    [
        pytest.param([7, 1, 2, 3, 1, 2, 3], True, "it ends with 1 2 3 twice: 3 tokens, 2 copies", id="3-tokens-twice"),
        pytest.param([1, 2, 1, 2, 1, 2], False, "its phrase 1 2 is under 3 tokens with 3 copies", id="2-tokens"),
        pytest.param([9] + [4] * 60, True, "it ends with 60 copies of one token, more than 50", id="60-copies"),
        pytest.param([1, 2, 3, 4, 5], False, "no phrase occurs twice back to back at its end", id="no-loop"),
        pytest.param([5, 4, 4, 5, 4, 4], False, "4 and 5 4 4 tie at 2 copies: the shorter counts, under 3 tokens", id="tie"),
    ],
)
@points(1)
def test_repetition_worked_examples(student, sample, loop, why):
    """repetition of one sample is 1.0 for a loop at its end and 0.0 otherwise, by the paper's rule"""
    out = student.repetition([sample])
    expect_number(out, what="repetition([sample])")
    assert out == (1.0 if loop else 0.0), f"{sample[:12]}{'...' if len(sample) > 12 else ''} is " + (
        f"a loop: {why}" if loop else f"not a loop: {why}"
    )


@points(1)
def test_repetition_is_the_share_of_loops(student):
    """repetition of the six worked examples is 2/6"""
    worked = [
        [7, 1, 2, 3, 1, 2, 3],
        [1, 2, 1, 2, 1, 2],
        [7] + [4] * 6,
        [9] + [4] * 60,
        [1, 2, 3, 4, 5],
        [5, 1, 2, 3, 1, 2, 3, 1, 1],
    ]
    out = student.repetition(worked)
    expect_number(out, 2 / 6, what="repetition of the six worked examples (2 loops of 6)")


# ---------------------------------------------------------------- perplexity


@points(2)
def test_perplexity_worked_example(student):
    """perplexity of A B and C after the prompt [0] under the table model is (0.45 * 0.30 * 0.20) ** (-1/3)"""
    out = student.perplexity(support.worked_example().exposed(), [[0], [0]], [[A, B], [C]])
    expect_number(out, what="perplexity")
    assert out == pytest.approx(0.027 ** (-1 / 3), rel=1e-4), (
        f"P(A) = 0.45, P(B | A) = 0.30, P(C) = 0.20: exp of the mean NLL of these 3 tokens is 3.3333, got {out:.4f}"
    )
