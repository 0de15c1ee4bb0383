"""Written answers: the questions of an assignment that a person grades, and what each notebook answers.

An assignment's written questions are declared beside its tests, in `questions.json`:

    {"questions": [{"name": "why-min-p", "points": 2, "question": "Why does min-p ..."}]}

A notebook answers one in a markdown cell whose first line names it, `#### Answer: why-min-p` (any heading level,
any case); the rest of the cell is the answer. A student may split an answer over several such cells (they are
joined) or leave the notebook's placeholder in it (then it is no answer). Answers are read from the notebook's
JSON on the trusted side, never by running anything, and never scored by the grader: `grader batch` writes them
to one CSV per batch for the teaching assistants (`answers.csv`, one row per student, one column per question),
and on Gradescope they are manual questions (grader/gradescope.py).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

from course.kit import write_atomically
from course.notebook import NotebookError, read_notebook
from grader.errors import GraderError

QUESTIONS_FILE = "questions.json"
ANSWER_LINE = re.compile(r"^\s*#{1,6}\s*answer\s*:\s*(?P<name>[A-Za-z0-9_.-]+)\s*$", re.IGNORECASE)
PLACEHOLDER = "_Write your answer here._"
MAX_ANSWER = 20_000  # characters kept per answer: a TA reads a paragraph, not a book


@dataclass(frozen=True)
class Question:
    name: str
    points: float
    question: str


def questions(assignment: Path) -> list[Question]:
    """The written questions declared in the assignment's questions.json; none when it has no such file."""
    path = Path(assignment) / QUESTIONS_FILE
    if not path.is_file():
        return []
    try:
        declared = json.loads(path.read_text(encoding="utf-8"))["questions"]
        found = [Question(str(q["name"]), float(q["points"]), str(q["question"])) for q in declared]
    except (ValueError, KeyError, TypeError) as error:
        raise GraderError(
            f"{path} is not a list of written questions ({error}): expected "
            '{"questions": [{"name": ..., "points": ..., "question": ...}]}'
        ) from None
    names = [q.name for q in found]
    if len(set(names)) < len(names) or not all(ANSWER_LINE.match(f"# Answer: {name}") for name in names):
        raise GraderError(f"{path}: each question needs a name of its own, of letters, digits, '_', '-' or '.'")
    return found


def written_answers(notebook) -> dict[str, str]:
    """name -> answer text, for each answer cell of `notebook` (an nbformat NotebookNode), placeholders left out."""
    answers: dict[str, list[str]] = {}
    for cell in notebook.cells:
        if cell.get("cell_type") != "markdown":
            continue
        source = cell.get("source", "")
        text = source if isinstance(source, str) else "".join(source)
        first, _, rest = text.strip().partition("\n")
        named = ANSWER_LINE.match(first)
        if named is None:
            continue
        answer = rest.replace(PLACEHOLDER, "").strip()
        if answer:
            answers.setdefault(named["name"].lower(), []).append(answer)
    return {name: "\n\n".join(parts)[:MAX_ANSWER] for name, parts in answers.items()}


def answers_of(path: Path) -> dict[str, str] | None:
    """The written answers of the notebook at `path`, or None when it cannot be read as a notebook."""
    try:
        return written_answers(read_notebook(path))
    except NotebookError:
        return None


def answers_table(rows: list[tuple[str, dict[str, str] | None]], asked: list[Question]) -> str:
    """The CSV for the teaching assistants: a header (student, then each question with its points), a row of the
    questions' text, then one row per (student, answers); a notebook that could not be read says so."""
    from grader.batch import spreadsheet_safe  # the batch's defence against formulas in cells

    table = io.StringIO(newline="")
    lines = [
        ["student", *(f"{q.name} ({q.points:g} points)" for q in asked)],
        ["question", *(q.question for q in asked)],
    ]
    for student, answers in rows:
        if answers is None:
            lines.append([student, *(["(the notebook could not be read)"] * len(asked))])
        else:
            lines.append([student, *(answers.get(q.name.lower(), "") for q in asked)])
    csv.writer(table).writerows([spreadsheet_safe(cell) for cell in line] for line in lines)
    return table.getvalue()


def write_answers(path: Path, rows: list[tuple[str, Path]], asked: list[Question]) -> Path:
    """Collect the answers of each (student, notebook) into the CSV at `path`, written atomically."""
    write_atomically(path, answers_table([(student, answers_of(notebook)) for student, notebook in rows], asked))
    return path


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
