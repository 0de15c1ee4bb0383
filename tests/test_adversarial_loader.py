"""Notebooks that make the trusted loader's work large: each is graded end to end, within the time limits,
into a results file that lists every test, and a broken part costs only what it breaks.

All are graded in one `grader batch` run (2 jobs, 2 s per call) beside an honest notebook, then checked one by one.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import nbformat
import pytest

from course.notebook import MAX_CELLS, MAX_JSON_DEPTH
from grader.batch import run_batch
from grader.identity import Limits

sys.path.insert(0, str(Path(__file__).parent / "grader_fixtures"))
from submissions import ASSIGNMENTS, MAX_SCORE, TESTS, needing, notebook, solution_cells  # noqa: E402

pytestmark = pytest.mark.slow

LIMITS = Limits(call_timeout=2.0, load_timeout=5.0, memory_bytes=2**30, file_bytes=2**20, output_bytes=64 * 1024)
LONG_CELL_LINES = 60_000
BATCH_SECONDS = 300  # the whole batch; the quadratic loader took hours on the long cell alone


def _deep_metadata(path: Path) -> None:
    """The solution with cell metadata nested 600 deep: valid JSON, but nbformat's reader recurses on it."""
    notebook(path)
    content = json.loads(path.read_text())
    nested: dict = {}
    for _ in range(600):
        nested = {"level": nested}
    content["cells"][0]["metadata"] = nested
    path.write_text(json.dumps(content))


def _many_cells(path: Path) -> None:
    notebook(path)
    nb = nbformat.read(path, as_version=4)
    nb.cells += [nbformat.v4.new_markdown_cell("x") for _ in range(MAX_CELLS)]
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """name -> results of every notebook, graded in one batch."""
    submissions = tmp_path_factory.mktemp("loader") / "submissions"
    submissions.mkdir()
    notebook(submissions / "honest.ipynb")
    long_cell = "".join(f"step({i})\n" for i in range(LONG_CELL_LINES))  # top-level work: parsed, not kept
    notebook(submissions / "long_cell.ipynb", long_cell)
    notebook(submissions / "deeply_nested_expression.ipynb", "NESTED = " + "+".join(["1"] * 5000))
    notebook(submissions / "syntax_error_in_a_function.ipynb", add_one="def add_one(t):\n    return t +\n")
    notebook(submissions / "failing_definition.ipynb", count="@print(1 / 0)\ndef count(xs):\n    return len(xs)")
    notebook(submissions / "many_magics.ipynb", "%time 1\n" * 20_000)
    _deep_metadata(submissions / "deep_metadata.ipynb")
    _many_cells(submissions / "many_cells.ipynb")
    started = time.monotonic()
    run_batch(submissions, ASSIGNMENTS / "00_example", jobs=2, limits=LIMITS, progress=False)
    assert time.monotonic() - started < BATCH_SECONDS
    return {p.stem: json.loads(p.read_text()) for p in (submissions / "results").glob("*.json")}


def _by_test(results: dict) -> dict[str, dict]:
    by_test = {t["extra_data"]["test"].split("::")[1]: t for t in results["tests"]}
    assert set(by_test) == set(TESTS), "every expected test is listed"
    assert results["score"] == sum(t["score"] for t in results["tests"]) <= MAX_SCORE
    return by_test


@pytest.mark.parametrize(
    ("case", "failing"),
    [
        ("honest", set()),
        ("long_cell", set()),  # 60,000 lines: parsed in linear time
        ("deeply_nested_expression", set()),  # that cell is reported as not parseable; the others load
        ("many_magics", set()),  # IPython lines beyond the re-parsing allowance: that cell is a syntax error
        ("syntax_error_in_a_function", needing("add_one")),
        ("failing_definition", needing("count")),
    ],
)
def test_a_large_or_broken_part_costs_only_what_it_breaks(graded, case, failing):
    for name, test in _by_test(graded[case]).items():
        assert test["status"] == ("failed" if name in failing else "passed"), f"{case}: {name}: {test['output']}"


def test_the_unparseable_cells_are_named_in_the_output(graded):
    assert "cell 1: cannot be parsed (RecursionError)" in graded["deeply_nested_expression"]["output"]
    assert "cell 1: syntax error on line" in graded["many_magics"]["output"]


def test_a_syntax_error_is_reported_where_the_student_looks(graded):
    results = graded["syntax_error_in_a_function"]
    assert "cell 2: syntax error on line 2 (invalid syntax); the cell was skipped" in results["output"]
    reason = "cell 2 has a syntax error at line 2 (invalid syntax), so nothing in that cell was loaded"
    for name, test in _by_test(results).items():
        if name in needing("add_one"):
            assert test["output"].startswith(f"the notebook does not define `add_one`: {reason}"), test["output"]


def test_a_failed_definition_names_its_cell_and_line(graded):
    for name, test in _by_test(graded["failing_definition"]).items():
        if name in needing("count"):
            expected = "the notebook does not define `count`: defining it at cell 4, line 1 failed"
            assert test["output"].startswith(expected), test["output"]


@pytest.mark.parametrize(
    ("case", "sentence"),
    [
        ("deep_metadata", f"is not a Jupyter notebook: its JSON is nested more than {MAX_JSON_DEPTH} levels deep"),
        (
            "many_cells",
            f"is too large to grade: it has {len(solution_cells()) + MAX_CELLS:,} cells (at most {MAX_CELLS:,})",
        ),
    ],
)
def test_a_refused_notebook_scores_zero_with_one_sentence(graded, case, sentence):
    results = graded[case]
    assert results["score"] == 0 and sentence in results["output"] and "\n" not in results["output"]
    for test in _by_test(results).values():
        assert test["status"] == "failed" and sentence in test["output"]
