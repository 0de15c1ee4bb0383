"""results.json in Gradescope's format, written atomically, and the terminal report made from it.

Visibility: tests from test_visible.py are "visible"; all others (test_hidden.py) are
"after_published": students see their outcome and feedback once grades are published.

Student text (exception messages, printed output, written answers, file and folder names) reaches a
TA's terminal, Gradescope's page, spreadsheets and learning platforms. It goes through one function
wherever it lands: `printable` shows every control character visibly escaped, so no message can clear
the screen, move the cursor, overwrite a line with a carriage return or reorder characters with a bidi
override, and every lone surrogate (an exception message's `\ud800`, or the `\udce9` by which Python
names a file name's byte that is not UTF-8) escaped too, so that any text can be written as UTF-8. The
report indents every continuation line, so no student line starts at column 0 like one of the report's
own; a CSV cell (`csv_text`) is printable and never starts a spreadsheet formula; a reason in a table is
one line (`one_line`).
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from course.kit import write_atomically

VISIBLE_FILE = "test_visible.py"

# Unicode's control (Cc), format (Cf: bidi overrides, zero-width characters) and line/paragraph separator
# categories: none of them is ever needed to read a message, and each can change what a reader sees. A lone
# surrogate (Cs) is no character at all: no UTF-8 file or terminal can take it.
_UNSEEN_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs"}
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet may run as a formula (OWASP, CSV injection)
_NOT_PLAIN_ASCII = re.compile(r"[^\n\t\x20-\x7e]")  # the only characters that may need escaping


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


def printable(text: str) -> str:
    """`text` with every control, format and separator character but newline and tab, and every lone
    surrogate, written as its Python escape (ESC as `\\x1b`, a right-to-left override as `\\u202e`, a
    surrogate as `\\ud800`); other characters are kept as they are."""
    return _NOT_PLAIN_ASCII.sub(_escape_unseen, text)


def one_line(text: str) -> str:
    """`text` printable, on one line: its non-blank lines, stripped, joined with " | "."""
    return " | ".join(line.strip() for line in printable(text).splitlines() if line.strip())


def csv_text(rows) -> str:
    """A CSV table (the `csv` module's dialect) of `rows`: every text cell printable, with a leading `'` where a
    spreadsheet would run it as a formula; numbers stay numbers."""
    table = io.StringIO(newline="")
    csv.writer(table).writerows([_spreadsheet_safe(cell) for cell in row] for row in rows)
    return table.getvalue()


def _spreadsheet_safe(cell):
    if not isinstance(cell, str):
        return cell
    cell = printable(cell)
    return f"'{cell}" if cell.startswith(FORMULA_STARTS) else cell


def _escape_unseen(match: re.Match) -> str:
    char = match.group()
    if unicodedata.category(char) in _UNSEEN_CATEGORIES:
        return char.encode("unicode_escape").decode("ascii")
    return char


def build(
    tests: list[ExpectedTest],
    outcomes: dict[str, Outcome],
    output: str,
    execution_time: float,
    frequency_checks: dict[str, int] | None = None,
) -> dict:
    """The results of a grading run; a test without an outcome was not run and earns nothing. A test's entry records
    the frequency checks it made (`frequency_checks`: test id -> count) in its extra_data."""
    not_run = Outcome(False, "not run: grading stopped before this test")
    entries = []
    for test in tests:
        outcome = outcomes.get(test.id, not_run)
        checks = (frequency_checks or {}).get(test.id, 0)
        entries.append(
            {
                "name": test.name,
                "score": test.points if outcome.passed else 0,
                "max_score": test.points,
                "status": "passed" if outcome.passed else "failed",
                "output": printable(outcome.feedback),
                "visibility": test.visibility,
                "extra_data": {"test": test.id, **({"frequency_checks": checks} if checks else {})},
            }
        )
    return {
        "score": sum(entry["score"] for entry in entries),
        "max_score": sum(test.points for test in tests),
        "execution_time": round(execution_time, 3),
        "output": printable(output),
        "stdout_visibility": "hidden",
        "tests": entries,
    }


def write(path: Path, results: dict) -> None:
    """Write results.json atomically: a reader sees the old file or the new one, never a part."""
    write_atomically(path, json.dumps(results, indent=2) + "\n")


def _points(x: float) -> str:
    return f"{x:g}"


def report(results: dict, title: str) -> str:
    """A readable summary: every test with its points, the reason for every lost point, the total.

    Every piece of text in it goes through `printable` (results read from a file may predate it)."""
    lines = [_indented(title, "", "  ")]
    if results.get("output"):
        lines += ["", _indented(results["output"], "", "  ")]
    lines.append("")
    for test in results["tests"]:
        mark = "PASS" if test["status"] == "passed" else "FAIL"
        hidden = "  (hidden)" if test["visibility"] != "visible" else ""
        head = f"  {mark}  {_points(test['score']):>4}/{_points(test['max_score']):<4} "
        lines.append(_indented(f"{test['name']}{hidden}", head, " " * len(head)))
        if test["status"] != "passed" and test["output"]:
            lines.append(_indented(test["output"], " " * 19, " " * 19))
    lines += ["", f"Score: {_points(results['score'])}/{_points(results['max_score'])}"]
    if checks := frequency_checks_by_file(results):
        from grader.testing import chance_statement  # imports torch: only for a grading that sampled

        lines.append(chance_statement(checks))
    return "\n".join(lines)


def frequency_checks_by_file(results: dict) -> dict[str, int]:
    """Test file -> the frequency checks its tests made in this grading (from each test's extra_data)."""
    by_file: dict[str, int] = {}
    for test in results.get("tests", []):
        extra = test.get("extra_data") or {}
        count = extra.get("frequency_checks", 0)
        if isinstance(count, int) and count > 0 and isinstance(extra.get("test"), str):
            name = extra["test"].split("::")[0]
            by_file[name] = by_file.get(name, 0) + count
    return by_file


def _indented(text: str, first: str, rest: str) -> str:
    """`text` made printable, its first line after `first` and every other line after `rest`."""
    lines = printable(text).split("\n")
    return "\n".join([first + lines[0], *(rest + line for line in lines[1:])])
