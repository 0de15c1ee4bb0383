"""Visible tests of 06_speculative: shipped with the assignment, run by `check("06_speculative")`.

KVCache.crop is checked on fixed keys and values. speculative_step is checked on rounds you can work out by hand
(a draft the target likes at least as much is always kept, one it never samples always rejected) and, over 20,000
rounds in one call, against the theorem: the first token of a round has the target's distribution, and the first
draft is kept with probability sum_x min(p(x), q(x)). speculative_generate drives two small models that run in the
grader (spec_support.py): they read the context back from the cache you give them, and they record every forward,
so the tests see which cache each forward used, what it held and how many positions it ran.

Frequencies are checked by grader.testing.expect_frequencies: each check fails a correct sampler with probability at
most 1e-9. The hidden tests check the same rules on other cases: other k, vocabularies, temperatures and leading
dimensions, the law of every position of a round, longer generations.
"""

import pytest
import torch

from grader.testing import expect_frequencies, expect_number, expect_tensor, helper_module, points, seeded

spec = helper_module(__file__, "spec_support.py")


def _kv(shape, seed):
    g = seeded(seed)
    return torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)


def _update(cache, layer, k, v, what):
    result = cache.update(layer, k, v)
    assert type(result) in (tuple, list) and len(result) == 2, f"{what} should return the pair (k_all, v_all)"
    return expect_tensor(result[0], what=f"the keys of {what}"), expect_tensor(result[1], what=f"the values of {what}")


def _step(student, p, q, drafts, seed):
    out = student.speculative_step(p, q, drafts, generator=seeded(seed))
    assert type(out) in (tuple, list) and len(out) == 2, "speculative_step should return (n_accepted, next_token)"
    shape = drafts.shape[:-1]
    n_accepted = expect_tensor(out[0], dtype=torch.int64, shape=shape, what="n_accepted")
    next_token = expect_tensor(out[1], dtype=torch.int64, shape=shape, what="next_token")
    k, vocab = drafts.shape[-1], p.shape[-1]
    assert bool(((n_accepted >= 0) & (n_accepted <= k)).all()), f"n_accepted should count 0 to k = {k} drafts"
    assert bool(((next_token >= 0) & (next_token < vocab)).all()), f"next_token should be an id from 0 to {vocab - 1}"
    return n_accepted, next_token


# ---------------------------------------------------------------- KVCache.crop


@points(3)
def test_crop_keeps_the_first_positions_of_every_layer(student):
    """crop(n) keeps the first n positions of every layer: len(cache) is n, and the next update appends after them"""
    cache = student.KVCache()
    kept = [_kv((1, 2, 5, 4), seed=layer) for layer in range(2)]
    for layer, (k, v) in enumerate(kept):
        _update(cache, layer, k, v, f"the update of layer {layer}")
    assert cache.crop(3) is None, "crop should return nothing: it changes the cache itself"
    n = expect_number(len(cache), what="len(cache) after crop(3)")
    assert n == 3, f"after 5 positions and crop(3), len(cache) should be 3, not {n}"
    for layer in range(2):
        k, v = _kv((1, 2, 1, 4), seed=10 + layer)
        k_all, v_all = _update(cache, layer, k, v, f"the update of layer {layer} after crop(3)")
        assert k_all.shape == (1, 2, 4, 4), (
            f"after crop(3), an update of 1 position should return 4 positions of layer {layer}, not "
            f"{tuple(k_all.shape)}: crop every layer"
        )
        assert torch.equal(k_all, torch.cat([kept[layer][0][:, :, :3], k], dim=2)) and torch.equal(
            v_all, torch.cat([kept[layer][1][:, :, :3], v], dim=2)
        ), f"after crop(3), layer {layer} should hold its first 3 positions, then the new one"


@points(2)
def test_crop_to_the_cache_length_changes_nothing(student):
    """crop(len(cache)) keeps every position, and crop(0) empties the cache"""
    cache = student.KVCache()
    k, v = _kv((1, 1, 4, 2), seed=20)
    _update(cache, 0, k, v, "the first update")
    cache.crop(4)
    k2, v2 = _kv((1, 1, 1, 2), seed=21)
    k_all, _ = _update(cache, 0, k2, v2, "the update after crop(4)")
    assert torch.equal(k_all, torch.cat([k, k2], dim=2)), "crop(4) of a cache of 4 positions should keep all of them"
    cache.crop(0)
    n = expect_number(len(cache), what="len(cache) after crop(0)")
    assert n == 0, f"crop(0) should empty the cache, but len(cache) is {n}"


@pytest.mark.parametrize("n", [6, -1], ids=["longer", "negative"])
@points(1)
def test_crop_refuses_lengths_it_cannot_keep(student, n):
    """crop(n) raises ValueError unless 0 <= n <= len(cache)"""
    cache = student.KVCache()
    _update(cache, 0, *_kv((1, 1, 5, 2), seed=30), "the first update")
    with pytest.raises(ValueError):
        cache.crop(n)


# ---------------------------------------------------------------- speculative_step

# A round of k = 2 over 3 tokens: target rows p_0, p_1 and the row after the last draft, p_2.
P = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4]])
Q = torch.tensor([[0.2, 0.2, 0.6], [0.4, 0.4, 0.2]])


@points(2)
def test_step_returns_counts_and_tokens_per_round(student):
    """speculative_step returns two int64 tensors of draft_tokens.shape[:-1]: one round, or a batch of rounds"""
    drafts = torch.tensor([0, 1])
    _step(student, P, Q, drafts, seed=1)  # one round: two 0-d tensors
    _step(student, P.expand(2, 3, 3, 3), Q.expand(2, 3, 2, 3), drafts.expand(2, 3, 2), seed=2)


@points(3)
def test_step_keeps_drafts_the_target_likes_at_least_as_much(student):
    """a draft x with p(x) >= q(x) is always kept; when every draft is kept, the bonus token comes from the last row"""
    drafts = torch.tensor([0, 1]).expand(200, 2)  # p_0(0) = 0.5 >= q_0(0) = 0.2, p_1(1) = 0.6 >= q_1(1) = 0.4
    last = torch.tensor([0.0, 0.0, 1.0])  # the bonus token can only be 2
    p = torch.stack([P[0], P[1], last]).expand(200, 3, 3)
    n_accepted, next_token = _step(student, p, Q.expand(200, 2, 3), drafts, seed=3)
    assert (n_accepted == 2).all(), (
        "drafts whose target probability is at least their draft probability (ratio >= 1) must always be kept, but "
        f"n_accepted was {sorted(set(n_accepted.tolist()))}"
    )
    assert (next_token == 2).all(), (
        "when every draft is kept, the next token is the bonus token, drawn from the target's last row (here "
        f"always token 2), but it was {sorted(set(next_token.tolist()))}"
    )


@points(3)
def test_step_replaces_a_draft_the_target_never_samples(student):
    """a draft the target gives probability 0 is rejected, and its replacement comes from max(0, p - q), normalised"""
    p = torch.tensor([[0.6, 0.4, 0.0], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4]]).expand(200, 3, 3)
    q = torch.tensor([[0.0, 0.5, 0.5], [0.4, 0.4, 0.2]]).expand(200, 2, 3)
    drafts = torch.tensor([2, 1]).expand(200, 2)  # p_0(2) = 0: always rejected; max(0, p_0 - q_0) = [0.6, 0, 0]
    n_accepted, next_token = _step(student, p, q, drafts, seed=4)
    assert (n_accepted == 0).all(), "the first draft has target probability 0: it must always be rejected"
    assert (next_token == 0).all(), (
        "after rejecting the first draft, the replacement comes from max(0, p_0 - q_0) = [0.6, 0, 0], normalised: "
        f"always token 0, but it was {sorted(set(next_token.tolist()))}"
        + (" (drawn from p_0 itself?)" if 1 in next_token.tolist() else "")
    )


@points(3)
def test_step_stops_at_the_first_rejection(student):
    """n_accepted counts the drafts before the first rejection: a later draft is never kept, however likely"""
    p = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.2, 0.8], [1.0, 0.0, 0.0], [0.2, 0.2, 0.6]]).expand(200, 4, 3)
    q = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [1.0, 0.0, 0.0]]).expand(200, 3, 3)
    drafts = torch.tensor([0, 1, 0]).expand(200, 3)  # kept surely, kept with probability 0.4, kept surely
    n_accepted, _ = _step(student, p, q, drafts, seed=5)
    counts = torch.bincount(n_accepted, minlength=4).tolist()
    assert counts[0] == 0 and counts[2] == 0, (
        "draft 1 is always kept (ratio 1), draft 2 kept with probability 0.4 and draft 3 always if reached, so "
        f"n_accepted should be 1 or 3, but the counts of 0, 1, 2, 3 accepted were {counts}"
    )
    assert counts[1] > 0 and counts[3] > 0, f"n_accepted should be 1 (draft 2 rejected) or 3, counts {counts}"


@points(5)
def test_step_first_token_follows_the_target(student):
    """over 20,000 rounds with drafts sampled from q, a round's first token has the target's p_0, not the draft's q_0"""
    rounds = 20_000
    drafts = torch.multinomial(Q, rounds, replacement=True, generator=seeded(6)).T
    n_accepted, next_token = _step(student, P.expand(rounds, 3, 3), Q.expand(rounds, 2, 3), drafts, seed=7)
    first = torch.where(n_accepted > 0, drafts[:, 0], next_token)
    expect_frequencies(first, P[0], "the first token of a round (the first draft if kept, else its replacement)")
    alpha = torch.minimum(P[0], Q[0]).sum().item()
    expect_frequencies(
        (n_accepted > 0).long(),
        [1 - alpha, alpha],
        f"whether the first draft was kept (1) or not (0): it is kept with probability sum_x min(p_0(x), q_0(x)) = "
        f"{alpha:.2f}",
    )


@points(2)
def test_step_randomness_comes_from_the_generator(student):
    """speculative_step draws only from the generator: the same seed gives the same verdicts, another seed others"""
    rounds = 500
    drafts = torch.multinomial(Q, rounds, replacement=True, generator=seeded(8)).T
    p, q = P.expand(rounds, 3, 3), Q.expand(rounds, 2, 3)
    first, second, other = (_step(student, p, q, drafts, seed=seed) for seed in (9, 9, 10))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1]), (
        "two calls with identically seeded generators gave different results: pass the generator to every random draw"
    )
    assert not (torch.equal(first[0], other[0]) and torch.equal(first[1], other[1])), (
        "differently seeded generators gave the same results: the randomness must come from the generator argument"
    )


@pytest.mark.parametrize(
    "p_shape,q_shape,d_shape",
    [((2, 3), (2, 3), (2,)), ((3, 3), (2, 4), (2,)), ((3, 3), (2, 3), (3,)), ((4, 3, 3), (4, 2, 3), (3, 2))],
    ids=["no-extra-target-row", "vocabularies-differ", "too-many-drafts", "leading-dims-differ"],
)
@points(1)
def test_step_refuses_shapes_that_do_not_fit(student, p_shape, q_shape, d_shape):
    """speculative_step raises ValueError when target_probs, draft_probs and draft_tokens do not fit together"""
    with pytest.raises(ValueError):
        student.speculative_step(
            torch.full(p_shape, 1 / 3), torch.full(q_shape, 1 / 3), torch.zeros(d_shape, dtype=torch.long)
        )


# ---------------------------------------------------------------- speculative_generate


@points(2)
def test_generate_returns_the_prompt_then_new_tokens(student):
    """speculative_generate returns int64 (1, positions + max_new_tokens): the prompt, then the new ids"""
    target, draft = spec.hashed_pair(4, 1, 2)
    new = spec.generate(student, target, draft, [0, 1, 2], 7, 3, generator=seeded(11))
    assert len(new) == 7


@points(4)
def test_generate_with_the_target_as_draft_keeps_every_draft(student):
    """with a draft equal to the target every draft is kept: 20 tokens with k = 3 take 5 target forwards"""
    target, draft = spec.hashed_pair(4, 3, 3)
    spec.generate(student, target, draft, [1, 2], 20, 3, generator=seeded(12))
    forwards = len(target.forwards)
    assert forwards in (5, 6), (
        f"with the draft equal to the target, every round keeps its 3 drafts and adds the bonus token (4 tokens), so "
        f"20 tokens take 5 target forwards (6 if the target first runs the prompt alone), not {forwards}"
    )


@points(6)
def test_generate_runs_each_model_on_its_own_cache_and_crops_it(student):
    """each model keeps one KVCache, cropped after every round: no forward sees a rejected draft or re-runs a position"""
    target, draft = spec.hashed_pair(4, 4, 5)
    prompt = [3, 0]
    new = spec.generate(student, target, draft, prompt, 16, 3, generator=seeded(13))
    problems = spec.loop_problems(target, draft, prompt, new, 3)
    assert not problems, problems[0]
    assert len(target.forwards) < 16, (
        f"the target ran {len(target.forwards)} times for 16 tokens: a round should keep the drafts it accepts"
    )


@points(4)
def test_generate_never_keeps_a_draft_the_target_does_not_sample(student):
    """a draft that only proposes tokens the target never samples: every round yields one token, the target's own"""
    target, draft = spec.model_pair(
        4, spec.only([0, 1], spec.hashed_rule(6, 4)), spec.only([2, 3], spec.hashed_rule(7, 4))
    )
    new = spec.generate(student, target, draft, [0], 10, 2, generator=seeded(14))
    assert set(new) <= {0, 1}, (
        f"the target only samples tokens 0 and 1, but the result holds {sorted(set(new) - {0, 1})}: a rejected "
        "draft went into the output"
    )
    forwards = len(target.forwards)
    assert forwards in (10, 11), (
        f"every draft is rejected, so each round yields one token: 10 tokens take 10 target forwards (11 if the "
        f"target first runs the prompt alone), not {forwards}"
    )


@points(6)
def test_generate_follows_the_target(student):
    """400 continuations of 3 tokens (k = 2): each position and the whole continuation follow the target's law"""
    samples = []
    for seed in range(400):
        target, draft = spec.model_pair(3, spec.hashed_rule(8, 3, 2.0), spec.hashed_rule(9, 3, 2.0))
        samples.append(tuple(spec.generate(student, target, draft, [2], 3, 2, generator=seeded(seed))))
    spec.expect_continuations(samples, spec.continuation_law(target, [2], 3))


@points(3)
def test_generate_samples_at_the_temperature(student):
    """at temperature 0.5 the target's logits are divided by 0.5: 400 first tokens follow softmax(logits / 0.5)"""
    samples = []
    for seed in range(400):  # the target's token 5 has probability 0.51 at temperature 1, and 0.89 at 0.5
        target, draft = spec.model_pair(8, spec.peak_rule(5, 2.0, 8), spec.peak_rule(2, 1.0, 8))
        samples.append(tuple(spec.generate(student, target, draft, [0], 1, 2, temperature=0.5, generator=seeded(seed))))
    spec.expect_continuations(samples, spec.continuation_law(target, [0], 1, temperature=0.5))


@points(2)
def test_generate_randomness_comes_from_the_generator(student):
    """speculative_generate draws only from the generator: the same seed gives the same ids, another seed others"""
    runs = []
    for seed in (15, 15, 16):
        target, draft = spec.hashed_pair(4, 12, 13)
        runs.append(spec.generate(student, target, draft, [1], 12, 3, generator=seeded(seed)))
    assert runs[0] == runs[1], "two calls with identically seeded generators gave different ids"
    assert runs[0] != runs[2], "differently seeded generators gave the same ids: draw with the generator argument"


@pytest.mark.parametrize(
    "change,why",
    [
        ({"k": 0}, "k < 1"),
        ({"max_new_tokens": -1}, "max_new_tokens < 0"),
        ({"temperature": 0.0}, "temperature <= 0"),
        ({"prompt": [[1, 2], [3, 0]]}, "a batch of two prompts"),
        ({"draft_vocab": 5}, "models with different vocabularies"),
        ({"max_new_tokens": 61}, "positions + max_new_tokens + k > block_size"),
        ({"draft_block_size": 8}, "positions + max_new_tokens + k > the draft's block_size"),
    ],
    ids=[
        "k-0",
        "negative-max-new-tokens",
        "temperature-0",
        "two-prompts",
        "vocabularies-differ",
        "too-long",
        "too-long-for-the-draft",
    ],  # fmt: skip
)
@points(1)
def test_generate_refuses_bad_arguments(student, change, why):
    """speculative_generate raises ValueError for bad arguments, before running either model"""
    draft_vocab = change.get("draft_vocab", 4)
    target = spec.CachedModel(spec.hashed_rule(1, 4), 4, name="target")
    draft_block_size = change.get("draft_block_size", 64)
    draft = spec.CachedModel(spec.hashed_rule(2, draft_vocab), draft_vocab, draft_block_size, name="draft")
    arguments = dict(max_new_tokens=5, k=2, temperature=1.0)
    arguments.update({key: value for key, value in change.items() if key in arguments})
    prompt = torch.tensor(change.get("prompt", [[1, 2]]))
    with pytest.raises(ValueError):
        student.speculative_generate(target.exposed(), draft.exposed(), prompt, **arguments, generator=seeded(0))
    assert not target.forwards and not draft.forwards, f"with {why}, raise ValueError before running any model"
