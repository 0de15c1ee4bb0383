"""Student text is neutralised where it lands, and the work a student's input makes the grader do is bounded.

- Terminal report, results.json and the batch's tables: a student's exception message, printed output and
  notebook name are shown with every control, format (bidi) and separator character and every lone surrogate
  escaped, and continuation lines indented, so nothing a student writes can clear the screen, rewrite a line,
  print a line that looks like the report's or stop a file from being written (tests/test_grader_batch.py
  runs a whole batch of such notebooks and names).
- 04's exposed model: the recorder refuses ids it must not run (a batch of 100,000, more positions than the
  context, ids outside the vocabulary) and a loop that calls it without end, with a sentence, before the model
  runs (the tests of the wire's own bounds are in tests/test_grader_wire.py).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import unicodedata
from pathlib import Path

import nbformat
import pytest
import torch

from course.assignments import grading
from grader import cli
from grader import results as results_file
from grader.runner import find_assignment, grade
from grader.testing import helper_module

sys.path.insert(0, str(Path(__file__).parent / "grader_fixtures"))
from submissions import ASSIGNMENTS, needing, notebook  # noqa: E402

WITH_CACHE = grading(["KVCache"])
KV_SUPPORT = WITH_CACHE.folder / "kv_support.py"
kv = helper_module(KV_SUPPORT, KV_SUPPORT.name)

TERMINAL_ATTACK = "\x1b[2J\x1b[H\rScore: 53/53\x08\x9b\u202e\u2028\x00"  # clear, home, CR, BS, CSI, RLO, LS, NUL
ESCAPED_ATTACK = "\\x1b[2J\\x1b[H\\rScore: 53/53\\x08\\x9b\\u202e\\u2028\\x00"


def unseen(text: str) -> list[str]:
    """The characters of `text` that a terminal or a browser would act on instead of showing."""
    return [c for c in text if c not in "\n\t" and unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]


# ---------------------------------------------------------------- printable text, in process


@pytest.mark.parametrize(
    "text, shown",
    [
        (TERMINAL_ATTACK, ESCAPED_ATTACK),
        ("line one\n\tline two", "line one\n\tline two"),  # newline and tab are layout, kept
        ("héllo, 日本語, naïve → ok", "héllo, 日本語, naïve → ok"),  # printable Unicode is kept
        ("\x7f\x85\u200b\u2066\ufeff", "\\x7f\\x85\\u200b\\u2066\\ufeff"),  # DEL, NEL, zero width, isolate, BOM
        ("raise ValueError('\ud800')", "raise ValueError('\\ud800')"),  # a lone surrogate: no UTF-8 file can hold it
        (os.fsdecode(b"caf\xe9_9"), "caf\\udce9_9"),  # a Latin-1 folder name, as Python decodes it
    ],
    ids=["terminal-attack", "layout", "unicode-text", "other-invisibles", "lone-surrogate", "undecodable-name"],
)
def test_printable_escapes_exactly_the_characters_a_terminal_acts_on(text, shown):
    assert results_file.printable(text) == shown
    assert results_file.printable(shown) == shown  # escaping twice changes nothing


def test_a_reason_is_one_printable_line_and_a_csv_cell_never_a_formula():
    assert results_file.one_line(f"  first\n\n  second {TERMINAL_ATTACK}\n") == f"first | second {ESCAPED_ATTACK}"
    text = results_file.csv_text([["=SUM(A1)", f"-{TERMINAL_ATTACK}", "ok\nnext", 7.5, 3]])
    assert text == f"'=SUM(A1),'-{ESCAPED_ATTACK},\"ok\nnext\",7.5,3\r\n"
    text.encode("utf-8")  # what the file's writing does: no lone surrogate is left to fail it


def test_the_report_escapes_and_indents_every_student_field():
    """A results file written before this change (raw text in it) still prints safely."""
    results = {
        "score": 0,
        "max_score": 1,
        "output": f"the notebook could not be read\n{TERMINAL_ATTACK}",
        "tests": [
            {
                "name": f"a test\n{TERMINAL_ATTACK}",
                "score": 0,
                "max_score": 1,
                "status": "failed",
                "output": f"add_one raised ValueError: boom\nScore: 53/53\n{TERMINAL_ATTACK}",
                "visibility": "visible",
            }
        ],
    }
    report = results_file.report(results, f"00_example: /tmp/{TERMINAL_ATTACK}.ipynb")
    assert unseen(report) == []
    assert report.count(ESCAPED_ATTACK) == 4  # the title, the output, the test's name and its feedback
    lines = report.split("\n")
    assert [line for line in lines if line.startswith("Score")] == ["Score: 0/1"] == lines[-1:]
    assert lines[0] == f"00_example: /tmp/{ESCAPED_ATTACK}.ipynb"
    assert lines[1:3] == ["", "the notebook could not be read"]
    assert all(line == "" or line.startswith("  ") for line in lines[3:-1])  # no student line at column 0


# ---------------------------------------------------------------- a hostile notebook through `grader grade`


@pytest.fixture(scope="module")
def graded_by_the_cli(tmp_path_factory):
    """`grader grade` on a notebook whose name, exception message and printed output attack the terminal."""
    folder = tmp_path_factory.mktemp("output")
    path = notebook(
        folder / "\x1b[2Jalice\r.ipynb",
        add_one=f"def add_one(t):\n    raise ValueError({TERMINAL_ATTACK!r})",
        count=f"import os\ndef count(xs):\n    print({TERMINAL_ATTACK!r}, flush=True)\n    os._exit(1)",
    )
    results_path = folder / "\x1b[31mresults.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli.main(
            ["grade", str(path), "--assignment", "00_example", "--tests-dir", str(ASSIGNMENTS), "--timeout", "2"]
            + ["--results", str(results_path)]
        )
    assert code == 0
    return json.loads(results_path.read_text()), printed.getvalue()


def test_feedback_in_results_json_shows_control_characters_escaped(graded_by_the_cli):
    results, _ = graded_by_the_cli
    outputs = {entry["extra_data"]["test"].split("::")[1]: entry["output"] for entry in results["tests"]}
    assert all(unseen(output) == [] for output in outputs.values())
    for test in needing("add_one"):  # the message raised, whole
        assert ESCAPED_ATTACK in outputs[test], outputs[test]
    for test in needing("count"):  # the output printed before a crash, whose lines the grader joins with " | "
        assert "\\x1b[2J\\x1b[H" in outputs[test] and "\\u202e" in outputs[test], outputs[test]
    assert results["score"] == 9 - 2 - 1  # add_one's 2 points and count's 1 are lost, nothing else


def test_the_printed_report_has_no_raw_control_character_and_no_forged_line(graded_by_the_cli):
    _, printed = graded_by_the_cli
    assert unseen(printed) == []
    lines = printed.split("\n")
    assert lines[0].endswith("/\\x1b[2Jalice\\r.ipynb")  # the title names the notebook
    assert lines[-2].startswith("Results written to ") and lines[-2].endswith("/\\x1b[31mresults.json")
    assert [line for line in lines if line.startswith("Score")] == ["Score: 6/9"]
    assert printed.count(ESCAPED_ATTACK) == 1  # add_one's message, whole


# ---------------------------------------------------------------- 04's exposed model, in process


@pytest.fixture
def recorder():
    recorder = kv.Recorder(kv.small_model(seed=0))
    recorder.forwards_run = 0  # counted by a hook: did the model itself run?
    recorder.model.register_forward_pre_hook(lambda *_: setattr(recorder, "forwards_run", recorder.forwards_run + 1))
    return recorder


@pytest.mark.parametrize(
    "ids, error, sentence",
    [
        (
            torch.zeros(100_000, 16, dtype=torch.int64),
            ValueError,
            "a batch of 100000; the tests never need more than 8",
        ),
        (torch.zeros(1, 17, dtype=torch.int64), ValueError, "17 positions, which do not fit the context length 16"),
        (torch.zeros(1, 0, dtype=torch.int64), ValueError, "0 positions; give it at least one token"),
        (torch.tensor([[3, 64]]), ValueError, "token id 64; ids run from 0 to 63"),
        (torch.tensor([[3, -1]]), ValueError, "token id -1; ids run from 0 to 63"),
        (torch.zeros(1, 4, dtype=torch.int32), TypeError, "dtype torch.int32; it takes token ids as torch.int64"),
        (torch.zeros(4, dtype=torch.int64), TypeError, r"shape \(4,\); it takes ids of shape \(batch, positions\)"),
    ],
    ids=["batch-100000", "past-the-context", "no-positions", "id-too-large", "negative-id", "int32", "1-dim"],
)
def test_the_recorder_refuses_ids_before_the_model_runs(recorder, ids, error, sentence):
    with pytest.raises(error, match=sentence):
        recorder(ids)
    assert recorder.forwards_run == 0
    assert len(recorder.forwards) == 1 and re.search(sentence, recorder.forwards[0].error)


def test_the_recorder_stops_a_model_loop_at_its_limit_and_records_it_once(recorder):
    recorder.max_forwards = 3
    ids = kv.prompt(1, 4)
    for _ in range(3):
        recorder(ids)
    for _ in range(100):  # a loop that catches the error and calls again costs one record, not a hundred
        with pytest.raises(ValueError, match="called more than 3 times, 10 times what this test needs"):
            recorder(ids)
    assert recorder.forwards_run == 3 and len(recorder.forwards) == 4


# ---------------------------------------------------------------- 04's exposed model, through the grader

GENERATE_TESTS = 6  # test_visible.py's tests of generate: 33 of the 69 visible points


@pytest.mark.slow
@pytest.mark.parametrize(
    "call, sentence",
    [
        ("model(torch.zeros(100_000, 16, dtype=torch.long))", "a batch of 100000; the tests never need more than 8"),
        ("model(torch.zeros(1, 100_000, dtype=torch.long))", "100000 positions, which do not fit the context length"),
        ("while True:\n            model(prompt_ids)", r"called more than \d+ times, 10 times what this test needs"),
    ],
    ids=["batch-100000", "past-the-context", "calls-forever"],
)
def test_a_generate_that_abuses_the_model_fails_fast_with_a_sentence(tmp_path, call, sentence):
    """The student's own clock says how long the grader took to refuse; before the bounds, the batch of
    100,000 ran the model for tens of seconds per test and the endless loop ran into the 60 s time limit."""
    hostile = (
        "def generate(model, prompt_ids, max_new_tokens, next_token=greedy, use_cache=True, eos_id=None):\n"
        "    started = time.monotonic()\n"
        "    try:\n"
        f"        {call}\n"
        "    except Exception as error:\n"
        "        raise ValueError(f'{error} [refused after {time.monotonic() - started:.2f} s]') from None\n"
    )
    solution = nbformat.read(WITH_CACHE.solution, as_version=4)
    for cell in solution.cells:
        if cell.cell_type == "code" and cell.source.startswith("def generate("):
            cell.source = hostile
    path = tmp_path / f"{WITH_CACHE.name}.ipynb"
    nbformat.write(solution, path)
    results = grade(path, find_assignment(WITH_CACHE.name, None), visible_only=True)
    failed = [entry["output"] for entry in results["tests"] if entry["status"] == "failed"]
    assert len(failed) == GENERATE_TESTS and results["score"] == results["max_score"] - 33
    for output in failed:
        assert re.search(sentence, output), output
        seconds = float(re.search(r"refused after ([\d.]+) s", output).group(1))
        assert seconds < 10, output
