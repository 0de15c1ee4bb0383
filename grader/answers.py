"""Written answers: the questions of an assignment that a person grades, and what each notebook answers.

An assignment's written questions are declared in its manifest, assignment.toml beside its tests
(course/assignments.py):

    [[questions]]
    name = "why-min-p"
    points = 2
    question = "Why does min-p ..."

A notebook answers one in a markdown cell whose first line names it, `#### Answer: why-min-p` (any heading level,
any case); the rest of the cell is the answer. A student may split an answer over several such cells (they are
joined) or leave the notebook's placeholder in it (then it is no answer, and said to be the placeholder, apart
from a missing cell and an empty one). Answers are read from the notebook's JSON on the trusted side, never by
running anything, and never scored by the grader: `grader batch` writes them to one CSV per batch for the
teaching assistants (`answers.csv` beside `scores.csv`, one row per student, one column per question, every
answer escaped by grader.results.printable), and on Gradescope they are manual questions (grader/gradescope.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from course.assignments import MANIFEST_FILE, Question, read_manifest
from grader.results import csv_text

__all__ = ["Question", "questions", "read_answers", "answers_table", "expect_prediction", "WrittenAnswer"]

ANSWER_LINE = re.compile(r"^\s*#{1,6}\s*answer\s*:\s*(?P<name>[A-Za-z0-9_.-]+)\s*$", re.IGNORECASE)
PLACEHOLDER = "_Write your answer here._"
MAX_ANSWER = 20_000  # characters kept per answer: a TA reads a paragraph, not a book


def questions(assignment: Path) -> list[Question]:
    """The written questions declared in the assignment's manifest; none when its folder has no manifest (tests
    given with --tests-dir may come without one)."""
    if not (Path(assignment) / MANIFEST_FILE).is_file():
        return []
    return list(read_manifest(Path(assignment)).questions)


@dataclass(frozen=True)
class WrittenAnswer:
    text: str  # the answer as written, '' when there is none
    missing: str = ""  # why there is none: no answer cell, the placeholder left as it was, or an empty cell

    def shown(self) -> str:
        return self.text or f"(no answer: {self.missing})"


def read_answers(notebook, asked: list[Question]) -> dict[str, WrittenAnswer]:
    """Each asked question's answer in `notebook` (an nbformat NotebookNode), by question name."""
    cells = _answer_cells(notebook)
    return {q.name: _answer(q.name, cells.get(q.name.lower())) for q in asked}


def _answer_cells(notebook) -> dict[str, list[str]]:
    """Lower-cased question name -> the text under each markdown cell headed `#### Answer: NAME`."""
    cells: dict[str, list[str]] = {}
    for cell in notebook.cells:
        if cell.get("cell_type") != "markdown":
            continue
        source = cell.get("source", "")
        text = (source if isinstance(source, str) else "".join(source)).replace("\r\n", "\n")
        first, _, rest = text.strip().partition("\n")
        named = ANSWER_LINE.match(first)
        if named is not None:
            cells.setdefault(named["name"].lower(), []).append(rest)
    return cells


def _answer(name: str, bodies: list[str] | None) -> WrittenAnswer:
    if bodies is None:
        return WrittenAnswer("", f"the notebook has no markdown cell `#### Answer: {name}`")
    written = "\n\n".join(part for body in bodies if (part := body.replace(PLACEHOLDER, "").strip()))
    if written:
        return WrittenAnswer(written[:MAX_ANSWER])
    if any(PLACEHOLDER in body for body in bodies):
        return WrittenAnswer("", "the answer is still the placeholder")
    return WrittenAnswer("", f"the cell `#### Answer: {name}` is empty")


def answers_table(rows: list[tuple[str, str, dict[str, WrittenAnswer] | None]], asked: list[Question]) -> str:
    """The CSV for the teaching assistants: a header (student, id, then each question with its points), a row of
    the questions' text, then one row per (student, id, answers), each answer or why there is none; a notebook
    that could not be read says so."""
    unread = WrittenAnswer("", "the notebook could not be read")
    lines = [
        ["student", "id", *(f"{q.name} ({q.points:g} points)" for q in asked)],
        ["question", "", *(q.question for q in asked)],
    ]
    for student, identifier, answers in rows:
        lines.append([student, identifier, *((answers or {}).get(q.name, unread).shown() for q in asked)])
    return csv_text(lines)


def _normalised(choice: str) -> str:
    """A choice as written with any case, spacing, '-' or '_': "Top-k", "top k", "TOPK" are all "topk"."""
    return re.sub(r"[\s_-]+", "", choice).lower()


def expect_prediction(value, expected, name: str, *, tolerance: float = 0.0) -> None:
    """A test's check of a prediction constant (`PREDICT_STEPS = 12`, `PREDICT_TREND = "fewer"`): a number
    within `tolerance` of `expected`, or a choice equal to it up to case, spaces, '-' and '_'. The message says
    that the prediction is wrong, never what the right one is."""
    if isinstance(expected, str):
        right = isinstance(value, str) and _normalised(value) == _normalised(expected)
    else:
        right = type(value) in (int, float) and abs(value - expected) <= tolerance
    if not right:
        raise AssertionError(f"{name} = {value!r} is not what happens: run the cell after it and see why")
