"""results.json in Gradescope's format, written atomically, and the terminal report made from it.

Visibility: tests from test_visible.py are "visible"; all others (test_hidden.py) are
"after_published": students see their outcome and feedback once grades are published.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from course.kit import write_atomically

VISIBLE_FILE = "test_visible.py"


@dataclass(frozen=True)
class ExpectedTest:
    id: str  # "test_visible.py::test_greedy"
    function: str
    description: str  # the docstring's first line, or ''
    points: float
    hidden: bool

    @property
    def name(self) -> str:
        return self.description or self.function

    @property
    def visibility(self) -> str:
        return "after_published" if self.hidden else "visible"


@dataclass(frozen=True)
class Outcome:
    passed: bool
    feedback: str = ""


def build(tests: list[ExpectedTest], outcomes: dict[str, Outcome], output: str, execution_time: float) -> dict:
    """The results of a grading run; a test without an outcome was not run and earns nothing."""
    not_run = Outcome(False, "not run: grading stopped before this test")
    entries = []
    for test in tests:
        outcome = outcomes.get(test.id, not_run)
        entries.append(
            {
                "name": test.name,
                "score": test.points if outcome.passed else 0,
                "max_score": test.points,
                "status": "passed" if outcome.passed else "failed",
                "output": outcome.feedback,
                "visibility": test.visibility,
                "extra_data": {"test": test.id},
            }
        )
    return {
        "score": sum(entry["score"] for entry in entries),
        "max_score": sum(test.points for test in tests),
        "execution_time": round(execution_time, 3),
        "output": output,
        "stdout_visibility": "hidden",
        "tests": entries,
    }


def write(path: Path, results: dict) -> None:
    """Write results.json atomically: a reader sees the old file or the new one, never a part."""
    write_atomically(path, json.dumps(results, indent=2) + "\n")


def _points(x: float) -> str:
    return f"{x:g}"


def report(results: dict, title: str) -> str:
    """A readable summary: every test with its points, the reason for every lost point, the total."""
    lines = [title, ""]
    if results.get("output"):
        lines += [results["output"], ""]
    for test in results["tests"]:
        mark = "PASS" if test["status"] == "passed" else "FAIL"
        hidden = "  (hidden)" if test["visibility"] != "visible" else ""
        lines.append(f"  {mark}  {_points(test['score']):>4}/{_points(test['max_score']):<4} {test['name']}{hidden}")
        if test["status"] != "passed" and test["output"]:
            lines += [f"                   {line}" for line in test["output"].splitlines()]
    lines += ["", f"Score: {_points(results['score'])}/{_points(results['max_score'])}"]
    return "\n".join(lines)
