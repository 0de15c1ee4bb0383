"""Visible tests of 04_kv_cache: shipped with the assignment, run by `grader check("04_kv_cache")`.

Your `generate` and `generate_batch` drive the real course model, which runs in the grader: the tests
see every forward your code asks for (how many positions, with which cache, key mask and positions),
compare each forward's logits with the model's own forward without a cache, and follow what the
tests' `next_token` chose (greedy, or a fixed script) into your result. Your `attend` is checked on
fixed inputs against its expected output (within 1e-4), and inside the model by the logits.
The model is small (2 layers, 2 heads, head_dim 8, context length 16). Where a test expects fixed tokens, they
are what greedy decoding without a cache gives on that model and prompt.
The hidden tests check the same rules on other cases: longer runs past the context length, prompts that fill it,
larger batches, rows that stop at eos_id while others go on, other `next_token` functions, other shapes.
"""

import torch

from grader.testing import expect_number, expect_tensor, helper_module, points

kv = helper_module(__file__, "kv_support.py")


# ---------------------------------------------------------------- KVCache


@points(1)
def test_new_cache_is_empty(student):
    """KVCache() starts empty: len(cache) == 0"""
    cache = student.KVCache()
    n = expect_number(len(cache), 0, what="len(KVCache())")
    assert n == 0


@points(3)
def test_first_update_returns_its_keys_and_values(student):
    """the first update of a layer returns the keys and values it was given, shape (batch, heads, positions, head_dim)"""
    cache = student.KVCache()
    k, v = kv.random_kv((1, 2, 3, 4), seed=1)
    k_all, v_all = kv.checked_update(cache, 0, k, v, "the first update")
    expect_tensor(k_all, shape=(1, 2, 3, 4), what="the keys returned by the first update")
    expect_tensor(v_all, shape=(1, 2, 3, 4), what="the values returned by the first update")
    assert torch.equal(k_all, k), "the first update should return the keys it was given (nothing was cached before)"
    assert torch.equal(v_all, v), "the first update should return the values it was given as its second result" + (
        " (it returned the keys instead)" if torch.equal(v_all, k) else ""
    )


@points(5)
def test_update_appends_along_positions(student):
    """a second update appends the new positions after the cached ones (dim 2) and returns all of them"""
    cache = student.KVCache()
    k1, v1 = kv.random_kv((1, 2, 3, 4), seed=2)
    k2, v2 = kv.random_kv((1, 2, 1, 4), seed=3)
    kv.checked_update(cache, 0, k1, v1, "the first update")
    k_all, v_all = kv.checked_update(cache, 0, k2, v2, "the second update")
    expect_tensor(k_all, shape=(1, 2, 4, 4), what="the keys after 3 + 1 positions")
    expect_tensor(v_all, shape=(1, 2, 4, 4), what="the values after 3 + 1 positions")
    assert torch.equal(k_all, torch.cat([k1, k2], dim=2)), (
        "after two updates the keys should be the first update's keys followed by the second's, along dim 2 "
        "(the positions)"
    )
    assert torch.equal(v_all, torch.cat([v1, v2], dim=2)), (
        "after two updates the values should be the first update's values followed by the second's, along dim 2"
    )


@points(4)
def test_len_counts_positions(student):
    """len(cache) is the number of cached positions, not the number of update calls"""
    cache = student.KVCache()
    for layer in range(2):  # a forward of a 2-layer model over 3 positions
        kv.checked_update(cache, layer, *kv.random_kv((1, 2, 3, 4), seed=10 + layer), "update")
    n = expect_number(len(cache), what="len(cache)")
    assert n == 3, f"after one forward of 3 positions through a 2-layer model, len(cache) should be 3, got {n}"
    for layer in range(2):  # then one new position
        kv.checked_update(cache, layer, *kv.random_kv((1, 2, 1, 4), seed=20 + layer), "update")
    n = expect_number(len(cache), what="len(cache)")
    assert n == 4, f"after 3 positions and then 1 more (2 layers each), len(cache) should be 4, got {n}"


@points(5)
def test_layers_are_kept_apart(student):
    """each layer has its own keys and values: update(layer, ...) returns that layer's only"""
    cache = student.KVCache()
    ks = [kv.random_kv((1, 2, 2, 4), seed=30 + layer) for layer in range(3)]
    for layer, (k, v) in enumerate(ks):
        kv.checked_update(cache, layer, k, v, f"update of layer {layer}")
    for layer in range(3):
        k, v = kv.random_kv((1, 2, 1, 4), seed=40 + layer)
        k_all, v_all = kv.checked_update(cache, layer, k, v, f"update of layer {layer}")
        own = [torch.cat([ks[layer][0], k], dim=2), torch.cat([ks[layer][1], v], dim=2)]
        assert all(got.shape == want.shape and torch.equal(got, want) for got, want in zip((k_all, v_all), own)), (
            f"update of layer {layer} returned keys of shape {tuple(k_all.shape)} and values of shape "
            f"{tuple(v_all.shape)} that are not that layer's own 2 + 1 positions, (1, 2, 3, 4) each: keep one pair "
            "of tensors per layer"
        )


@points(6)
def test_model_with_your_cache_matches_the_full_forward(student):
    """the model fed the prompt, then one token at a time through your cache, gives the logits of a full forward"""
    model = kv.small_model(seed=1)
    ids = kv.prompt(1, 8, seed=1)
    cache = student.KVCache()
    with torch.no_grad():
        full = model(ids)
        first = model(ids[:, :5], cache=cache)
        steps = [first[:, -1]]
        for i in range(5, 8):
            steps.append(model(ids[:, i : i + 1], cache=cache)[:, -1])
    n = len(cache)
    assert n == 8, (
        f"after the model ran 5 positions and then 3 single ones through the cache, len(cache) should be 8, got {n}"
    )
    for i, got in zip(range(4, 8), steps):
        diff = (got - full[:, i]).abs().max().item()
        assert diff <= kv.TOLERANCE, (
            f"with your cache the model's logits at position {i} differ from a full forward by {diff:.3g}: "
            "update should return every cached position of its layer, oldest first"
        )


# ---------------------------------------------------------------- generate


@points(4)
def test_generate_returns_prompt_then_new_tokens(student):
    """generate returns an int64 tensor (batch, positions + max_new_tokens): the prompt, then what next_token chose"""
    recorder = kv.Recorder(kv.small_model(seed=2))
    ids = kv.prompt(1, 5, seed=2)
    picker = kv.Picker(script=[7, 3, 3, 60])  # whatever the logits say
    out = kv.check_result(kv.run_generate(student, recorder, ids, 4, picker=picker), ids, 4)
    kv.expect_cache_used(recorder)
    assert out[0, 5:].tolist() == [7, 3, 3, 60], (
        f"next_token returned 7, 3, 3 and 60, but the new tokens are {out[0, 5:].tolist()}: append what next_token "
        "returns"
    )


@points(8)
def test_generate_runs_the_prompt_then_one_position_per_step(student):
    """with the cache, the first forward runs the whole prompt and each later one exactly one new position"""
    recorder = kv.Recorder(kv.small_model(seed=3))
    ids = kv.prompt(1, 5, seed=3)
    picker = kv.Picker()
    out = kv.run_generate(student, recorder, ids, 6, picker=picker)
    problems = kv.cached_run_problems(recorder, ids, 6, out, picker)
    assert not problems, problems[0]


@points(6)
def test_generate_same_tokens_as_without_cache(student):
    """greedy decoding with your cache gives the same tokens as decoding without a cache"""
    recorder = kv.Recorder(kv.small_model(seed=4))
    ids = kv.prompt(1, 4, seed=4)
    picker = kv.Picker()
    out = kv.check_result(kv.run_generate(student, recorder, ids, 8, picker=picker), ids, 8)
    kv.expect_cache_used(recorder)
    problems = kv.cached_run_problems(recorder, ids, 8, out, picker) + kv.steps_problems(recorder, picker)
    assert not problems, problems[0]
    problem = kv.tokens_problem(out, ids, picker)
    assert problem is None, problem


@points(6)
def test_generate_same_logits_at_every_step(student):
    """at every step next_token gets the same logits (within 1e-4) as decoding without a cache"""
    recorder = kv.Recorder(kv.small_model(seed=5))
    ids = kv.prompt(1, 6, seed=5)
    picker = kv.Picker()
    out = kv.check_result(kv.run_generate(student, recorder, ids, 7, picker=picker), ids, 7)
    kv.expect_cache_used(recorder)
    assert len(picker.seen) == 7, f"next_token was called {len(picker.seen)} times for 7 new tokens: once per token"
    problems = kv.steps_problems(recorder, picker) + kv.cached_run_problems(recorder, ids, 7, out, picker)
    assert not problems, problems[0]
    problem = kv.tokens_problem(out, ids, picker)
    assert problem is None, problem


# greedy decoding of kv.prompt(1, 12, seed=9) by kv.small_model(seed=9) without a cache: the 8 new tokens
PAST_THE_CONTEXT = [33, 23, 1, 18, 26, 11, 37, 23]


@points(4)
def test_generate_keeps_going_past_the_context_length(student):
    """a prompt of 12 and 8 new tokens with a context length of 16: the cache still gives decoding's tokens"""
    recorder = kv.Recorder(kv.small_model(seed=9))
    ids = kv.prompt(1, 12, seed=9)
    picker = kv.Picker()
    out = kv.check_result(kv.run_generate(student, recorder, ids, 8, picker=picker), ids, 8)
    kv.expect_cache_used(recorder)
    problems = kv.cached_run_problems(recorder, ids, 8, out, picker) + kv.steps_problems(recorder, picker)
    assert not problems, problems[0]
    assert out[0, 12:].tolist() == PAST_THE_CONTEXT, (
        f"past the context length the new tokens should be {PAST_THE_CONTEXT}, those of decoding without a cache, "
        f"not {out[0, 12:].tolist()}: once the cache is full, the model must see the last block_size tokens"
    )


@points(2)
def test_generate_hands_next_token_the_history(student):
    """next_token(logits, history) gets the ids so far: the prompt and every token chosen before this one"""
    recorder = kv.Recorder(kv.small_model(seed=10))
    ids = kv.prompt(2, 3, seed=10)
    picker = kv.Picker()
    out = kv.check_result(kv.run_generate(student, recorder, ids, 5, picker=picker), ids, 5)
    assert len(picker.histories) == 5, (
        f"next_token got a history in {len(picker.histories)} of its 5 calls: call next_token(logits, ids_so_far)"
    )
    for step, history in enumerate(picker.histories):
        expected = out[:, : 3 + step]
        if type(history) is torch.Tensor and history.shape == expected.shape and torch.equal(history, expected):
            continue
        got = kv.describe(history)
        missing = (
            " (the newest id is missing: append each new token to the ids before the next call)"
            if type(history) is torch.Tensor and history.shape == out[:, : 2 + step].shape
            else ""
        )
        raise AssertionError(
            f"at step {step} next_token should get the 3 prompt ids and the {step} tokens chosen so far, shape "
            f"(2, {3 + step}), but it got {got}{missing}"
        )


@points(5)
def test_generate_without_cache_reruns_the_context(student):
    """use_cache=False runs the model without a cache on the whole context at every step"""
    recorder = kv.Recorder(kv.small_model(seed=6))
    ids = kv.prompt(1, 5, seed=6)
    picker = kv.Picker()
    out = kv.check_result(kv.run_generate(student, recorder, ids, 5, picker=picker, use_cache=False), ids, 5)
    forwards = recorder.forwards
    assert len(forwards) == 5, (
        f"without the cache generate should run the model once per new token (5), not {len(forwards)} times"
    )
    problems = kv.uncached_run_problems(recorder, ids, picker)
    assert not problems, problems[0]
    problem = kv.tokens_problem(out, ids, picker)
    assert problem is None, problem


# ---------------------------------------------------------------- attend, stopping, batches


# attend's outputs on kv.attention_inputs(..., seed=50) and (..., seed=51), rounded to 5 decimals
NOTHING_CACHED = [
    [[-0.49358, -1.61204, 0.00924, -1.23536], [-0.5206, -0.50852, -0.28391, -0.26336],
     [-0.45896, 0.37048, -0.96427, -0.30096], [0.0661, -0.1911, -0.24614, -0.79133],
     [-0.1779, 0.27481, -0.39526, -0.10099]],
    [[0.04641, -0.55363, 0.27952, -0.39922], [-0.54266, -0.24892, 0.21867, 0.29005],
     [0.42499, -0.48188, -0.73724, -0.10875], [0.16492, -0.41825, -0.79711, 0.00294],
     [-0.25895, -0.59897, -0.74281, 0.26385]],
]  # fmt: skip
ONE_NEW_QUERY = [[[0.23945, 0.12933, 0.3392, 0.40072]], [[-0.00553, 0.25929, -0.63362, -0.25791]]]


@points(3)
def test_attend_without_a_cache(student):
    """attend with T = S (nothing cached): softmax(q k^T / sqrt(head_dim)) v under the causal mask"""
    q, k, v = kv.attention_inputs(1, 2, 5, 5, 4, seed=50)
    kv.expect_attention(student.attend(q, k, v), torch.tensor([NOTHING_CACHED]), q, k)


@points(3)
def test_attend_one_new_query(student):
    """attend with one new query after 6 cached keys: it sees all 7 keys"""
    q, k, v = kv.attention_inputs(1, 2, 1, 7, 4, seed=51)
    kv.expect_attention(student.attend(q, k, v), torch.tensor([ONE_NEW_QUERY]), q, k)


@points(4)
def test_generate_stops_at_eos(student):
    """generate(..., eos_id=...): once the row emits eos_id, generation ends (the result is then shorter)"""
    recorder = kv.Recorder(kv.small_model(seed=4))
    ids = kv.prompt(1, 4, seed=4)
    picker = kv.Picker(script=[9, 21, 9, 40, 5])  # 40, the eos_id, is the fourth new token
    out = kv.run_generate(student, recorder, ids, 10, picker=picker, eos_id=40)
    premise = kv.script_premise(out, ids, picker, 40)
    kv.expect_stopped(out, torch.cat([ids, torch.tensor([[9, 21, 9, 40]])], dim=1), 40, premise)
    kv.expect_cache_used(recorder)


@points(2)
def test_generate_finished_row_repeats_eos(student):
    """of 2 rows, the one that emits eos_id first repeats eos_id until the other has emitted it too"""
    recorder = kv.Recorder(kv.small_model(seed=11))
    ids = kv.prompt(2, 3, seed=11)
    # row 0 emits the eos_id 40 as its second new token, row 1 as its fourth; next_token's later tokens for a
    # finished row (here 7) must never appear
    picker = kv.Picker(script=[[9, 21], [40, 21], [7, 5], [7, 40], [7, 8]])
    out = kv.run_generate(student, recorder, ids, 6, picker=picker, eos_id=40)
    expected = torch.cat([ids, torch.tensor([[9, 40, 40, 40], [21, 21, 5, 40]])], dim=1)
    kv.expect_stopped(out, expected, 40, kv.script_premise(out, ids, picker, 40))


# greedy decoding by kv.small_model(seed=20) of each prompt alone, without a cache, cut after its first eos_id 23
# (prompt 1 never emits it: it gets all 8 new tokens)
BATCH_EOS_ID = 23
BATCH_CUT = [[3, 14, 15, 9, 7, 23], [2, 6, 39, 63, 0, 4, 0, 29, 46, 51], [5, 3, 5, 8, 9, 7, 9, 36, 13, 17, 23]]


@points(6)
def test_generate_batch_matches_one_prompt_at_a_time(student):
    """generate_batch on prompts of 4, 2 and 7 ids: each row is what generate gives for its prompt alone"""
    model = kv.small_model(seed=20)
    prompts = [[3, 14, 15, 9], [2, 6], [5, 3, 5, 8, 9, 7, 9]]
    recorder, picker = kv.Recorder(model), kv.Picker()
    out = kv.check_rows(kv.run_generate_batch(student, recorder, prompts, 6, picker=picker), prompts, 6)
    problems = kv.batch_run_problems(recorder, prompts)
    assert not problems, problems[0]
    short = [i for i, (row, p) in enumerate(zip(out, prompts)) if len(row) != len(p) + 6]
    assert not short, f"row {short[0]} does not have 6 new tokens (no eos_id was given: every row gets them all)"
    problem = kv.batch_history_problem(picker, prompts, out) or kv.batch_steps_problem(model, picker, out)
    assert problem is None, problem


@points(2)
def test_generate_batch_cuts_each_row_after_its_eos(student):
    """generate_batch with eos_id: each row ends just after its own first eos_id, whatever the other rows do"""
    model = kv.small_model(seed=20)
    prompts = [[3, 14, 15, 9], [2, 6], [5, 3, 5, 8, 9, 7, 9]]
    recorder = kv.Recorder(model)
    out = kv.check_rows(kv.run_generate_batch(student, recorder, prompts, 8, eos_id=BATCH_EOS_ID), prompts, 8)
    problems = kv.batch_run_problems(recorder, prompts)
    assert not problems, problems[0]
    for i, (row, expected) in enumerate(zip(out, BATCH_CUT)):
        if row == expected:
            continue
        if row[: len(expected)] == expected:
            raise AssertionError(
                f"row {i} emitted eos_id {BATCH_EOS_ID} after {len(expected) - len(prompts[i])} new tokens, but goes "
                f"on for {len(row) - len(expected)} more: cut each row just after its first eos_id, even while other "
                "rows are still generating"
            )
        raise AssertionError(
            f"row {i} should be {expected} (greedy decoding of its prompt alone, cut after its first eos_id "
            f"{BATCH_EOS_ID}), not {row}"
        )
