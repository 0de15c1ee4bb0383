"""Questions in words and numbers: prediction constants graded by tests, written answers collected from
markdown cells for a person to grade (grader/answers.py), in a batch's answers.csv and on Gradescope."""

from __future__ import annotations

import csv
import io
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

from course.assignments import assignments, read_manifest
from course.build import joined_source
from course.errors import UserError
from course.notebook import read_notebook
from grader.answers import (
    PLACEHOLDER,
    Question,
    WrittenAnswer,
    answers_table,
    expect_prediction,
    questions,
    read_answers,
)
from grader.cli import main
from grader.gradescope import manual_questions, written_answer_entries

sys.path.insert(0, str(Path(__file__).parent / "grader_fixtures"))
from submissions import ASSIGNMENTS, notebook  # noqa: E402

ASKING = [one for one in assignments() if one.questions]
EXAMPLE_MANIFEST = 'title = "Example"\nsummary = "an example"\ngraded = ["greedy"]\n'


def _notebook(*cells: tuple[str, str]) -> nbformat.NotebookNode:
    make = {"markdown": nbformat.v4.new_markdown_cell, "code": nbformat.v4.new_code_cell}
    return nbformat.v4.new_notebook(cells=[make[kind](source) for kind, source in cells])


def test_answers_are_the_markdown_cells_that_name_a_question():
    asked = [Question(name, 1.0, "?") for name in ("why-min-p", "use-lightly")]
    answers = read_answers(
        _notebook(
            ("markdown", "#### Answer: why-min-p\nThe bar moves with the top probability."),
            ("markdown", "## ANSWER : Use-Lightly\n" + PLACEHOLDER),  # the placeholder only: no answer
            ("code", "# Answer: why-min-p\nx = 1"),  # a code cell is never an answer
            ("markdown", "Some notes.\n#### Answer: why-min-p\nnot an answer: the marker is not the first line"),
            ("markdown", "\n#### answer: WHY-MIN-P\nAnd top-p adds up mass."),  # split over two cells: joined
        ),
        asked,
    )
    assert {name: answer.text for name, answer in answers.items()} == {
        "why-min-p": "The bar moves with the top probability.\n\nAnd top-p adds up mass.",
        "use-lightly": "",  # the placeholder only: no answer
    }


def test_a_missing_answer_says_whether_the_cell_is_missing_empty_or_still_the_placeholder():
    asked = [Question(name, 1.0, "?") for name in ("kept", "placeholder", "empty", "absent", "after")]
    answers = read_answers(
        _notebook(
            ("markdown", "#### Answer: kept\r\nTwo lines,\r\nfrom Windows."),
            ("markdown", f"#### Answer: placeholder\n\n{PLACEHOLDER}\n"),
            ("markdown", "#### Answer: empty\n   \n"),
            ("markdown", f"#### Answer: after\n{PLACEHOLDER} Mine."),  # written beside the placeholder: kept
        ),
        asked,
    )
    assert {name: answer.shown() for name, answer in answers.items()} == {
        "kept": "Two lines,\nfrom Windows.",
        "placeholder": "(no answer: the answer is still the placeholder)",
        "empty": "(no answer: the cell `#### Answer: empty` is empty)",
        "absent": "(no answer: the notebook has no markdown cell `#### Answer: absent`)",
        "after": "Mine.",
    }


def test_every_notebook_answers_in_the_one_convention_each_question_its_manifest_declares():
    """A markdown cell `#### Answer: NAME` per declared question, its body the placeholder in the student notebook;
    no other answer cell, no cell tagged `answer` (a convention nothing collects)."""
    assert ASKING, "no assignment declares a written question"
    for one in assignments():
        asked = sorted(q.name for q in questions(one.folder))
        cells = read_notebook(one.notebook).cells
        texts = [joined_source(c.source).strip() for c in cells if c.cell_type == "markdown"]
        answers = [text for text in texts if text.lower().startswith("#### answer:")]
        named = sorted(text.splitlines()[0].split(":", 1)[1].strip() for text in answers)
        assert named == asked, f"{one.name}: answer cells {named}, declared questions {asked}"
        assert all(text.splitlines()[1:] == [PLACEHOLDER] for text in answers), one.name
        assert not [c for c in cells if "answer" in c.get("metadata", {}).get("tags", [])], one.name


@pytest.mark.parametrize(
    ("questions_toml", "refusal"),
    [
        ('[[questions]]\nname = "a b"\npoints = 1\nquestion = "?"', r"question 1: `name` should be unique"),
        ('[[questions]]\nname = "a"\npoints = 1\nquestion = "?"\n[[questions]]\nname = "a"\npoints = 2\nquestion = "?"',
         r"question 2: `name` should be unique"),
        ('[[questions]]\nname = "a"\npoints = "two"\nquestion = "?"', r"question 1: `points` has the wrong type"),
        ('[[questions]]\nname = "a"\nquestion = "?"', r"question 1 should be a \[\[questions\]\] table of name, points"),
        ("questions = [1, 2]", r"question 1 should be a \[\[questions\]\] table"),
    ],
)  # fmt: skip
def test_a_manifest_whose_questions_cannot_be_read_is_one_sentence(tmp_path, questions_toml, refusal):
    folder = tmp_path / "07_example"
    folder.mkdir()
    (folder / "assignment.toml").write_text(EXAMPLE_MANIFEST + questions_toml + "\n")
    with pytest.raises(UserError, match=rf"^{folder}/assignment.toml: {refusal}") as refused:
        questions(folder)
    assert "\n" not in str(refused.value)


def test_tests_without_a_manifest_ask_no_question(tmp_path):
    assert questions(tmp_path) == []  # tests given with --tests-dir may come without a manifest
    (tmp_path / "assignment.toml").write_text(EXAMPLE_MANIFEST)
    with pytest.raises(UserError, match="an assignment's folder is named NN_name"):
        read_manifest(tmp_path)


def test_the_answers_table_escapes_every_answer_and_says_which_notebook_could_not_be_read():
    asked = [Question("why", 2.0, "Why?"), Question("how", 1.0, "How?")]
    hostile = "\x1b[2J\u202eevil\x00 text\rover"  # clear the screen, reverse the text, NUL, carriage return
    text = answers_table(
        [
            ("ann", "7", {"why": WrittenAnswer("=HYPERLINK(1)"), "how": WrittenAnswer("two\nlines")}),
            ("\x1b[31mbo\udce9", "", {"why": WrittenAnswer(hostile), "how": WrittenAnswer("", "the answer is still the placeholder")}),
            ("cy", "", None),
        ],
        asked,
    )  # fmt: skip
    assert list(csv.reader(io.StringIO(text))) == [
        ["student", "id", "why (2 points)", "how (1 points)"],
        ["question", "", "Why?", "How?"],
        ["ann", "7", "'=HYPERLINK(1)", "two\nlines"],
        ["\\x1b[31mbo\\udce9", "", "\\x1b[2J\\u202eevil\\x00 text\\rover", "(no answer: the answer is still the placeholder)"],
        ["cy", "", "(no answer: the notebook could not be read)", "(no answer: the notebook could not be read)"],
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "expected", "right"),
    [
        ("Top K", "top-k", True),
        ("top_k", "top-k", True),
        ("top-p", "top-k", False),
        (3, 3, True),
        (3.0, 3, True),
        (True, 1, False),  # a bool is not a number here
        ("3", 3, False),
        (-1.0000001, -1.0, True),
        (None, "top-k", False),
    ],
)
def test_a_prediction_is_right_up_to_spelling_and_never_told(value, expected, right):
    if right:
        expect_prediction(value, expected, "PREDICT_X", tolerance=1e-6)
    else:
        with pytest.raises(AssertionError) as failure:
            expect_prediction(value, expected, "PREDICT_X", tolerance=1e-6)
        assert str(expected) not in str(failure.value).replace(repr(value), "")


def test_gradescope_lists_manual_questions_and_shows_each_answer_received():
    for one in assignments():
        listed = manual_questions(one.name)
        assert all(f"{q.name} ({q.points:g} points): {q.question}" in listed for q in one.questions), one.name
        assert bool(listed) == bool(one.questions)  # nothing to add for an assignment that asks none
    asked = list(ASKING[0].questions)
    first = asked[0].name
    entries = written_answer_entries(asked, {first: WrittenAnswer("because \x1b[2J\u202e")})
    assert (entries[0]["score"], entries[0]["max_score"], entries[0]["output"]) == (0, 0, "because \\x1b[2J\\u202e")
    placeholder = {first: WrittenAnswer("", "the answer is still the placeholder")}
    assert written_answer_entries(asked, placeholder)[0]["output"] == "(no answer: the answer is still the placeholder)"
    assert written_answer_entries(asked, None)[0]["output"] == "(no answer: the notebook could not be read)"


@pytest.mark.slow
def test_a_batch_writes_one_answers_file_for_the_teaching_assistants(tmp_path):
    tests = tmp_path / "tests" / "00_example"
    shutil.copytree(ASSIGNMENTS / "00_example", tests)
    why = '[[questions]]\nname = "why"\npoints = 2\nquestion = "Why?"\n'
    (tests / "assignment.toml").write_text(EXAMPLE_MANIFEST + why)
    folder = tmp_path / "class"
    folder.mkdir()
    answered = notebook(folder / "ann.ipynb")
    with_answer = nbformat.read(answered, as_version=4)
    with_answer.cells.append(nbformat.v4.new_markdown_cell("#### Answer: why\nBecause the bar moves."))
    nbformat.write(with_answer, answered)
    notebook(folder / "bo.ipynb")
    command = ["batch", str(folder), "--assignment", "00_example", "--tests-dir", str(tests.parent), "--quiet"]
    assert main([*command, "--timeout", "3"]) == 0
    rows = list(csv.reader((folder / "results" / "answers.csv").open(newline="")))
    assert rows == [
        ["student", "id", "why (2 points)"],
        ["question", "", "Why?"],
        ["ann", "", "Because the bar moves."],
        ["bo", "", "(no answer: the notebook has no markdown cell `#### Answer: why`)"],
    ]
