"""The 04_kv_cache assignment: the solution is right and follows the kit's one next_token contract, the
grader's trusted helpers see what they claim (the attention checks name each known mistake, the batch checks
find wrong masks, positions and histories), the solution notebook scores 100% (and, written to the earlier
one-argument next_token call, loses only the history test) and the blank assignment 0 (slow: real grading; the
solution's and the blank's as the mutation suite graded them, tests/mutants/harness.py),
and the solution notebook runs from top to bottom in a couple of minutes (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import nbformat
import pytest
import torch

from course.generation import generate as library_generate
from course.kit import ROOT
from course.notebook import load_notebook
from grader.testing import helper_module
from mutants.harness import graded

SOLUTION = ROOT / "solutions" / "04_kv_cache.ipynb"
ASSIGNMENT = ROOT / "assignments" / "04_kv_cache.ipynb"
SUPPORT = ROOT / "grader" / "assignments" / "04_kv_cache" / "kv_support.py"
REFERENCE = SUPPORT.with_name("kv_reference.py")
VISIBLE = SUPPORT.with_name("test_visible.py")

PREDICTIONS = 5  # PREDICT_... constants, a point each
TOTAL_POINTS = 172  # 167 for the code, 5 for the predictions


kv = helper_module(SUPPORT, SUPPORT.name)  # the same module objects the grader's tests use
ref = helper_module(REFERENCE, REFERENCE.name)
visible = helper_module(VISIBLE, VISIBLE.name)  # for its fixed expectations


@pytest.fixture(scope="module")
def solution():
    loaded = load_notebook(SOLUTION)
    return loaded.namespace


# ---------------------------------------------------------------- the solution, in process


@pytest.mark.parametrize(
    "batch, prompt_len, new", [(1, 5, 6), (1, 10, 20), (3, 6, 8), (1, 1, 12), (2, 16, 4), (1, 20, 3)]
)
def test_solution_matches_the_uncached_reference(solution, batch, prompt_len, new):
    model = kv.small_model(seed=prompt_len)
    ids = kv.prompt(batch, prompt_len, seed=new)
    expected, _ = ref.reference(model, ids, new)
    for use_cache in (True, False):
        out = solution["generate"](model, ids, new, use_cache=use_cache)
        assert out.dtype == torch.int64 and out.shape == (batch, prompt_len + new)
        assert torch.equal(out, expected), f"use_cache={use_cache}"


@pytest.mark.parametrize(
    "batch, prompt_len, new, rule", [(1, 5, 6, "greedy"), (1, 10, 20, "greedy"), (2, 4, 14, "second")]
)
def test_recorder_finds_nothing_wrong_with_the_solution(solution, batch, prompt_len, new, rule):
    model = kv.small_model(seed=3)
    ids = kv.prompt(batch, prompt_len, seed=4)
    recorder, picker = kv.Recorder(model), kv.Picker(rule)
    out = solution["generate"](recorder, ids, new, next_token=picker)
    _, steps = ref.reference(model, ids, new, rule)
    assert kv.cached_run_problems(recorder, ids, new, out, picker) == []
    assert kv.logits_problems(picker, steps) == []
    within = [f for f in recorder.forwards if f.max_diff is not None]
    assert within and max(f.max_diff for f in within) <= kv.TOLERANCE
    assert recorder.forwards[0].positions == min(prompt_len, 16)


@pytest.mark.parametrize("use_cache", [True, False])
def test_solution_hands_next_token_the_ids_so_far(solution, use_cache):
    """The one next_token contract: next_token(logits, history), history = the prompt and every id generated."""
    model = kv.small_model(seed=7)
    ids = kv.prompt(2, 5, seed=7)
    picker = kv.Picker()
    out = solution["generate"](model, ids, 14, next_token=picker, use_cache=use_cache)  # past the context (16)
    assert [tuple(h.shape) for h in picker.histories] == [(2, 5 + step) for step in range(14)]
    assert all(torch.equal(history, out[:, : 5 + step]) for step, history in enumerate(picker.histories))


def presence_penalised_greedy(logits, history):
    """Greedy among the tokens not yet in the history: a presence penalty larger than any gap between logits."""
    seen = torch.zeros_like(logits).scatter_(-1, history, 1.0)
    return (logits - 1e4 * seen).argmax(dim=-1)


def test_a_history_rule_drives_the_cached_generate_as_the_library_loop(solution):
    model = kv.small_model(seed=8)
    ids = kv.prompt(2, 6, seed=8)
    expected = library_generate(model, ids, 20, presence_penalised_greedy)
    for row in range(2):
        prompt, new = set(ids[row].tolist()), expected[row, 6:].tolist()
        assert len(set(new)) == 20 and not prompt & set(new), "the penalty should keep every token from coming back"
    for use_cache in (True, False):
        out = solution["generate"](model, ids, 20, next_token=presence_penalised_greedy, use_cache=use_cache)
        assert torch.equal(out, expected), f"use_cache={use_cache}"


def test_recorder_names_the_symptoms_of_broken_loops(solution):
    """In process, without the sandbox: the checks turn a wrong loop into the feedback the students read."""
    model = kv.small_model(seed=5)
    ids = kv.prompt(1, 5, seed=5)
    KVCache = solution["KVCache"]

    def rerun_context(model, prompt_ids, n, next_token):
        ids, cache = prompt_ids, KVCache()
        for _ in range(n):
            ids = torch.cat([ids, next_token(model(ids, cache=cache)[:, -1])[:, None]], dim=1)
        return ids

    def stale_token(model, prompt_ids, n, next_token):
        cache = KVCache()
        logits = model(prompt_ids, cache=cache)
        ids = prompt_ids
        for _ in range(n):
            ids = torch.cat([ids, next_token(logits[:, -1])[:, None]], dim=1)
            logits = model(prompt_ids[:, -1:], cache=cache)
        return ids

    class CountingCache(KVCache):
        calls = 0

        def update(self, layer, k, v):
            self.calls += 1
            return super().update(layer, k, v)

        def __len__(self):
            return self.calls

    def counting(model, prompt_ids, n, next_token):
        cache, ids = CountingCache(), prompt_ids
        logits = model(ids, cache=cache)
        for _ in range(n):
            ids = torch.cat([ids, next_token(logits[:, -1])[:, None]], dim=1)
            if ids.size(1) < prompt_ids.size(1) + n:
                logits = model(ids[:, -1:], cache=cache)
        return ids

    expectations = {
        rerun_context: "after the prompt, step 1 ran the model on 6 positions",
        stale_token: "feed the token just chosen",
        counting: "len(cache) was 2, but 5 positions had gone through that cache",
    }
    for loop, symptom in expectations.items():
        recorder, picker = kv.Recorder(model), kv.Picker()
        with torch.no_grad():
            try:
                out = loop(recorder, ids, 4, picker)
            except ValueError:
                out = None
        problems = kv.cached_run_problems(recorder, ids, 4, out, picker)
        assert problems and symptom in problems[0], (loop.__name__, problems)


def test_assignment_is_blank_and_solution_is_not():
    blank = load_notebook(ASSIGNMENT).namespace
    with pytest.raises(NotImplementedError):
        blank["KVCache"]()
    with pytest.raises(NotImplementedError):
        blank["generate"](kv.small_model(), kv.prompt(1, 3), 2)
    with pytest.raises(NotImplementedError):
        blank["attend"](*kv.attention_inputs(1, 1, 2, 2, 4, seed=0))
    with pytest.raises(NotImplementedError):
        blank["left_pad"]([[1, 2], [3]])
    with pytest.raises(NotImplementedError):
        blank["generate_batch"](kv.small_model(), [[1, 2], [3]], 2)
    assert "greedy" in blank  # given, not graded here
    text = ASSIGNMENT.read_text()
    assert "self.filled[layer] = n + new" not in text and "BEGIN SOLUTION" not in text


# ---------------------------------------------------------------- attend, stopping and batches, in process


@pytest.mark.parametrize("batch, heads, new, keys, head_dim", [(1, 2, 5, 5, 4), (2, 3, 1, 7, 8), (2, 2, 3, 9, 16)])
def test_solution_attend_matches_pytorch_attention(solution, batch, heads, new, keys, head_dim):
    q, k, v = kv.attention_inputs(batch, heads, new, keys, head_dim, seed=keys)
    key_mask = torch.ones(batch, keys, dtype=torch.bool)
    key_mask[0, :2] = False  # row 0 starts with two padding keys
    causal = torch.ones(new, keys, dtype=torch.bool).tril(diagonal=keys - new)
    for mask in (None, key_mask):
        expected = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=causal if mask is None else causal & mask[:, None, None, :]
        )
        assert (solution["attend"](q, k, v, mask) - expected).abs().max() <= 1e-5
        assert ref.attend_problem(solution["attend"](q, k, v, mask), q, k, v, mask) is None


def test_the_model_runs_a_padded_batch_as_each_row_alone(solution):
    """The library's own attention (no attend given) with per-row positions and a key mask, with and without a
    cache: padding changes nothing (fp32, within kv.TOLERANCE); bad positions or masks are one sentence."""
    model = kv.small_model(seed=9)
    rows = [[5, 17, 3, 40, 8], [22, 9], [61, 0, 12]]
    ids = torch.tensor([[0] * (5 - len(row)) + row for row in rows])
    key_mask = torch.tensor([[False] * (5 - len(row)) + [True] * len(row) for row in rows])
    positions = (key_mask.long().cumsum(dim=1) - 1).clamp(min=0)
    with torch.no_grad():
        whole = model(ids, positions=positions, key_mask=key_mask)
        cache = solution["KVCache"]()
        first = model(ids[:, :3], cache=cache, positions=positions[:, :3], key_mask=key_mask[:, :3])
        rest = model(ids[:, 3:], cache=cache, positions=positions[:, 3:], key_mask=key_mask)
        for i, row in enumerate(rows):
            alone = model(torch.tensor([row]))[0]
            for logits in (whole, torch.cat([first, rest], dim=1)):
                assert (logits[i, 5 - len(row) :] - alone).abs().max() <= kv.TOLERANCE
        with pytest.raises(ValueError, match=r"positions must be a torch.int64 tensor of shape \(3, 5\)"):
            model(ids, positions=positions[:, 1:], key_mask=key_mask)
        with pytest.raises(ValueError, match=r"positions must lie in 0..15"):
            model(ids, positions=positions + 15, key_mask=key_mask)
        with pytest.raises(
            ValueError, match=r"key_mask must be a torch.bool tensor of shape \(3, 5\), not a torch.int64"
        ):
            model(ids, positions=positions, key_mask=key_mask.long())


def test_attend_problem_names_each_known_mistake():
    """Each mistake of kv_reference.MISTAKES, computed on inputs where it changes the output, is the one named."""
    q, k, v = kv.attention_inputs(2, 2, 3, 6, 8, seed=3)
    key_mask = torch.tensor([[False, True, True, True, True, True], [True] * 6])
    for mistake, knobs in ref.MISTAKES:
        wrong = ref.reference_attention(q, k, v, key_mask, **knobs(8, 3, 6))[0].float()
        problem = ref.attend_problem(wrong, q, k, v, key_mask)
        assert problem is not None and problem.endswith(mistake), (mistake, problem)
    padded = torch.tensor([[False, False, False, False, True, True], [True] * 6])  # row 0's query 0 sees no key
    nan = ref.reference_attention(q, k, v, padded)[0].float()
    nan[0, :, 0] = float("nan")
    assert "NaN for queries that see no key" in ref.attend_problem(nan, q, k, v, padded)


def test_cut_at_eos_fills_finished_rows_and_ends_with_the_last():
    ids = torch.tensor([[1, 5, 9, 5, 7], [2, 3, 4, 9, 8]])
    assert ref.cut_at_eos(ids, 1, 9).tolist() == [[1, 5, 9, 9], [2, 3, 4, 9]]
    assert ref.cut_at_eos(ids, 1, 5).tolist() == [[1, 5, 5, 5, 5], [2, 3, 4, 9, 8]]  # row 1 never emits 5: no end


@pytest.mark.parametrize("use_cache", [True, False])
def test_solution_stops_at_eos(solution, use_cache):
    model = kv.small_model(seed=21)
    ids = kv.prompt(2, 5, seed=21)
    eos_id, expected = ref.eos_for_every_row(model, ids, 12)
    assert expected.size(1) < 5 + 12 and (expected[:, -1] == eos_id).all()  # the case stops early, rows apart
    assert not torch.equal(*(expected[row, 5:] == eos_id for row in range(2)))
    out = solution["generate"](model, ids, 12, eos_id=eos_id, use_cache=use_cache)
    kv.expect_stopped(out, expected, eos_id)


@pytest.mark.parametrize("use_cache", [True, False])
def test_solution_batch_equals_one_prompt_at_a_time(solution, use_cache):
    """For greedy decoding, row i equals generate(model, tensor([prompts[i]]), ...); within and past the
    context length, with a presence penalty (the history), and with eos_id."""
    model = kv.small_model(seed=23)
    prompts = [[7, 1, 30, 22, 5], [40], [12, 9, 33], kv.prompt(1, 15, seed=2)[0].tolist()]
    first_row = solution["generate"](model, torch.tensor([prompts[0]]), 3)[0].tolist()
    stop = first_row[-1]  # the first row's third new token: with it as eos_id, that row stops early
    for new, next_token, eos_id in ((6, None, None), (10, presence_penalised_greedy, None), (10, None, stop)):
        rule = {} if next_token is None else {"next_token": next_token}
        out = solution["generate_batch"](model, prompts, new, eos_id=eos_id, use_cache=use_cache, **rule)
        for prompt, row in zip(prompts, out):
            alone = solution["generate"](model, torch.tensor([prompt]), new, eos_id=eos_id, **rule)[0].tolist()
            assert row == alone, (prompt, new, eos_id)
    assert len(out[0]) <= len(prompts[0]) + 3  # eos_id stopped the first row early


def test_batch_checks_name_wrong_masks_positions_and_histories(solution):
    """In process: the batch checks turn a wrong generate_batch into the feedback students read."""
    model = kv.small_model(seed=23)
    prompts = [[7, 1, 30, 22, 5], [40], [12, 9, 33]]
    left_pad, generate_batch = solution["left_pad"], solution["generate_batch"]

    def run(**overrides):
        """generate_batch with some of the solution's helpers replaced; (recorder, picker, rows)."""
        namespace = generate_batch.__globals__
        saved = {name: namespace[name] for name in overrides}
        namespace.update(overrides)
        try:
            recorder, picker = kv.Recorder(model), kv.Picker()
            rows = generate_batch(recorder, prompts, 4, next_token=picker)
        finally:
            namespace.update(saved)
        return recorder, picker, rows

    def padded_start(rows, pad_id=0):
        ids, key_mask, _ = left_pad(rows, pad_id)
        return ids, key_mask, torch.arange(ids.size(1)).expand_as(ids)

    recorder, _, _ = run(left_pad=padded_start)
    assert "the padding takes no position" in kv.batch_run_problems(recorder, prompts)[0]
    recorder, picker, rows = run()
    assert kv.batch_run_problems(recorder, prompts) == [] and kv.batch_history_problem(picker, prompts, rows) is None
    picker.histories[0] = torch.cat([torch.zeros(1, 2, dtype=torch.long), picker.histories[0]], dim=1)
    assert "no row's prompt and tokens so far" in kv.batch_history_problem(picker, prompts, rows)


def test_the_visible_tests_fixed_tokens_are_decoding_without_a_cache():
    """The tokens the visible tests expect are what the trusted reference, the library's loop without a cache,
    gives (the visible tests ship without it)."""
    expected, _ = ref.reference(kv.small_model(seed=9), kv.prompt(1, 12, seed=9), 8)
    assert expected[0, 12:].tolist() == visible.PAST_THE_CONTEXT
    prompts = [row[: len(row) - n] for row, n in zip(visible.BATCH_CUT, (2, 8, 4))]
    model = kv.small_model(seed=20)
    assert ref.reference_rows(model, prompts, 8, eos_id=visible.BATCH_EOS_ID) == visible.BATCH_CUT
    assert visible.BATCH_EOS_ID not in ref.reference_rows(model, prompts[1:2], 8)[0]  # one row runs to the end


def test_a_refill_from_a_short_window_is_named(solution):
    """Past the context length, a cache re-filled from fewer than block_size tokens gives the logits of a shorter
    context; the check says so at the step it happens."""
    generate = solution["generate"]
    model = kv.small_model(seed=9)
    ids = kv.prompt(1, 12, seed=9)
    recorder, picker = kv.Recorder(model), kv.Picker()
    out = generate(recorder, ids, 8, next_token=picker)
    assert kv.cached_run_problems(recorder, ids, 8, out, picker) == []

    class ShortWindow:  # the model as a loop that re-fills from the last 15 ids sees it
        config = model.config

        def __call__(self, idx, cache=None, attend=None):
            if cache is not None and len(cache) == 0 and idx.size(1) == 16:
                idx = idx[:, 1:]
            return recorder(idx, cache=cache, attend=attend)

    recorder, picker = kv.Recorder(model), kv.Picker()
    out = generate(ShortWindow(), ids, 8, next_token=picker)
    problems = kv.cached_run_problems(recorder, ids, 8, out, picker)
    assert problems and problems[0].startswith("past the context length, step 5 re-filled the cache from the last 15")


def test_stopping_names_its_premise_before_its_symptom(solution):
    """A scripted next_token gives each row its own tokens; when a run did not follow them, or its logits already
    differ from decoding without a cache, the stopping check says that instead of what it did to the stopping."""
    generate, KVCache = solution["generate"], solution["KVCache"]
    model = kv.small_model(seed=11)
    ids = kv.prompt(2, 3, seed=11)
    script = [[9, 21], [40, 21], [7, 5], [7, 40], [7, 8]]
    expected = torch.cat([ids, torch.tensor([[9, 40, 40, 40], [21, 21, 5, 40]])], dim=1)
    recorder, picker = kv.Recorder(model), kv.Picker(script=script)
    out = generate(recorder, ids, 6, next_token=picker, eos_id=40)
    assert kv.script_premise(out, ids, picker, 40) is None and kv.logits_premise(recorder) is None
    kv.expect_stopped(out, expected, 40, kv.script_premise(out, ids, picker, 40))

    greedy = generate(model, ids, 6)  # a loop that ignores next_token: its tokens are greedy's
    picker = kv.Picker(script=script)
    picker(torch.zeros(2, 64))
    assert "row 0's new token 0 is not the one next_token returned" in kv.script_premise(greedy, ids, picker, 40)
    with pytest.raises(AssertionError, match="^stopping cannot be judged yet: generate never called next_token"):
        kv.expect_stopped(greedy, expected, 40, kv.script_premise(greedy, ids, kv.Picker(script=script), 40))
    with pytest.raises(ValueError, match="this test's prompt has 2 rows"):
        kv.Picker(script=script)(torch.zeros(1, 64))

    class ForgetfulCache(KVCache):  # keeps only the newest position: the logits differ from the second step on
        def update(self, layer, k, v):
            super().update(layer, k, v)
            return k, v

    namespace = generate.__globals__
    saved, namespace["KVCache"] = namespace["KVCache"], ForgetfulCache
    model, ids = kv.small_model(seed=21), kv.prompt(2, 5, seed=21)  # the rows stop after several steps
    eos_id, stops = ref.eos_for_every_row(model, ids, 12)
    try:
        recorder = kv.Recorder(model)
        out = generate(recorder, ids, 12, eos_id=eos_id)
    finally:
        namespace["KVCache"] = saved
    premise = kv.logits_premise(recorder)
    assert premise.startswith("at step 1 the logits computed with your cache differ"), premise
    assert not torch.equal(out, stops)
    with pytest.raises(AssertionError, match="^stopping cannot be judged yet: at step 1 the logits"):
        kv.expect_stopped(out, stops, eos_id, premise)


# ---------------------------------------------------------------- real grading (slow)


def _grade(path, tmp_path):
    """`grader grade` in a fresh process (grading forks, and a fork of a process whose torch thread pool has
    run, as this one's has in the tests above, can deadlock)."""
    out = tmp_path / "results.json"
    command = [
        sys.executable,
        "-m",
        "grader.cli",
        "grade",
        str(path),
        "--assignment",
        "04_kv_cache",
        "--results",
        str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())
    total = sum(t["max_score"] for t in results["tests"])
    return results, total


def _lost_points(results) -> list[str]:
    return [f"{t['name']}: {t['output']}" for t in results["tests"] if t["score"] < t["max_score"]]


@pytest.mark.slow
def test_solution_scores_full_marks():
    results = graded("04_kv_cache")["solution"].results  # the mutation suite's grading of the solution
    total = sum(t["max_score"] for t in results["tests"])
    assert results["score"] == total == TOTAL_POINTS, _lost_points(results)
    assert any(t["visibility"] != "visible" for t in results["tests"])  # hidden tests ran too


# the solution's generate as written before next_token took the history: next_token(logits)
ONE_ARGUMENT_CALL = ("next_token(logits[:, -1, :], ids)", "next_token(logits[:, -1, :])")
HISTORY_TESTS = [
    "next_token(logits, history) gets the ids so far: the prompt and every token chosen before this one",
    "with the cache and past the context length, next_token(logits, history) gets the prompt and every token so far",
]


@pytest.mark.slow
def test_generate_written_to_the_one_argument_call_loses_only_the_history_tests(tmp_path):
    notebook = nbformat.read(SOLUTION, as_version=4)
    old, new = ONE_ARGUMENT_CALL
    cells = [cell for cell in notebook.cells if old in cell.source]
    assert len(cells) == 1, f"the solution has no single cell with {old!r}"
    cells[0].source = cells[0].source.replace(old, new)
    path = tmp_path / "04_kv_cache-one-argument.ipynb"
    nbformat.write(notebook, path)
    results, total = _grade(path, tmp_path)
    lost = [t for t in results["tests"] if t["score"] < t["max_score"]]
    assert total == TOTAL_POINTS and [t["name"] for t in lost] == HISTORY_TESTS, lost
    assert all("history" in test["output"] for test in lost)


@pytest.mark.slow
def test_blank_assignment_scores_zero():
    results = graded("04_kv_cache")["blank"].results  # the mutation suite's grading of the blank notebook
    assert sum(t["max_score"] for t in results["tests"]) == TOTAL_POINTS
    assert results["score"] == 0, [t["name"] for t in results["tests"] if t["score"] > 0]
    unanswered = [t["output"] for t in results["tests"] if "not implemented yet" not in t["output"]]
    assert len(unanswered) == PREDICTIONS and all("PREDICT_" in output for output in unanswered), unanswered


@pytest.mark.slow
def test_solution_notebook_runs_top_to_bottom(tmp_path):
    import nbclient
    import nbformat

    notebook = nbformat.read(SOLUTION, as_version=4)
    started = time.monotonic()
    nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    elapsed = time.monotonic() - started
    errors = [
        o
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors, errors[0].get("evalue")
    images = sum(1 for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
    assert images == 2, f"expected the time and the memory plots, found {images} images"
    text = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
    assert "is not implemented yet" not in text and "same tokens: True" in text
    assert "the same as one at a time: True" in text and "use_cache=False: 6225 positions" in text
    assert "use_cache=True: 149 positions" in text and "padding: 0.630 of the cached positions" in text
    assert elapsed < 240, f"the notebook took {elapsed:.0f} s"
