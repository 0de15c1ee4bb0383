"""Hidden tests of 06_speculative (not shipped to students).

A failed hidden test shows the student only its docstring and assertion message, so every message names the rule
that was broken. speculative_step's verdicts over 30,000 rounds are compared with the exact law of a round
(spec_reference.round_law: how many drafts are kept, and the token after them), for other k, vocabularies, dtypes
and leading dimensions than the visible tests use. speculative_generate runs on the models of spec_support.py: a
draft that is a flatter copy of the target (its most likely token is the target's, so a draft that is not sampled
shows), other temperatures and k, a draft with a shorter context, and contexts that fill the models exactly.
Frequencies are checked by grader.testing.expect_frequencies (each check fails a correct sampler with probability at
most 1e-9).
"""

import pytest
import torch

from grader.answers import expect_prediction
from grader.testing import expect_frequencies, expect_number, expect_tensor, helper_module, points, seeded

spec = helper_module(__file__, "spec_support.py")
ref = helper_module(__file__, "spec_reference.py")


def _kv(shape, seed):
    g = seeded(seed)
    return torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)


def _keys(cache, layer, k, v, what):
    result = cache.update(layer, k, v)
    assert type(result) in (tuple, list) and len(result) == 2, f"{what} should return the pair (k_all, v_all)"
    return expect_tensor(result[0], what=f"the keys of {what}"), expect_tensor(result[1], what=f"the values of {what}")


def _rounds(student, p, q, rounds, seed, leading=None):
    """student.speculative_step on `rounds` copies of one round (drafts sampled from q here), shaped `leading` + (k,)."""
    leading = leading or (rounds,)
    k = q.shape[0]
    drafts = torch.multinomial(q.float(), rounds, replacement=True, generator=seeded(seed)).T
    out = student.speculative_step(
        p.expand(*leading, *p.shape),
        q.expand(*leading, *q.shape),
        drafts.reshape(*leading, k),
        generator=seeded(seed + 1),
    )
    assert type(out) in (tuple, list) and len(out) == 2, "speculative_step should return (n_accepted, next_token)"
    n_accepted = expect_tensor(out[0], dtype=torch.int64, shape=leading, what="n_accepted")
    next_token = expect_tensor(out[1], dtype=torch.int64, shape=leading, what="next_token")
    return n_accepted.reshape(-1), next_token.reshape(-1)


def _expect_round_law(n_accepted, next_token, p, q) -> None:
    """The verdicts (n_accepted, next_token) follow the exact law of a round; on failure, the message says whether the
    number of kept drafts is already off."""
    verdicts = list(zip(n_accepted.tolist(), next_token.tolist()))
    law = ref.round_law(p, q)
    try:
        spec.expect_law(verdicts, law, "(n_accepted, next_token) =")
    except AssertionError as failure:
        kept_law: dict[int, float] = {}
        for (n, _), probability in law.items():
            kept_law[n] = kept_law.get(n, 0.0) + probability
        try:
            spec.expect_law((n for n, _ in verdicts), kept_law, "n_accepted =")
        except AssertionError:
            hint = (
                "The number of kept drafts is off: draft i is kept with probability min(1, p_i(x) / q_i(x)), in "
                "order, until the first rejection."
            )
        else:
            hint = (
                "The number of kept drafts is right, so look at where next_token comes from: max(0, p - q) "
                "normalised over the vocabulary after a rejection, p_k after k kept drafts."
            )
        raise AssertionError(f"{failure}. {hint}") from None


# ---------------------------------------------------------------- KVCache.crop


@points(3)
def test_crop_after_the_cache_has_grown(student):
    """crop keeps the right positions of every layer after 70 positions (past any first buffer), batch 2, 3 layers"""
    cache = student.KVCache()
    kept = [_kv((2, 3, 70, 4), seed=100 + layer) for layer in range(3)]
    for layer, (k, v) in enumerate(kept):
        for start in range(0, 70, 10):
            _keys(cache, layer, k[:, :, start : start + 10], v[:, :, start : start + 10], f"an update of layer {layer}")
    cache.crop(65)
    n = expect_number(len(cache), what="len(cache) after crop(65)")
    assert n == 65, f"after 70 positions and crop(65), len(cache) should be 65, not {n}"
    for layer in range(3):
        k, v = _kv((2, 3, 12, 4), seed=110 + layer)
        k_all, v_all = _keys(cache, layer, k, v, f"the update of layer {layer} after crop(65)")
        assert torch.equal(k_all, torch.cat([kept[layer][0][:, :, :65], k], dim=2)) and torch.equal(
            v_all, torch.cat([kept[layer][1][:, :, :65], v], dim=2)
        ), (
            f"after crop(65) and 12 new positions, layer {layer} should hold its first 65 positions, then the 12 new ones"
        )


@points(2)
def test_crop_again_and_again(student):
    """a cache cropped, refilled and cropped again holds exactly what was kept each time"""
    cache = student.KVCache()
    expected = None
    for rounds, (new, keep) in enumerate([(5, 3), (4, 6), (2, 2), (3, 0), (4, 4)]):
        k, v = _kv((1, 2, new, 2), seed=120 + rounds)
        k_all, _ = _keys(cache, 0, k, v, "an update")
        expected = k if expected is None else torch.cat([expected, k], dim=2)
        assert torch.equal(k_all, expected), "after crops and updates, update returned other keys than those kept"
        cache.crop(keep)
        expected = expected[:, :, :keep]
        n = expect_number(len(cache), what=f"len(cache) after crop({keep})")
        assert n == keep, f"after crop({keep}), len(cache) should be {keep}, not {n}"


@pytest.mark.parametrize("n", [1, 100])
@points(1)
def test_crop_refuses_more_than_it_holds(student, n):
    """crop(n) of an empty cache, or past its length, raises ValueError"""
    cache = student.KVCache()
    if n == 100:
        _keys(cache, 0, *_kv((1, 1, 99, 2), seed=130), "the first update")
    with pytest.raises(ValueError):
        cache.crop(n)


# ---------------------------------------------------------------- speculative_step


@pytest.mark.parametrize("seed,k,vocab", [(1, 3, 4), (2, 1, 5), (3, 5, 3)])
@points(3)
def test_step_follows_the_law_of_a_round(student, seed, k, vocab):
    """over 30,000 rounds, (n_accepted, next_token) has the exact law of speculative sampling"""
    p, q = ref.rows(seed, k, vocab)
    n_accepted, next_token = _rounds(student, p, q, 30_000, seed=seed * 10)
    _expect_round_law(n_accepted, next_token, p, q)


@points(3)
def test_step_rounds_of_a_batch_are_independent(student):
    """leading dimensions (2, 3, 5000): each round follows its own law, whatever the other rounds are"""
    p1, q1 = ref.rows(4, 2, 4)
    p2, q2 = ref.rows(5, 2, 4)
    g = seeded(40)
    drafts = torch.stack(
        [torch.multinomial(q, 3 * 5000, replacement=True, generator=g).T.reshape(3, 5000, 2) for q in (q1, q2)]
    )
    p = torch.stack([p1.expand(3, 5000, 3, 4), p2.expand(3, 5000, 3, 4)])
    q = torch.stack([q1.expand(3, 5000, 2, 4), q2.expand(3, 5000, 2, 4)])
    n_accepted, next_token = student.speculative_step(p, q, drafts, generator=seeded(41))
    expect_tensor(n_accepted, dtype=torch.int64, shape=(2, 3, 5000), what="n_accepted")
    expect_tensor(next_token, dtype=torch.int64, shape=(2, 3, 5000), what="next_token")
    for index, (pi, qi) in enumerate(((p1, q1), (p2, q2))):
        try:
            _expect_round_law(n_accepted[index].reshape(-1), next_token[index].reshape(-1), pi, qi)
        except AssertionError as failure:
            raise AssertionError(f"in the rounds of row {index} of the first dimension: {failure}") from None


@points(2)
def test_step_float64_and_one_round(student):
    """float64 probabilities work, and a single round (no leading dimension) returns two 0-d tensors"""
    p, q = ref.rows(6, 2, 3)
    verdicts = []
    g = seeded(60)
    for seed in range(300):
        drafts = torch.multinomial(q, 1, generator=g)[:, 0]
        out = student.speculative_step(p.double(), q.double(), drafts, generator=seeded(seed))
        assert type(out) in (tuple, list) and len(out) == 2, "speculative_step should return (n_accepted, next_token)"
        n = expect_tensor(out[0], dtype=torch.int64, shape=(), what="n_accepted of one round")
        token = expect_tensor(out[1], dtype=torch.int64, shape=(), what="next_token of one round")
        verdicts.append((int(n), int(token)))
    spec.expect_law(verdicts, ref.round_law(p, q), "(n_accepted, next_token) =")


@points(2)
def test_step_equal_rows_keep_every_draft(student):
    """when q equals p at every drafted position, every draft is kept (ratio exactly 1) and the bonus token follows p_k"""
    p, _ = ref.rows(7, 4, 6)
    n_accepted, next_token = _rounds(student, p, p[:4], 20_000, seed=70)
    assert (n_accepted == 4).all(), "with q = p every ratio is 1, so every draft must be kept"
    expect_frequencies(next_token, p[4].double(), "the bonus token, drawn from p_k")


@pytest.mark.parametrize(
    "p_shape,q_shape,d_shape",
    [((4, 3), (3, 3), (2,)), ((2, 4, 3), (3, 3, 3), (2, 3)), ((3, 3), (2, 3), (1, 2))],
    ids=["drafts-short", "leading-dims-of-q", "drafts-leading-dim"],
)
@points(1)
def test_step_refuses_other_misfits(student, p_shape, q_shape, d_shape):
    """speculative_step raises ValueError for shapes that do not fit together"""
    with pytest.raises(ValueError):
        student.speculative_step(
            torch.full(p_shape, 1 / 3), torch.full(q_shape, 1 / 3), torch.zeros(d_shape, dtype=torch.long)
        )


# ---------------------------------------------------------------- speculative_generate


@points(5)
def test_generate_follows_the_target_with_a_flatter_draft(student):
    """with a draft that is a flatter copy of the target, 400 continuations follow the target's law"""
    samples = []
    for seed in range(400):  # the draft's logits are the target's halved: same favourite tokens, less sure of them
        target, draft = spec.model_pair(3, spec.hashed_rule(8, 3, 2.0), spec.hashed_rule(8, 3, 1.0))
        samples.append(tuple(spec.generate(student, target, draft, [2], 3, 2, generator=seeded(1000 + seed))))
    try:
        spec.expect_continuations(samples, spec.continuation_law(target, [2], 3))
    except AssertionError as failure:
        raise AssertionError(f"{failure} (are the drafts sampled from q, with the generator?)") from None


@points(3)
def test_generate_at_a_high_temperature(student):
    """at temperature 2, 400 first tokens follow softmax(target logits / 2)"""
    samples = []
    for seed in range(400):  # the target's token 5 has probability 0.51 at temperature 1, and 0.28 at 2
        target, draft = spec.model_pair(8, spec.peak_rule(5, 2.0, 8), spec.peak_rule(1, 2.0, 8))
        samples.append(tuple(spec.generate(student, target, draft, [3], 1, 3, temperature=2.0, generator=seeded(seed))))
    spec.expect_continuations(samples, spec.continuation_law(target, [3], 1, temperature=2.0))


@pytest.mark.parametrize("k", [1, 2, 5])
@points(2)
def test_generate_crops_both_caches_for_other_k(student, k):
    """for k = 1, 2 and 5, each model keeps one cropped cache and each round runs at most k + 1 target positions"""
    target, draft = spec.hashed_pair(5, 20 + k, 30 + k)
    prompt = [4, 1, 3]
    new = spec.generate(student, target, draft, prompt, 25, k, generator=seeded(k))
    problems = spec.loop_problems(target, draft, prompt, new, k)
    assert not problems, problems[0]


@pytest.mark.parametrize("k", [2, 5])
@points(2)
def test_generate_with_the_target_as_draft_for_other_k(student, k):
    """with a draft equal to the target, 4 (k + 1) tokens take 4 target forwards, for k = 2 and 5"""
    target, draft = spec.hashed_pair(6, 40, 40)
    spec.generate(student, target, draft, [5, 5], 4 * (k + 1), k, generator=seeded(40 + k))
    forwards = len(target.forwards)
    assert forwards in (4, 5), (
        f"with the draft equal to the target, each round yields k + 1 = {k + 1} tokens: {4 * (k + 1)} tokens take 4 "
        f"target forwards (5 if the target first runs the prompt alone), not {forwards}"
    )


@points(2)
def test_generate_rejects_every_draft_for_k_4(student):
    """a draft that only proposes tokens the target never samples, k = 4: one token per round, all the target's"""
    target, draft = spec.model_pair(
        6, spec.only([1, 3, 5], spec.hashed_rule(50, 6)), spec.only([0, 2, 4], spec.hashed_rule(51, 6))
    )
    new = spec.generate(student, target, draft, [2, 2, 2], 9, 4, generator=seeded(50))
    assert set(new) <= {1, 3, 5}, "a draft the target never samples went into the output"
    problems = spec.loop_problems(target, draft, [2, 2, 2], new, 4)
    assert not problems, problems[0]


@points(2)
def test_generate_fills_the_context_exactly(student):
    """positions + max_new_tokens + k equal to block_size is allowed"""
    target, draft = spec.hashed_pair(4, 60, 61, block_size=20)
    prompt = [1, 2, 3, 0, 1]
    new = spec.generate(student, target, draft, prompt, 12, 3, generator=seeded(60))
    problems = spec.loop_problems(target, draft, prompt, new, 3)
    assert not problems, problems[0]


@points(1)
def test_generate_zero_new_tokens(student):
    """max_new_tokens = 0 returns the prompt"""
    target, draft = spec.hashed_pair(4, 62, 63)
    new = spec.generate(student, target, draft, [3, 1], 0, 2, generator=seeded(62))
    assert new == []


@points(1)
def test_generate_refuses_a_draft_with_a_shorter_context(student):
    """a prompt that fits the target's context but not the draft's raises ValueError"""
    target = spec.CachedModel(spec.hashed_rule(64, 4), 4, block_size=64, name="target")
    draft = spec.CachedModel(spec.hashed_rule(65, 4), 4, block_size=16, name="draft")
    with pytest.raises(ValueError):
        student.speculative_generate(target.exposed(), draft.exposed(), torch.tensor([[1] * 5]), 10, 2)
    assert not target.forwards and not draft.forwards, "raise ValueError before running any model"


# ---------------------------------------------------------------- predictions


@points(1)
def test_predicted_acceptance(student):
    """PREDICT_ACCEPTANCE: the probability that the worked example's first draft is kept (within 0.005)"""
    expect_prediction(student.PREDICT_ACCEPTANCE, 0.6, "PREDICT_ACCEPTANCE", tolerance=0.005)


@points(1)
def test_predicted_accepted_drafts(student):
    """PREDICT_ACCEPTED_DRAFTS: the drafts a round of k = 4 accepts on average when each is kept with probability 0.8
    (within 0.01)"""
    expected = sum(0.8**i for i in range(1, 5))
    expect_prediction(student.PREDICT_ACCEPTED_DRAFTS, expected, "PREDICT_ACCEPTED_DRAFTS", tolerance=0.01)
