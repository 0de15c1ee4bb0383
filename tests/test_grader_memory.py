"""What a test keeps of a notebook's calls is bounded by what the test needs, and released when the test ends.

- 04's trusted next_token (`Picker`) keeps, per call, logits no larger than the model's output for the test's rows
  and a history no longer than their ids, for at most the calls the test allows; of a history that is not a tensor,
  only its type. 04's cache spy refuses keys and values of more positions than the model's context holds, before
  the attention runs on them. 05's models run at most MAX_POSITIONS positions a test, each remembered once.
- The grader keeps an exposed model only while the test holds it (tests/test_grader_wire.py shows the release), so
  what one test's model recorded is gone before the next test starts, however long the worker keeps the handle.
- Through the real grader (slow): a hostile 04 notebook that makes the trusted side keep all it can (next_token
  called as often as allowed with the widest logits and histories accepted, caches that return thousands of
  positions, an attend and a generate that return tens of megabytes) raises the grading process's peak memory by
  less than HEADROOM over the solution's.
"""

from __future__ import annotations

import threading
import time

import nbformat
import pytest
import torch

from course.assignments import grading
from grader.runner import find_assignment, grade
from grader.sandbox import Zygote
from grader.testing import hashed_model, helper_module

WITH_CACHE = grading(["KVCache"])
kv = helper_module(WITH_CACHE.folder / "kv_support.py", "kv_support.py")

HEADROOM = 300 * 2**20  # bytes a hostile notebook may add to the grading process's peak (measured: 246 MB)


# ---------------------------------------------------------------- in process


def test_the_picker_refuses_logits_and_histories_larger_than_the_test_needs():
    picker = kv.Picker()
    picker.expect(calls=4, logits=2 * 64, history=2 * 10)
    picker(torch.zeros(2, 64), torch.zeros(2, 10, dtype=torch.long))
    with pytest.raises(ValueError, match=r"given logits of shape \(2, 65\), far more than this test's rows need"):
        picker(torch.zeros(2, 65), None)
    with pytest.raises(ValueError):
        picker(torch.zeros(2, 64), torch.zeros(2, 11, dtype=torch.long))
    assert len(picker.seen) == len(picker.histories) == 1
    assert picker.problem.startswith("next_token was given logits of shape (2, 65)")  # the first refusal


def test_the_picker_keeps_at_most_the_calls_and_elements_a_test_allows():
    picker = kv.Picker()
    picker.expect(calls=5, logits=3 * 16 * 64, history=3 * 20)
    for _ in range(100):  # a loop that catches the refusal and calls again keeps nothing more
        try:
            picker(torch.zeros(1, 3 * 16 * 64, dtype=torch.float64), torch.zeros(3, 20, dtype=torch.long))
        except ValueError:
            pass
    assert len(picker.seen) == len(picker.histories) == 5
    assert sum(t.numel() for t in picker.seen + picker.histories) == 5 * (3 * 16 * 64 + 3 * 20)


def test_the_picker_keeps_only_the_type_of_a_history_that_is_not_a_tensor():
    picker = kv.Picker()
    picker(torch.zeros(1, 4), [[0] * 100_000])
    assert picker.histories == [kv.NotIds("list")]
    assert kv.batch_history_problem(picker, [[1]], [[1, 0]]) == (
        "next_token was given a history that is a list, not ids of shape (1, length)"
    )


class LongCache:
    """A cache whose update returns a thousand positions, whatever it was given."""

    def __len__(self):
        return 0

    def update(self, layer, k, v):
        return torch.zeros(k.size(0), k.size(1), 1000, k.size(3)), torch.zeros(k.size(0), k.size(1), 1000, k.size(3))


def test_the_cache_spy_refuses_more_positions_than_the_context_before_the_attention_runs():
    recorder = kv.Recorder(kv.small_model())
    with pytest.raises(ValueError, match="returned keys of 1000 positions, more than the model's context length 16"):
        recorder(kv.prompt(1, 4), cache=LongCache())
    assert recorder.forwards[0].error.startswith("KVCache.update(0, k, v) returned keys of 1000 positions")


def test_a_prefix_model_runs_at_most_its_positions_a_test():
    model = hashed_model(vocab_size=4, seed=0)
    budget = model.limits.positions
    model(torch.randint(0, 4, (budget // 32, 32)))  # every position a new prefix: the budget, spent at once
    with pytest.raises(ValueError, match=f"run on more than {budget} positions in one test"):
        model(torch.zeros(1, 1, dtype=torch.long))
    assert len(model._memo) <= budget


# ---------------------------------------------------------------- through the grader (slow)

HOSTILE_04 = '''
import torch

CALLS = 3000  # more next_token calls than any test allows


def greedy(logits, history=None):
    return logits.argmax(dim=-1)


class KVCache:
    def update(self, layer, k, v):
        many = torch.zeros(k.size(0), k.size(1), 1 << 12, k.size(3))
        return many, many

    def __len__(self):
        return 0


def attend(q, k, v, key_mask=None):
    return torch.zeros(q.size(0), q.size(1), 1 << 16, q.size(3))


def _widest(next_token, width):
    """The widest logits and history next_token accepts, halving from `width`."""
    while width > 1:
        try:
            next_token(torch.randn(1, width, dtype=torch.float64), torch.zeros(1, width, dtype=torch.long))
            return width
        except ValueError:
            width //= 2
    return width


def _flood(model, prompt_ids, next_token):
    width = _widest(next_token, 1 << 16)
    logits, history = torch.randn(1, width, dtype=torch.float64), torch.zeros(1, width, dtype=torch.long)
    for _ in range(CALLS):
        try:
            next_token(logits, history)
        except Exception:
            break
    for _ in range(20):
        try:
            model(prompt_ids[:, -16:], cache=KVCache())
        except Exception:
            pass
    return torch.zeros(1 << 22)  # 16 MB


def generate(model, prompt_ids, max_new_tokens, next_token=greedy, use_cache=True, eos_id=None):
    return _flood(model, prompt_ids, next_token)


def generate_batch(model, prompts, max_new_tokens, next_token=greedy, eos_id=None, use_cache=True):
    return _flood(model, torch.tensor([prompts[0]]), next_token)
'''


class PeakMemory(Zygote):
    """A zygote that watches each grading process it forks: `peak` is the largest VmHWM (the process's peak
    resident memory, which only grows) read from /proc every 5 ms until the process ends."""

    peak = 0

    def start_grading(self, channel_fd):
        grading = super().start_grading(channel_fd)
        watching = threading.Thread(target=self._watch, args=(grading.pid,), daemon=True)
        watching.start()
        self.watchers.append(watching)
        return grading

    def _watch(self, pid: int) -> None:
        while (peak := _peak_resident_bytes(pid)) is not None:
            self.peak = max(self.peak, peak)
            time.sleep(0.005)

    def peak_of(self, source, assignment: str) -> tuple[int, dict]:
        self.peak, self.watchers = 0, []
        results = grade(source, find_assignment(assignment), zygote=self)
        for watching in self.watchers:
            watching.join(timeout=10)
        return self.peak, results


def _peak_resident_bytes(pid: int) -> int | None:
    """VmHWM of process `pid`, or None once it has ended (a zombie's status has no memory lines)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@pytest.mark.slow
def test_a_hostile_notebook_raises_the_grading_process_peak_by_less_than_the_headroom(tmp_path):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(HOSTILE_04)]
    hostile = tmp_path / f"{WITH_CACHE.name}.ipynb"
    nbformat.write(notebook, hostile)
    with PeakMemory() as zygote:
        baseline, solved = zygote.peak_of(WITH_CACHE.solution, WITH_CACHE.name)
        peak, attacked = zygote.peak_of(hostile, WITH_CACHE.name)
    assert solved["score"] == solved["max_score"] and baseline > 100 * 2**20  # torch is loaded: the reading is real
    assert peak - baseline < HEADROOM, (
        f"the grading process peaked at {peak / 2**20:.0f} MB, {(peak - baseline) / 2**20:.0f} MB above the "
        f"solution's {baseline / 2**20:.0f} MB"
    )
    refused = [t["output"] for t in attacked["tests"] if "far more than this test's rows need" in t["output"]]
    assert refused, "the hostile notebook never reached the picker's bound: it no longer tests it"
