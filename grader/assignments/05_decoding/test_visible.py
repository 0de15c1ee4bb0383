"""Visible tests of 05_decoding: shipped with the assignment, run by `grader check("05_decoding")`.

They are the notebook's worked examples, numbers you can check by hand. Beam search runs on small models
that live in the grader (decoding_support.py): the table model of the notebook, and models whose logits
come from a hash of the prefix (so every prefix has its own distribution, the same in every run), where
beam search must find what greedy decoding and an exhaustive search over every sequence find (fixed
expected tokens).
Every rule of the notebook has a test here; the hidden tests check the same rules on other inputs: eos_id on other
models and widths, other context lengths, ties of the repetition rule, other `top`s of the Zipf fit, pooling.
Tolerances: 1e-6 relative on counts and fits, 1e-4 relative on perplexities (float32 log-probabilities).
"""

import pytest
import torch

from grader.testing import expect_number, hashed_model, helper_module, points

support = helper_module(__file__, "decoding_support.py")
A, B, C = support.A, support.B, support.C
SPELL = "ABC"
SIGN_FLIPPED = " (the sign is flipped: return minus the slope)"


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


@points(2)
def test_beam_search_keeps_a_finished_beam(student):
    """with eos_id, a beam that emits it is finished: never extended, it competes with the running beams as it is"""
    model = support.worked_example()
    found = _beam(student, model, [0], 2, 3, eos_id=B)
    mistakes = {
        (A, A, A): "yours divided the scores by the lengths: a sequence's score is the plain sum, no length penalty",
        (C, C, C): "yours never let a beam end with eos_id",
    }
    assert found == [B], (
        "with eos_id = B, the beam B (0.35) is finished after one step; every running beam then falls below it "
        f"(A A 0.18, A A A 0.072), so width 2 returns the prompt then B, not {_spell(found)}"
        + (f": {mistakes[tuple(found)]}" if tuple(found) in mistakes else "")
    )
    found = _beam(student, model, [0], 2, 3, eos_id=A)
    assert found == [A], (
        "with eos_id = A, the beam A (0.45) is finished after one step and no sequence beats it (B A, 0.315, is "
        f"next), so width 2 returns the prompt then A, not {_spell(found)}: a finished beam is never extended, "
        "stays among the kept beams with its score, and the best kept sequence has the highest plain sum"
    )


@points(2)
def test_beam_search_runs_the_model_on_the_last_block_size_ids(student):
    """past the model's context length, beam_search runs it on the last block_size ids of each beam"""
    # a model with a context of 4 positions, a prompt of 3 and 3 new tokens: the model never sees more than 4 ids
    found = _beam(student, hashed_model(vocab_size=3, seed=7, block_size=4), [0, 1, 2], 2, 3)
    assert found == [2, 0, 1], (
        "with a context length of 4 the model scores each beam from its last 4 ids (sequences[:, -block_size:]); "
        f"the best sequence of 3 new tokens is then 2 0 1 (log-probability -1.5818), not {found}"
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
        SIGN_FLIPPED if out == pytest.approx(-expected, rel=1e-6) else ""
    )


@points(1)
def test_zipf_coefficient_ranks_ids_by_count(student):
    """zipf_coefficient ranks the ids by their counts, the most frequent first, whatever order they appear in"""
    out = student.zipf_coefficient([[1] * 6 + [2] * 3, [3] * 12 + [4] * 4])
    expect_number(out, what="zipf_coefficient")
    first_seen = out == pytest.approx(-0.0379083, rel=1e-4)  # the fit of 6, 3, 12, 4 as ranks 1 to 4
    assert out == pytest.approx(1.0, rel=1e-6), (
        f"counts 6, 3, 12, 4 in the order the ids first appear are 12, 6, 4, 3 from rank 1 down, 12/rank: s = 1; "
        f"got {out:.4f}"
        + (" (yours ranks the ids as they first appear: sort the counts first)" if first_seen else "")
        + (SIGN_FLIPPED if out == pytest.approx(-1.0, rel=1e-6) else "")
    )


@points(2)
def test_zipf_coefficient_fits_the_top_ids_only(student):
    """zipf_coefficient(samples, top) fits only the `top` most frequent ids"""
    out = student.zipf_coefficient([[1] * 12 + [2] * 6 + [3] * 4 + [4] * 3 + [5, 6, 7, 8, 9, 10]], top=4)
    expect_number(out, what="zipf_coefficient")
    assert out == pytest.approx(1.0, rel=1e-6), (
        f"with top=4 only the counts 12, 6, 4, 3 are fitted (the six ids seen once are left out): s = 1; got {out:.4f}"
        + (" (yours fits every id: keep the `top` most frequent only)" if out == pytest.approx(1.2252085) else "")
        + (SIGN_FLIPPED if out == pytest.approx(-1.0, rel=1e-6) else "")
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
    known = {
        (0.40 * 0.30 * 0.98) ** (-1 / 3): "yours reads each token's probability from the logits at its own position, "
        "which predict the next token: the logits at position t predict the token at t + 1",
        ((0.45 * 0.30) ** (-1 / 2) + 1 / 0.20) / 2: "yours is the mean of each sample's perplexity: pool the negative "
        "log-likelihoods of every token",
    }
    cause = next(
        (why for value, why in known.items() if out == pytest.approx(value, rel=1e-4)),
        "mind the offset (the logits at position t predict the token at t + 1) and take log_softmax of the float32 "
        "logits",
    )
    assert out == pytest.approx(0.027 ** (-1 / 3), rel=1e-4), (
        f"P(A) = 0.45, P(B | A) = 0.30, P(C) = 0.20: exp of the mean NLL of these 3 tokens is 3.3333, got {out:.4f}: "
        f"{cause}"
    )


@points(2)
def test_perplexity_of_one_token_after_a_prompt(student):
    """perplexity scores the continuation's tokens only; the whole prompt is context"""
    out = student.perplexity(support.worked_example().exposed(), [[0, C]], [[C]])
    expect_number(out, what="perplexity")
    scored_the_prompt = out == pytest.approx((0.20 * 0.98) ** (-1 / 2), rel=1e-4)
    assert out == pytest.approx(1 / 0.98, rel=1e-4), (
        f"after the prompt 0 C the model gives C probability 0.98: the perplexity of the continuation C is 1 / 0.98 = "
        f"1.0204, got {out:.4f}"
        + (" (yours also scores the prompt's C: the prompt is context, never scored)" if scored_the_prompt else "")
    )
