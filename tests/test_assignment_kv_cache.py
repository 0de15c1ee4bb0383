"""The 04_kv_cache assignment: the solution is right and follows the kit's one next_token contract, the
grader's trusted helpers see what they claim, the solution notebook scores 100% (also when written to the
earlier one-argument next_token call) and the blank assignment 0 (slow: real grading), and the solution
notebook runs from top to bottom in a couple of minutes (slow)."""

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

SOLUTION = ROOT / "solutions" / "04_kv_cache.ipynb"
ASSIGNMENT = ROOT / "assignments" / "04_kv_cache.ipynb"
SUPPORT = ROOT / "grader" / "assignments" / "04_kv_cache" / "kv_support.py"

TOTAL_POINTS = 102  # 100 for the code, 2 for the predictions (PREDICT_... constants)


kv = helper_module(SUPPORT, SUPPORT.name)  # the same module object the grader's tests use


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
    expected, _ = kv.reference(model, ids, new)
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
    _, steps = kv.reference(model, ids, new, rule)
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
    assert "greedy" in blank  # given, not graded here
    text = ASSIGNMENT.read_text()
    assert "self.filled[layer] = n + new" not in text and "BEGIN SOLUTION" not in text


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
def test_solution_scores_full_marks(tmp_path):
    results, total = _grade(SOLUTION, tmp_path)
    assert results["score"] == total == TOTAL_POINTS, _lost_points(results)
    assert any(t["visibility"] != "visible" for t in results["tests"])  # hidden tests ran too


# the solution as written before next_token took the history: greedy(logits) and next_token(logits)
ONE_ARGUMENT_CALL = {
    "def greedy(logits, history=None):": "def greedy(logits):",
    "next_token(logits[:, -1, :], ids)": "next_token(logits[:, -1, :])",
}


@pytest.mark.slow
def test_generate_written_to_the_one_argument_call_scores_full_marks(tmp_path):
    notebook = nbformat.read(SOLUTION, as_version=4)
    for old, new in ONE_ARGUMENT_CALL.items():
        cells = [cell for cell in notebook.cells if old in cell.source]
        assert len(cells) == 1, f"the solution has no single cell with {old!r}"
        cells[0].source = cells[0].source.replace(old, new)
    path = tmp_path / "04_kv_cache-one-argument.ipynb"
    nbformat.write(notebook, path)
    results, total = _grade(path, tmp_path)
    assert results["score"] == total == TOTAL_POINTS, _lost_points(results)


@pytest.mark.slow
def test_blank_assignment_scores_zero(tmp_path):
    results, total = _grade(ASSIGNMENT, tmp_path)
    assert total == TOTAL_POINTS
    assert results["score"] == 0, [t["name"] for t in results["tests"] if t["score"] > 0]
    unanswered = [t["output"] for t in results["tests"] if "not implemented yet" not in t["output"]]
    assert len(unanswered) == 2 and all("PREDICT_" in output for output in unanswered), unanswered


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
    assert elapsed < 240, f"the notebook took {elapsed:.0f} s"
