"""Hidden tests of 04_kv_cache's attention step, stopping, batches and histories (not shipped to students).

The same rules as the visible tests (docs/assignments.md, 04_kv_cache) on other cases: several new queries after cached keys, a key mask
with padding (and queries that see no key at all), float64, a batch whose rows stop at different steps, prompts of
different lengths with and without the cache and past the context length, and the history each next_token call gets.
"""

import torch

from grader.answers import expect_prediction
from grader.testing import helper_module, points

kv = helper_module(__file__, "kv_support.py")
ref = helper_module(__file__, "kv_reference.py")

PROMPTS = [[7, 1, 30, 22, 5], [40], [12, 9, 33], [2, 8, 61, 4, 4, 19, 50, 3]]


# ---------------------------------------------------------------- attend


@points(5)
def test_attend_new_queries_after_cached_keys(student):
    """attend with 3 new queries after 4 cached keys (batch 2, 3 heads): query i sees keys 0 .. 4 + i"""
    ref.check_attend(student, *kv.attention_inputs(2, 3, 3, 7, 8, seed=60))


@points(5)
def test_attend_with_a_key_mask(student):
    """attend with key_mask False at a row's left padding: no query sees padding; a query that sees no key is finite"""
    q, k, v = kv.attention_inputs(2, 2, 4, 6, 8, seed=61)
    key_mask = torch.tensor([[False, False, False, True, True, True], [False, True, True, True, True, True]])
    ref.check_attend(student, q, k, v, key_mask)


@points(2)
def test_attend_float64(student):
    """attend on float64 inputs with head_dim 16 returns float64 (2 new queries after 3 cached keys)"""
    ref.check_attend(student, *kv.attention_inputs(1, 2, 2, 5, 16, seed=62, dtype=torch.float64))


# ---------------------------------------------------------------- generate: stopping and the history


@points(5)
def test_generate_rows_stop_at_eos(student):
    """2 rows stopping at eos_id at different steps, with and without the cache; an eos_id never emitted stops nothing"""
    model = kv.small_model(seed=21)
    ids = kv.prompt(2, 5, seed=21)
    eos_id, expected = ref.eos_for_every_row(model, ids, 12)
    for use_cache in (True, False):
        recorder = ref.recorder(model)
        out = kv.run_generate(student, recorder, ids, 12, eos_id=eos_id, use_cache=use_cache)
        kv.expect_stopped(out, expected, eos_id, kv.logits_premise(recorder))
        if use_cache:
            kv.expect_cache_used(recorder)
    full, _ = ref.reference(model, ids, 12)
    never = min(set(range(model.config.vocab_size)) - set(full[:, 5:].flatten().tolist()))
    recorder = ref.recorder(model)
    out = kv.run_generate(student, recorder, ids, 12, eos_id=never)
    kv.expect_stopped(out, full, never, kv.logits_premise(recorder))


@points(4)
def test_generate_gives_next_token_the_ids_so_far(student):
    """with the cache and past the context length, next_token(logits, history) gets the prompt and every token so far"""
    model = kv.small_model(seed=22)
    ids = kv.prompt(2, 5, seed=22)
    recorder, picker = ref.recorder(model), kv.Picker()
    out = kv.check_result(kv.run_generate(student, recorder, ids, 14, picker=picker), ids, 14)
    kv.expect_cache_used(recorder)
    assert len(picker.histories) == 14, (
        f"next_token got a history in {len(picker.histories)} of 14 calls: call next_token(logits, ids_so_far), the "
        "history penalties need"
    )
    for step, history in enumerate(picker.histories):
        assert type(history) is torch.Tensor and torch.equal(history, out[:, : 5 + step]), (
            f"at step {step} the history given to next_token is not the prompt and the {step} tokens chosen so far "
            f"(shape (2, {5 + step}))"
        )


# ---------------------------------------------------------------- generate_batch


@points(6)
def test_generate_batch_runs_the_prompts_then_one_position(student):
    """prompts of 5, 1, 3 and 8 ids: one padded forward, then one position per step, each row's logits as alone"""
    model = kv.small_model(seed=23)
    recorder = ref.recorder(model)
    out = kv.check_rows(kv.run_generate_batch(student, recorder, PROMPTS, 6), PROMPTS, 6)
    problems = kv.batch_run_problems(recorder, PROMPTS)
    assert not problems, problems[0]
    first = recorder.forwards[0]
    assert first.positions == 8 and first.cached == 0, (
        f"the first forward ran {first.positions} positions with {first.cached} cached; it should run the padded "
        "prompts (as long as the longest, 8) into an empty cache"
    )
    problem = kv.rows_problem(out, ref.reference_rows(model, PROMPTS, 6))
    assert problem is None, problem


@points(4)
def test_generate_batch_stops_at_eos(student):
    """each row is cut after its first eos_id, and generation ends once every row has finished"""
    model = kv.small_model(seed=24)
    alone = ref.reference_rows(model, PROMPTS, 10)
    eos_id = alone[0][len(PROMPTS[0]) + 2]  # the first row's third new token
    recorder = ref.recorder(model)
    out = kv.check_rows(kv.run_generate_batch(student, recorder, PROMPTS, 10, eos_id=eos_id), PROMPTS, 10)
    problem = kv.rows_problem(out, ref.reference_rows(model, PROMPTS, 10, eos_id=eos_id))
    assert problem is None, problem


@points(3)
def test_generate_batch_without_cache(student):
    """use_cache=False: every step runs the padded context with its key mask, no cache, and the rows are right"""
    model = kv.small_model(seed=25)
    recorder = ref.recorder(model)
    out = kv.check_rows(kv.run_generate_batch(student, recorder, PROMPTS, 5, use_cache=False), PROMPTS, 5)
    problems = kv.batch_run_problems(recorder, PROMPTS, use_cache=False)
    assert not problems, problems[0]
    problem = kv.rows_problem(out, ref.reference_rows(model, PROMPTS, 5))
    assert problem is None, problem


@points(3)
def test_generate_batch_past_the_context_length(student):
    """prompts of 14, 3 and 16 ids with 8 new tokens and a context length of 16: each row as generate gives alone"""
    model = kv.small_model(seed=26)
    prompts = [kv.prompt(1, n, seed=n)[0].tolist() for n in (14, 3, 16)]
    recorder = ref.recorder(model)
    out = kv.check_rows(kv.run_generate_batch(student, recorder, prompts, 8), prompts, 8)
    problem = kv.rows_problem(out, ref.reference_rows(model, prompts, 8))
    assert problem is None, problem


@points(4)
def test_generate_batch_gives_each_row_its_history(student):
    """every next_token call gets one row's logits and that row's history: its prompt and its tokens, no padding"""
    model = kv.small_model(seed=27)
    picker = kv.Picker()
    out = kv.check_rows(kv.run_generate_batch(student, ref.recorder(model), PROMPTS, 4, picker=picker), PROMPTS, 4)
    problem = kv.batch_history_problem(picker, PROMPTS, out)
    assert problem is None, problem


# ---------------------------------------------------------------- predictions (constants written before running)


@points(1)
def test_predicted_positions_without_cache(student):
    """PREDICT_POSITIONS_WITHOUT_CACHE: positions run for 50 new tokens after a prompt of 100, without the cache"""
    expect_prediction(
        student.PREDICT_POSITIONS_WITHOUT_CACHE, 50 * 100 + 49 * 50 // 2, "PREDICT_POSITIONS_WITHOUT_CACHE"
    )


@points(1)
def test_predicted_positions_with_cache(student):
    """PREDICT_POSITIONS_WITH_CACHE: positions run for 50 new tokens after a prompt of 100, with the cache"""
    expect_prediction(student.PREDICT_POSITIONS_WITH_CACHE, 100 + 49, "PREDICT_POSITIONS_WITH_CACHE")


@points(1)
def test_predicted_padding_fraction(student):
    """PREDICT_PADDING_FRACTION: the padding's share of the cache for prompts of 10, 100 and 1000 ids (within 0.01)"""
    lengths = (10, 100, 1000)
    exact = 1 - sum(lengths) / (len(lengths) * max(lengths))
    expect_prediction(student.PREDICT_PADDING_FRACTION, exact, "PREDICT_PADDING_FRACTION", tolerance=0.01)
