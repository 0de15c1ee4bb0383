"""`grader batch` on a folder as a learning platform exports it: one folder per student, and what is not a submission."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

from grader.batch import FORMULA_STARTS, find_submissions, write_csv
from grader.cli import main

sys.path.insert(0, str(Path(__file__).parent / "grader_fixtures"))
from submissions import ASSIGNMENTS, MAX_SCORE, notebook  # noqa: E402

LIMITS_ARGS = ["--timeout", "3"]
SKIPPED = [  # what the class folder below holds that is not one student's notebook, and why, in DIR's order
    ".ipynb_checkpoints/: hidden (the name starts with a dot)",
    "bob_456/: 2 notebooks in this folder (00_example-Copy1.ipynb, 00_example.ipynb): leave one",
    "carol_789/: no notebook (.ipynb) in this folder",
    "dave.ipynb: it is not a file (a broken link?)",
    "notes.txt: not a notebook (.ipynb)",
    "results/: the results folder",
]


def lms_export(folder: Path) -> Path:
    """Two students whose folders hold notebooks of the same name, a folder with two, an empty one, a notebook
    named like a formula, a link to nothing, a text file, Jupyter's checkpoints and an earlier run's results."""
    for student in ("alice_123", "erin_321"):
        (folder / student).mkdir(parents=True)
    notebook(folder / "alice_123" / "00_example.ipynb")
    (folder / "erin_321" / "hand-in").mkdir()
    notebook(folder / "erin_321" / "hand-in" / "00_example.ipynb", count="def count(xs):\n    return 0")
    (folder / "erin_321" / "README.txt").write_text("my notes")
    (folder / "bob_456").mkdir()
    notebook(folder / "bob_456" / "00_example.ipynb")
    notebook(folder / "bob_456" / "00_example-Copy1.ipynb")
    (folder / "carol_789").mkdir()
    notebook(folder / "=2+5+cmd.ipynb", omit={"add_one"})
    (folder / "dave.ipynb").symlink_to(folder / "nowhere.ipynb")
    (folder / "notes.txt").write_text("grade these by Friday")
    (folder / ".ipynb_checkpoints").mkdir()
    notebook(folder / ".ipynb_checkpoints" / "00_example-checkpoint.ipynb")
    (folder / "results").mkdir()
    return folder


# ---------------------------------------------------------------- fast: finding the submissions, the CSV


def test_each_student_folder_is_one_submission_and_everything_else_is_skipped_with_its_reason(tmp_path):
    folder = lms_export(tmp_path / "class")
    submissions, skipped = find_submissions(folder, folder / "results")
    assert [(s.student, str(s.notebook.relative_to(folder))) for s in submissions] == [
        ("=2+5+cmd", "=2+5+cmd.ipynb"),
        ("alice_123", "alice_123/00_example.ipynb"),
        ("erin_321", "erin_321/hand-in/00_example.ipynb"),
    ]
    assert [str(item) for item in skipped] == SKIPPED


def test_a_notebook_and_a_folder_claiming_the_same_student_name_keep_the_first(tmp_path):
    notebook(tmp_path / "alice.ipynb")
    (tmp_path / "alice").mkdir()
    notebook(tmp_path / "alice" / "00_example.ipynb")
    submissions, skipped = find_submissions(tmp_path, tmp_path / "results")
    assert [str(s.notebook.relative_to(tmp_path)) for s in submissions] == ["alice/00_example.ipynb"]  # DIR's order
    assert [str(item) for item in skipped] == ["alice.ipynb: its student name `alice` is taken by alice/"]


def test_the_csv_gives_each_tests_maximum_a_reason_per_row_and_never_starts_a_formula(tmp_path):
    path = tmp_path / "scores.csv"
    (tmp_path / "scores.csv.tmp").write_text("someone else's")
    maxima = {"test_a": 1, "test_b": 2}
    write_csv(
        path,
        [
            {"student": "alice", "notebook": "alice/a.ipynb", "score": 3, "max_score": 3, "reason": ""}
            | {"tests": {"test_a": 1, "test_b": 2}, "max_points": maxima},
            {"student": "=2+5+cmd", "notebook": "@SUM(A1).ipynb", "score": 1, "max_score": 3}
            | {"reason": "-b: +1\tleft", "tests": {"test_a": 1, "test_b": 0}, "max_points": maxima},
            {"student": "bob", "notebook": "bob.ipynb", "score": "", "max_score": "", "reason": "grading failed"}
            | {"tests": {}, "max_points": {}},
        ],
    )
    assert path.read_bytes() == (
        b"student,notebook,score,max_score,reason,test_a,test_b\r\n"
        b"max points,,3,3,,1,2\r\n"
        b"alice,alice/a.ipynb,3,3,,1,2\r\n"
        b"'=2+5+cmd,'@SUM(A1).ipynb,1,3,'-b: +1\tleft,1,0\r\n"
        b"bob,bob.ipynb,,,grading failed,,\r\n"
    )
    assert (tmp_path / "scores.csv.tmp").read_text() == "someone else's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.csv", "scores.csv.tmp"]  # no temporary file left


# ---------------------------------------------------------------- slow: grading the folder


@pytest.mark.slow
def test_batch_grades_an_lms_export_lists_what_it_skipped_and_resumes(tmp_path, capsys):
    folder = lms_export(tmp_path / "class")
    command = ["batch", str(folder), "--assignment", "00_example", "--tests-dir", str(ASSIGNMENTS), "--quiet"]
    assert main(command + LIMITS_ARGS) == 0
    printed = capsys.readouterr().out.splitlines()
    results = folder / "results"
    assert printed == [
        *(f"skipped {line}" for line in SKIPPED),
        f"3 graded, 6 skipped, 0 failed; scores in {results / 'scores.csv'}",
        f"What was skipped, and why: {results / 'scores.skipped.txt'}",
    ]
    assert (results / "scores.skipped.txt").read_text().splitlines() == SKIPPED
    assert sorted(p.name for p in results.glob("*.json")) == ["=2+5+cmd.json", "alice_123.json", "erin_321.json"]

    rows = list(csv.reader((results / "scores.csv").open(newline="")))
    header, maxima, *students = rows
    assert header[:5] == ["student", "notebook", "score", "max_score", "reason"]
    assert header[5].startswith("test_visible.py::test_add_one")
    assert maxima[:5] == ["max points", "", str(MAX_SCORE), str(MAX_SCORE), ""]
    assert sum(float(points) for points in maxima[5:]) == MAX_SCORE
    assert [row[:4] for row in students] == [
        ["'=2+5+cmd", "'=2+5+cmd.ipynb", "7", "9"],  # without add_one, worth 2
        ["alice_123", "alice_123/00_example.ipynb", "9", "9"],
        ["erin_321", "erin_321/hand-in/00_example.ipynb", "8", "9"],  # a wrong count, worth 1
    ]
    assert [row[4] for row in students] == [  # the first lost point's reason
        "add_one adds one to every element: the notebook does not define `add_one`",
        "",
        "count returns how many items a list holds, as an int: count is wrong for a list of 7",
    ]
    assert not [cell for row in rows for cell in row if cell.startswith(FORMULA_STARTS)]

    assert main(command + LIMITS_ARGS) == 0  # nothing changed: nothing is graded again
    assert "3 graded (3 up to date, not graded again), 6 skipped, 0 failed" in capsys.readouterr().out
