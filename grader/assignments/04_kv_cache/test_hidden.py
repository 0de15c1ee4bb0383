"""Hidden tests of 04_kv_cache (not shipped to students).

The same rules as the visible tests (docs/assignments.md, 04_kv_cache) on other cases: other shapes and several appends,
past the context length, batches, a next_token that is not greedy, one-token prompts, prompts that
fill the whole context. A failed hidden test shows the student its docstring and assertion message,
which name the symptom (a step, a number of positions, a difference) without the test's inputs.
"""

import torch

from grader.answers import expect_prediction
from grader.testing import expect_number, expect_tensor, helper_module, points

kv = helper_module(__file__, "kv_support.py")
ref = helper_module(__file__, "kv_reference.py")


# ---------------------------------------------------------------- KVCache


@points(5)
def test_several_appends_batch_and_heads(student):
    """batch 3, 4 heads: appends of 4, 1, 1 and 2 positions return every position so far, in order, keys and values apart"""
    cache = student.KVCache()
    kept_k, kept_v = [], []
    for step, new in enumerate((4, 1, 1, 2)):
        k, v = kv.random_kv((3, 4, new, 8), seed=100 + step)
        kept_k.append(k)
        kept_v.append(v)
        k_all, v_all = kv.checked_update(cache, 0, k, v)
        total = sum(t.size(2) for t in kept_k)
        expect_tensor(k_all, shape=(3, 4, total, 8), what=f"the keys after {step + 1} updates")
        expect_tensor(v_all, shape=(3, 4, total, 8), what=f"the values after {step + 1} updates")
        assert torch.equal(k_all, torch.cat(kept_k, dim=2)), (
            f"after update {step + 1} the keys are not every position so far in order along dim 2"
        )
        if torch.equal(v_all, torch.cat(kept_k, dim=2)):
            raise AssertionError("update returned the keys as the values: return (k_all, v_all)")
        assert torch.equal(v_all, torch.cat(kept_v, dim=2)), (
            f"after update {step + 1} the values are not every position so far in order along dim 2"
        )
        n = expect_number(len(cache), what="len(cache)")
        assert n == total, f"after {step + 1} updates of one layer holding {total} positions, len(cache) is {n}"


@points(4)
def test_len_with_many_layers(student):
    """len(cache) counts positions whatever the number of layers (6 layers, prompt of 5, then 2 steps)"""
    cache = student.KVCache()
    for step, new in enumerate((5, 1, 1)):
        for layer in range(6):
            kv.checked_update(cache, layer, *kv.random_kv((1, 2, new, 4), seed=120 + 10 * step + layer))
        n = expect_number(len(cache), what="len(cache)")
        total = 5 + step
        assert n == total, f"after {total} positions through a 6-layer model, len(cache) should be {total}, got {n}"


@points(5)
def test_cache_drives_a_deeper_model(student):
    """a 4-layer, 4-head model with your cache: every step's logits equal a full forward's (batch 2)"""
    model = kv.small_model(seed=11, n_layer=4, n_head=4, n_embd=32, block_size=32)
    ids = kv.prompt(2, 12, seed=11)
    cache = student.KVCache()
    with torch.no_grad():
        full = model(ids)
        got = [model(ids[:, :6], cache=cache)]
        got.append(model(ids[:, 6:9], cache=cache))  # several new positions after cached ones
        for i in range(9, 12):
            got.append(model(ids[:, i : i + 1], cache=cache))
    diff = (torch.cat(got, dim=1) - full).abs().max().item()
    assert diff <= kv.TOLERANCE, f"with your cache the logits differ from a full forward by {diff:.3g}"
    n = len(cache)
    assert n == 12, f"after 12 positions len(cache) should be 12, got {n}"


# ---------------------------------------------------------------- generate


@points(8)
def test_generate_past_the_context_length(student):
    """prompt 10 + 20 new tokens with a context length of 16: the same tokens and logits as without a cache"""
    model = kv.small_model(seed=12)
    recorder = ref.recorder(model)
    ids = kv.prompt(1, 10, seed=12)
    picker = kv.Picker()
    out = kv.check_result(kv.run_generate(student, recorder, ids, 20, picker=picker), ids, 20)
    _, steps = ref.reference(model, ids, 20)
    problems = kv.cached_run_problems(recorder, ids, 20, out, picker) + kv.logits_problems(picker, steps)
    assert not problems, problems[0]
    expected, _ = ref.reference(model, ids, 20)
    where = kv.first_token_difference(out, expected)
    assert where is None, f"past the context length the tokens differ from decoding without a cache, first at {where}"


@points(4)
def test_generate_prompt_fills_the_context(student):
    """a prompt as long as the context (16), and one longer (20): the same tokens as without a cache"""
    model = kv.small_model(seed=13)
    for length in (16, 20):
        recorder = ref.recorder(model)
        ids = kv.prompt(1, length, seed=13 + length)
        out = kv.check_result(kv.run_generate(student, recorder, ids, 4), ids, 4)
        kv.expect_cache_used(recorder)
        expected, _ = ref.reference(model, ids, 4)
        where = kv.first_token_difference(out, expected)
        assert where is None, (
            f"with a prompt of {length} tokens (context length 16) the tokens differ from decoding without a cache, "
            f"first at {where}"
        )


@points(6)
def test_generate_batch(student):
    """a batch of 3 prompts: each row's tokens and every step's logits as without a cache"""
    model = kv.small_model(seed=14)
    recorder = ref.recorder(model)
    ids = kv.prompt(3, 6, seed=14)
    picker = kv.Picker()
    out = kv.check_result(kv.run_generate(student, recorder, ids, 8, picker=picker), ids, 8)
    expected, steps = ref.reference(model, ids, 8)
    problems = kv.cached_run_problems(recorder, ids, 8, out, picker) + kv.logits_problems(picker, steps)
    assert not problems, problems[0]
    for row in range(3):
        assert torch.equal(out[row], expected[row]), f"row {row} of the batch differs from decoding it without a cache"


@points(5)
def test_generate_uses_next_token(student):
    """generate appends what next_token returns (a next_token that picks the second most likely token)"""
    model = kv.small_model(seed=15)
    recorder = ref.recorder(model)
    ids = kv.prompt(2, 5, seed=15)
    picker = kv.Picker("second")
    out = kv.check_result(kv.run_generate(student, recorder, ids, 6, picker=picker), ids, 6)
    kv.expect_cache_used(recorder)
    expected, steps = ref.reference(model, ids, 6, rule="second")
    assert len(picker.seen) > 0, (
        "generate never called next_token: pick each token with next_token(logits, ids), the last position's logits "
        "and the ids so far"
    )
    problems = kv.logits_problems(picker, steps)
    assert not problems, problems[0]
    assert torch.equal(out, expected), "the new tokens are not the ones next_token returned"


@points(5)
def test_generate_one_token_prompt(student):
    """a prompt of one token, 12 new: one position per forward, and the logits of every step right"""
    model = kv.small_model(seed=16)
    recorder = ref.recorder(model)
    ids = kv.prompt(1, 1, seed=16)
    picker = kv.Picker()
    out = kv.check_result(kv.run_generate(student, recorder, ids, 12, picker=picker), ids, 12)
    _, steps = ref.reference(model, ids, 12)
    problems = kv.cached_run_problems(recorder, ids, 12, out, picker) + kv.logits_problems(picker, steps)
    assert not problems, problems[0]


@points(4)
def test_generate_without_cache_past_the_context(student):
    """use_cache=False past the context length: each step runs the last 16 tokens, and the tokens are right"""
    model = kv.small_model(seed=17)
    recorder = ref.recorder(model)
    ids = kv.prompt(1, 12, seed=17)
    out = kv.check_result(kv.run_generate(student, recorder, ids, 8, use_cache=False), ids, 8)
    expected, _ = ref.reference(model, ids, 8)
    for step, f in enumerate(recorder.forwards):
        assert not f.with_cache, f"with use_cache=False, step {step} passed a cache to the model"
        want = min(12 + step, 16)
        assert f.positions == want, (
            f"without the cache, step {step} ran {f.positions} positions; it should run the whole context cropped "
            f"to the context length ({want})"
        )
    assert torch.equal(out, expected), "without the cache the tokens differ from greedy decoding of the context"


@points(1)
def test_generate_zero_new_tokens(student):
    """max_new_tokens=0 returns the prompt unchanged"""
    recorder = ref.recorder(kv.small_model(seed=18))
    ids = kv.prompt(2, 4, seed=18)
    out = kv.check_result(kv.run_generate(student, recorder, ids, 0), ids, 0)
    assert torch.equal(out, ids)


# ---------------------------------------------------------------- predictions (constants written before running)


@points(1)
def test_predicted_speedup_trend(student):
    """PREDICT_SPEEDUP: how the cache's speed-up changes as the context grows"""
    expect_prediction(student.PREDICT_SPEEDUP, "grow", "PREDICT_SPEEDUP")


@points(1)
def test_predicted_cache_size(student):
    """PREDICT_CACHE_MB: the bfloat16 KV cache of the course model, batch 8, 1024 positions, in megabytes (within 2%)"""
    exact = 2 * 9 * 8 * 64 * 1024 * 8 * 2 / 1e6
    expect_prediction(student.PREDICT_CACHE_MB, exact, "PREDICT_CACHE_MB", tolerance=0.02 * exact)
