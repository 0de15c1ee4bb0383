"""Hidden tests of 05_decoding (not shipped to students).

A failed hidden test shows the student only its docstring and assertion message, so every message names the
rule that was broken, and, where a common mistake gives a recognisable answer (a length penalty, a score per
sample instead of pooled, the n-gram count one short, the slope's sign, `top` ignored), names that mistake.
Beam search at widths between 1 and exhaustive is compared with `reference_beam_search` below, which keeps
the rule of docs/assignments.md in float64 and checks that no kept candidate is within MARGIN of the first one dropped, so
that float32 and float64 sums keep the same beams. Tolerances: 1e-6 relative on counts and fits, 1e-4
relative on perplexities.
"""

import math

import numpy as np
import pytest
import torch

from grader.testing import expect_number, hashed_model, helper_module, points

support = helper_module(__file__, "decoding_support.py")
ref = helper_module(__file__, "decoding_reference.py")
A, B, C = support.A, support.B, support.C
MARGIN = 1e-3


def reference_beam_search(model, prompt, width, max_new_tokens, eos_id=None, window=None):
    """Beam search by the rule, in float64: the new tokens of the best kept sequence; the model sees the last `window` ids."""
    beams = [(0.0, ())]  # (score, new tokens); a beam ending with eos_id is finished
    for _ in range(max_new_tokens):
        if all(eos_id is not None and new and new[-1] == eos_id for _, new in beams):
            break
        candidates = []
        for score, new in beams:
            if eos_id is not None and new and new[-1] == eos_id:
                candidates.append((score, new))
                continue
            context = (tuple(prompt) + new)[-window:] if window else tuple(prompt) + new
            log_probs = ref.log_probs(model, context).tolist()
            candidates += [(score + lp, (*new, token)) for token, lp in enumerate(log_probs)]
        candidates.sort(reverse=True)
        if len(candidates) > width:
            assert candidates[width - 1][0] - candidates[width][0] > MARGIN, "pick another seed: a near tie"
        beams = candidates[:width]
    return list(max(beams)[1])


def _beam(student, model, prompt, width, max_new_tokens, eos_id=None):
    out = student.beam_search(model.exposed(), torch.tensor([prompt]), width, max_new_tokens, eos_id)
    return support.check_ids(out, prompt)


def _length_normalised_best(model, prompt, max_new_tokens, eos_id):
    scored = [
        (ref.sequence_score(model, prompt, list(tokens)) / len(tokens), tokens)
        for tokens in ref.every_sequence(model.config.vocab_size, max_new_tokens, eos_id)
    ]
    return list(max(scored)[1])


def _diagnosis(found, expected, eos_id=None, length_normalised=None):
    """A sentence naming the mistake that gives `found` instead of `expected`, when one is recognisable."""
    if eos_id is not None and eos_id in found[:-1]:
        return " Your sequence goes on after eos_id: a beam that emits eos_id is finished and is never extended."
    if length_normalised is not None and found == length_normalised != expected:
        return " Yours is the best score divided by its length: beam search keeps the plain sum, no length penalty."
    return ""


# ---------------------------------------------------------------- beam_search


@pytest.mark.parametrize("seed", [8, 11])
@points(3)
def test_beam_search_exhaustive_with_eos(student, seed):
    """with eos_id and a width covering every sequence, beam_search returns the most likely finished or full one"""
    model = hashed_model(vocab_size=4, seed=seed)
    best = list(ref.ranked_sequences(model, [0], 4, eos_id=3)[0][1])
    found = _beam(student, model, [0], 4**4, 4, eos_id=3)
    assert found == best, (
        "a width covering every sequence must return the most likely one, either finished (cut right after its "
        "first eos_id) or full length, scored by its plain sum of log-probabilities."
        + _diagnosis(found, best, 3, _length_normalised_best(model, [0], 4, 3))
    )


@points(2)
def test_beam_search_stops_at_eos(student):
    """beam_search with width 1 stops when the greedy token is eos_id, and the result ends with it"""
    model = hashed_model(vocab_size=5, seed=1)
    greedy = ref.greedy_continuation(model, [1], 6)
    eos_id = greedy[1]  # the second greedy token (not the first): the search must end there, after two new tokens
    found = _beam(student, model, [1], 1, 6, eos_id=eos_id)
    assert found == greedy[:2], (
        "greedy decoding (width 1) that emits eos_id is finished: the result is the prompt, then the new tokens up "
        "to and including that eos_id, and nothing after it." + _diagnosis(found, greedy[:2], eos_id)
    )


@pytest.mark.parametrize(
    "width,vocab_size,max_new_tokens,eos_id,seed",
    [
        pytest.param(2, 5, 5, None, 2, id="width-2"),
        pytest.param(3, 5, 5, None, 6, id="width-3"),
        pytest.param(4, 6, 4, None, 70, id="width-4"),
        pytest.param(2, 5, 5, 4, 1, id="width-2-eos"),
        pytest.param(3, 4, 5, 3, 28, id="width-3-eos"),
    ],
)
@points(2)
def test_beam_search_keeps_the_best_sums(student, width, vocab_size, max_new_tokens, eos_id, seed):
    """beam_search keeps the beam_width highest sums of log-probabilities over every beam's candidates at every step"""
    model = hashed_model(vocab_size=vocab_size, seed=seed)
    expected = reference_beam_search(model, [2], width, max_new_tokens, eos_id)
    found = _beam(student, model, [2], width, max_new_tokens, eos_id)
    greedy = ref.greedy_continuation(model, [2], max_new_tokens)
    hint = " Yours returned the greedy sequence: keep several beams, not one." if found == greedy != expected else ""
    assert found == expected, (
        f"after every step keep the {width} candidates (each beam extended by every token"
        + (", and the finished beams as they are" if eos_id is not None else "")
        + ") with the highest sums of log_softmax of the logits, and return the best kept sequence."
        + hint
        + _diagnosis(found, expected, eos_id)
    )


@points(2)
def test_beam_search_past_the_context(student):
    """beam_search runs the model on at most block_size positions, the last ones, when the sequence grows past it"""
    model = hashed_model(vocab_size=4, seed=1, block_size=6)
    prompt = [1, 2, 3, 0, 1, 2]
    found = _beam(student, model, prompt, 2, 3)
    expected = reference_beam_search(model, prompt, 2, 3, window=6)
    assert found == expected, "the model sees the last block_size positions of each beam: score with those logits"


@points(1)
def test_beam_search_zero_new_tokens(student):
    """beam_search with max_new_tokens 0 returns the prompt"""
    found = _beam(student, support.worked_example(), [0, 1], 2, 0)
    assert found == [], "with max_new_tokens = 0 there is nothing to add: return the prompt, shape (1, positions)"


# ---------------------------------------------------------------- distinct_n


@pytest.mark.parametrize(
    "samples,n,expected,mistake",
    [
        pytest.param([[1, 2]], 2, 1.0, "a sample of exactly n tokens has one n-gram", id="exactly-n"),
        pytest.param([[1, 1, 1, 1]], 1, 0.25, "4 unigrams, 1 distinct", id="unigrams"),
        pytest.param([[1, 1, 1, 1]], 2, 1 / 3, "a sample of L tokens has L - n + 1 n-grams", id="bigrams"),
        pytest.param([[1, 2, 3], [1, 2, 3]], 2, 0.5, "the same bigrams in two samples are pooled", id="pooled"),
        pytest.param([[1], [1, 2, 1, 2]], 2, 2 / 3, "a sample shorter than n adds nothing", id="short-sample"),
        pytest.param([[1, 2, 3], [3, 1, 2], [2, 3, 1, 2]], 3, 3 / 4, "n-grams never span two samples", id="trigrams"),
    ],
)
@points(1)
def test_distinct_n_counts(student, samples, n, expected, mistake):
    """distinct_n is the number of distinct n-grams over the number of n-grams, pooled over the samples"""
    out = student.distinct_n(samples, n)
    expect_number(out, what="distinct_n")
    long_enough = [s for s in samples if len(s) >= n]
    per_sample = [len({tuple(s[i : i + n]) for i in range(len(s) - n + 1)}) / (len(s) - n + 1) for s in long_enough]
    hint = ""
    if expected != pytest.approx(sum(per_sample) / len(per_sample)) and out == pytest.approx(
        sum(per_sample) / len(per_sample)
    ):
        hint = " (yours is the mean of each sample's own ratio: pool the n-grams of all samples first)"
    assert out == pytest.approx(expected, rel=1e-6), f"{mistake}{hint}"


# ---------------------------------------------------------------- zipf_coefficient


def _fit(counts, top):
    counts = sorted(counts, reverse=True)[:top]
    slope = np.polyfit(np.log(np.arange(1, len(counts) + 1)), np.log(np.array(counts, dtype=float)), 1)[0]
    return -float(slope)


def _samples_with_counts(counts):
    ids = [token for token in reversed(range(len(counts))) for _ in range(counts[token])]  # the rarest first
    return [ids[i : i + 50] for i in range(0, len(ids), 50)]


@points(2)
def test_zipf_coefficient_fits_every_rank(student):
    """zipf_coefficient fits the least-squares line over every count when there are fewer than `top` ids"""
    counts = [40, 25, 9, 9, 7, 3, 2, 2, 1]
    out = student.zipf_coefficient(_samples_with_counts(counts))
    expect_number(out, what="zipf_coefficient")
    expected = _fit(counts, 5000)
    assert out == pytest.approx(expected, rel=1e-6), "fit log count against log rank (ranks from 1, counts sorted)" + (
        "; the sign is flipped: return minus the slope" if out == pytest.approx(-expected, rel=1e-6) else ""
    )


@pytest.mark.parametrize("top", [pytest.param(4, id="top-4"), pytest.param(None, id="default-5000")])
@points(2)
def test_zipf_coefficient_uses_the_top_ids(student, top):
    """zipf_coefficient fits only the `top` most frequent ids (5000 by default)"""
    counts = (
        [(6000 - i) // 600 + 1 + (i < 4) * (40 - 9 * i) for i in range(6000)]
        if top is None
        else [50, 20, 9, 8, 1, 1, 1, 1, 1]
    )
    samples = _samples_with_counts(counts)
    out = student.zipf_coefficient(samples) if top is None else student.zipf_coefficient(samples, top=top)
    expect_number(out, what="zipf_coefficient")
    expected = _fit(counts, 5000 if top is None else top)
    ignored = (
        " (yours fits every id: keep the `top` most frequent only)" if out == pytest.approx(_fit(counts, 10**9)) else ""
    )
    assert out == pytest.approx(expected, rel=1e-6), f"fit only the {top or 5000} most frequent ids{ignored}"


# ---------------------------------------------------------------- repetition


@pytest.mark.parametrize(
    "sample,loop,rule",
    [
        pytest.param([5, 1, 2, 3, 1, 2, 3, 1, 1], False, "its loop 1 2 3 is not at the end", id="loop-then-more"),
        pytest.param(
            [7] + [4] * 6, False, "6 copies of one token: the most copies go to the 1-token phrase", id="stutter"
        ),
        pytest.param([8] + [4] * 51, True, "more than 50 copies of a one-token phrase is a loop", id="51-copies"),
        pytest.param([8] + [4] * 50, False, "50 copies of a one-token phrase is not more than 50", id="50-copies"),
        pytest.param([9] + [1, 2] * 60, True, "a two-token phrase with 60 copies is a loop", id="pairs"),
        pytest.param([1, 2, 3, 1, 2, 3, 4], False, "only a loop at the end counts", id="not-at-end"),
        pytest.param([0] + list(range(1, 6)) * 2, True, "a five-token phrase twice at the end", id="5-tokens"),
        pytest.param(list(range(1, 92)) * 2, False, "phrases longer than 90 tokens are not looked for", id="91-tokens"),
    ],
)
@points(1)
def test_repetition_rule(student, sample, loop, rule):
    """repetition follows the paper's rule: the phrase with the most back-to-back copies at the end decides"""
    out = student.repetition([sample])
    expect_number(out, what="repetition([sample])")
    assert out == (1.0 if loop else 0.0), f"this sample is {'a loop' if loop else 'not a loop'}: {rule}"


@points(1)
def test_repetition_of_no_samples(student):
    """repetition of an empty list of samples is 0.0"""
    expect_number(student.repetition([]), 0.0, what="repetition([])")


# ---------------------------------------------------------------- perplexity


@points(2)
def test_perplexity_pools_every_token(student):
    """perplexity pools the negative log-likelihoods of every token of every sample (not a mean of perplexities)"""
    out = student.perplexity(support.worked_example().exposed(), [[0], [0]], [[A, A, A], [C]])
    expect_number(out, what="perplexity")
    expected = (0.45 * 0.40 * 0.40 * 0.20) ** (-1 / 4)
    per_sample = ((0.45 * 0.40 * 0.40) ** (-1 / 3) + 1 / 0.20) / 2
    hint = " (yours is the mean of each sample's perplexity)" if out == pytest.approx(per_sample, rel=1e-4) else ""
    assert out == pytest.approx(expected, rel=1e-4), f"exp(total NLL / number of continuation tokens){hint}"


@points(2)
def test_perplexity_scores_the_continuation_only(student):
    """perplexity conditions on the whole prompt and scores only the continuation's tokens"""
    out = student.perplexity(support.worked_example().exposed(), [[0, B]], [[A, B]])
    expect_number(out, what="perplexity")
    with_prompt = (0.35 * 0.90 * 0.45) ** (-1 / 3)
    hint = " (yours also scores a prompt token)" if out == pytest.approx(with_prompt, rel=1e-4) else ""
    assert out == pytest.approx((0.90 * 0.45) ** (-1 / 2), rel=1e-4), (
        f"the prompt is context: each continuation token is predicted from the prompt and the tokens before it{hint}"
    )


@points(2)
def test_perplexity_on_a_model_with_many_tokens(student):
    """perplexity on a model with 50 tokens and longer samples"""
    model = hashed_model(vocab_size=50, seed=21)
    prompts = [[3, 4, 5], [7], [1, 1]]
    continuations = [[9, 8, 7, 6, 5], [0, 49], [13, 14, 15, 16]]
    out = student.perplexity(model.exposed(), prompts, continuations)
    expect_number(out, what="perplexity")
    total = sum(ref.sequence_score(model, p, c) for p, c in zip(prompts, continuations))
    expected = math.exp(-total / sum(len(c) for c in continuations))
    assert out == pytest.approx(expected, rel=1e-4), (
        "log_softmax of the float32 logits; the logits at position t predict the token at t + 1"
    )
