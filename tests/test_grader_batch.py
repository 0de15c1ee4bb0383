"""`grader batch` on a folder as a learning platform exports it, and what a hostile folder holds.

Every student is one row, graded, failed or skipped with the reason; links are never followed (a linked
notebook, a linked student folder, a folder inside a student's that is a link, a link put in place after the
folder was searched); FIFOs are refused without blocking; a hard link is a regular file and is graded (its
content is the file's own; making one needs rights on the file it shares). Whatever the names, messages and
answers hold, every table is written, with their text escaped. The LMS files are read back as Canvas's
gradebook importer and Moodle's grade importers read them.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import shutil
import sys
import threading
import unicodedata
from contextlib import contextmanager, redirect_stdout
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest

from grader import batch
from grader import results as results_file
from grader.batch import (
    GRADED,
    SKIPPED,
    Identity,
    Row,
    canvas_table,
    find_students,
    identify,
    moodle_table,
    read_roster,
    read_submission,
    run_batch,
    scores_table,
    table_paths,
)
from grader.cli import main
from grader.errors import GraderError
from grader.results import FORMULA_STARTS, ExpectedTest, Outcome

sys.path.insert(0, str(Path(__file__).parent / "grader_fixtures"))
from submissions import ASSIGNMENTS, SOLUTION, notebook  # noqa: E402

LIMITS_ARGS = ["--timeout", "3"]
LATIN1_FOLDER = b"caf\xe9_9"  # a folder name that is not UTF-8, as an archive made on another system gives it
LATIN1_STUDENT = os.fsdecode(LATIN1_FOLDER)  # how Python names it: caf\udce9_9
HOSTILE_MESSAGE = "\\ud800 \\x1b[2J boom"  # as the notebook's source writes it: a lone surrogate and an ESC
HOSTILE_ANSWER = "Because\x1b[2J the bar\u202e moves\x00 here\r\nand over\rwritten."
ESCAPED_ANSWER = "Because\\x1b[2J the bar\\u202e moves\\x00 here\nand over\\rwritten."
WHY = 'title = "Example"\nsummary = "an example"\ngraded = ["greedy"]\n\n[[questions]]\nname = "why"\npoints = 2\nquestion = "Why?"\n'

# The students of `class_folder`, in the folder's order: (student, the notebook to grade, or why there is none)
STUDENTS = [
    ("=2+5+cmd", "=2+5+cmd.ipynb"),
    ("Bob Jones_77", "Bob Jones_77_assignsubmission_file_/00_example.ipynb"),  # Moodle's folder, participant 77
    ("alice_123", "alice_123_456_00_example.ipynb"),  # Canvas's file names; her PDF is hers too, and not a notebook
    ("bob_456", "2 notebooks (bob_456/00_example-Copy1.ipynb, bob_456/00_example.ipynb): leave one"),
    (LATIN1_STUDENT, f"{LATIN1_STUDENT}/00_example.ipynb"),
    ("carol_789", "no notebook (.ipynb) in carol_789/"),
    ("dave", "dave.ipynb is a link, and links are never followed"),  # to nothing
    ("erin", "erin/hand-in/00_example.ipynb"),
    ("eve_1", "eve_1 is a link, and links are never followed"),  # a linked student folder
    ("fifo", "fifo.ipynb is not a regular file"),
    ("hardy", "hardy.ipynb"),  # a hard link to a notebook outside the folder: a regular file
    ("mallory", "mallory.ipynb is a link, and links are never followed"),  # to the solution
    ("notes", "notes.txt is not a notebook (.ipynb)"),
    ("trent_2", "no notebook (.ipynb) in trent_2/: trent_2/hand-in is a link, and links are never followed"),
]


def with_cells(path: Path, *markdown: str) -> Path:
    """The notebook at `path` with markdown cells added at its end."""
    nb = nbformat.read(path, as_version=4)
    nb.cells += [nbformat.v4.new_markdown_cell(text) for text in markdown]
    nbformat.write(nb, path)
    return path


def class_folder(root: Path) -> Path:
    """A platform's export with the hostile entries of STUDENTS, an earlier run's results and Jupyter's checkpoints."""
    folder, outside = root / "class", root / "outside"
    folder.mkdir()
    outside.mkdir()
    notebook(outside / "00_example.ipynb")
    notebook(folder / "=2+5+cmd.ipynb", omit={"add_one"})
    with_cells(folder / "=2+5+cmd.ipynb", "#### Answer: why\n")
    moodle = folder / "Bob Jones_77_assignsubmission_file_"
    moodle.mkdir()
    notebook(moodle / "00_example.ipynb", add_one=f"def add_one(t):\n    raise ValueError('{HOSTILE_MESSAGE}')")
    with_cells(moodle / "00_example.ipynb", f"#### Answer: why\n{HOSTILE_ANSWER}")
    with_cells(notebook(folder / "alice_123_456_00_example.ipynb"), "#### Answer: why\n_Write your answer here._")
    (folder / "alice_123_456_report.pdf").write_bytes(b"%PDF-1.4")
    (folder / "bob_456").mkdir()
    notebook(folder / "bob_456" / "00_example.ipynb")
    notebook(folder / "bob_456" / "00_example-Copy1.ipynb")
    os.mkdir(os.fsencode(folder) + b"/" + LATIN1_FOLDER)
    notebook(folder / LATIN1_STUDENT / "00_example.ipynb")
    (folder / "carol_789").mkdir()
    (folder / "dave.ipynb").symlink_to(folder / "nowhere.ipynb")
    (folder / "erin" / "hand-in").mkdir(parents=True)
    notebook(folder / "erin" / "hand-in" / "00_example.ipynb", count="def count(xs):\n    return 0")
    (folder / "eve_1").symlink_to(outside, target_is_directory=True)
    os.mkfifo(folder / "fifo.ipynb")
    os.link(outside / "00_example.ipynb", folder / "hardy.ipynb")
    (folder / "mallory.ipynb").symlink_to(SOLUTION)
    (folder / "notes.txt").write_text("grade these by Friday")
    (folder / "trent_2").mkdir()
    (folder / "trent_2" / "hand-in").symlink_to(outside, target_is_directory=True)
    (folder / ".ipynb_checkpoints").mkdir()
    notebook(folder / ".ipynb_checkpoints" / "00_example-checkpoint.ipynb")
    (folder / "results").mkdir()
    return folder


@contextmanager
def opened(folder: Path):
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)


def unseen(text: str) -> list[str]:
    """The characters of `text` a terminal or a spreadsheet would act on, and lone surrogates, which UTF-8 cannot hold."""
    return [c for c in text if c not in "\n\t" and unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs")]


# ---------------------------------------------------------------- fast: finding the students


def test_each_student_is_found_once_with_their_one_notebook_or_why_there_is_none(tmp_path):
    folder = class_folder(tmp_path)
    with opened(folder) as root:
        students = find_students(root, [folder / "results"])
    found = [(s.identity.student, "/".join(s.notebook) if s.notebook else s.reason) for s in students]
    assert found == STUDENTS  # no row for .ipynb_checkpoints, nor for the results folder


def test_a_notebook_and_a_folder_of_the_same_student_are_one_student_with_two_notebooks(tmp_path):
    notebook(tmp_path / "alice.ipynb")
    (tmp_path / "alice").mkdir()
    notebook(tmp_path / "alice" / "00_example.ipynb")
    with opened(tmp_path) as root:
        students = find_students(root, [])
    assert [(s.identity.student, s.notebook, s.reason) for s in students] == [
        ("alice", None, "2 notebooks (alice/00_example.ipynb, alice.ipynb): leave one")
    ]


def test_a_student_folder_is_searched_within_bounds(tmp_path, monkeypatch):
    monkeypatch.setattr(batch, "MAX_FOLDER_ENTRIES", 5)
    monkeypatch.setattr(batch, "MAX_FOLDER_DEPTH", 3)
    (tmp_path / "wide").mkdir()
    for i in range(6):
        (tmp_path / "wide" / f"{i}.txt").write_text("")
    (tmp_path / "deep" / "a" / "b" / "c").mkdir(parents=True)
    notebook(tmp_path / "deep" / "a" / "b" / "c" / "00_example.ipynb")
    (tmp_path / "ok" / "a" / "b").mkdir(parents=True)
    notebook(tmp_path / "ok" / "a" / "b" / "00_example.ipynb")
    with opened(tmp_path) as root:
        students = find_students(root, [])
    assert [(s.identity.student, s.notebook or s.reason) for s in students] == [
        ("deep", "deep/ holds folders nested more than 3 deep: it was not searched"),
        ("ok", ("ok", "a", "b", "00_example.ipynb")),
        ("wide", "wide/ holds more than 5 files and folders: it was not searched"),
    ]


def test_the_batchs_own_tables_in_the_folder_are_no_students_on_a_rerun(tmp_path):
    folder = class_folder(tmp_path)
    tables = table_paths(folder / "scores.csv")  # `--csv DIR/scores.csv`: every table lands in DIR
    for path in tables.values():
        path.write_text("student\n")
    with opened(folder) as root:
        students = find_students(root, [folder / "results", *tables.values()])
    assert [s.identity.student for s in students] == [student for student, _ in STUDENTS]


@pytest.mark.parametrize(
    "name, is_folder, identity",
    [
        ("smithjohn_123456_7890123_07_greedy.ipynb", False, Identity("smithjohn_123456", "smithjohn", "123456", "canvas")),
        ("smithjohn_LATE_123456_7890124_07_greedy-1.ipynb", False, Identity("smithjohn_123456", "smithjohn", "123456", "canvas")),
        ("John Smith_4242_assignsubmission_file_", True, Identity("John Smith_4242", "John Smith", "4242", "moodle")),
        ("John Smith_4242_assignsubmission_file_02.ipynb", False, Identity("John Smith_4242", "John Smith", "4242", "moodle")),
        ("alice_123", True, Identity("alice_123", "alice_123")),
        ("alice.ipynb", False, Identity("alice", "alice")),
        ("alice.v2.ipynb", False, Identity("alice.v2", "alice.v2")),
    ],
)  # fmt: skip
def test_a_platforms_download_names_say_who_the_student_is(name, is_folder, identity):
    assert identify(name, is_folder) == identity


def test_a_link_put_in_place_after_the_search_is_not_followed(tmp_path):
    folder = class_folder(tmp_path)
    with opened(folder) as root:
        students = {s.identity.student: s for s in find_students(root, [folder / "results"])}
        erin, alice = students["erin"].notebook, students["alice_123"].notebook
        assert read_submission(root, erin) == (folder / "erin" / "hand-in" / "00_example.ipynb").read_bytes()
        shutil.rmtree(folder / "erin" / "hand-in")
        (folder / "erin" / "hand-in").symlink_to(tmp_path / "outside", target_is_directory=True)  # a folder on the way
        (folder / alice[0]).unlink()
        (folder / alice[0]).symlink_to(SOLUTION)  # the notebook itself
        for path, link in ((erin, "erin/hand-in"), (alice, alice[0])):
            with pytest.raises(OSError) as refused:
                read_submission(root, path)
            assert (refused.value.errno, refused.value.strerror) == (
                errno.ELOOP,
                f"{link} is a link, and links are never followed",
            )


def test_a_fifo_is_refused_without_blocking_and_a_file_is_read_within_its_bound(tmp_path):
    folder = class_folder(tmp_path)
    (folder / "big.ipynb").write_bytes(b"x" * 100)
    refused = []

    def read_the_fifo(root: int) -> None:
        try:
            read_submission(root, ("fifo.ipynb",))
        except OSError as error:
            refused.append(error.strerror)

    with opened(folder) as root:
        reader = threading.Thread(target=read_the_fifo, args=(root,), daemon=True)
        reader.start()
        reader.join(timeout=10)
        assert not reader.is_alive(), "opening the FIFO blocked"
        assert refused == ["fifo.ipynb is not a regular file"]
        assert read_submission(root, ("big.ipynb",), limit=10) == b"x" * 11  # enough to tell it is too large


def test_a_roster_that_is_not_one_is_refused_in_one_sentence(tmp_path):
    roster = tmp_path / "roster.csv"
    roster.write_text("name,email\nAlice,a@x.org\n")
    with pytest.raises(GraderError, match="is not a CSV file with the columns student, id and optionally name"):
        read_roster(roster)
    with pytest.raises(GraderError, match="cannot read the roster"):
        read_roster(tmp_path / "missing.csv")
    roster.write_text("student,id\nalice,a@x.org\n")
    assert read_roster(roster) == {"alice": Identity("alice", "", "a@x.org", "roster")}


def test_a_grading_that_fails_is_a_failed_row_every_table_is_written_and_a_rerun_grades_what_changed(
    tmp_path, monkeypatch
):
    """The grading itself replaced by a stand-in: it passes ann's one test and fails on bo with a message that
    no UTF-8 file can hold; the real grading of such messages is in the slow tests below."""
    folder = tmp_path / "class"
    folder.mkdir()
    notebook(folder / "ann.ipynb")
    notebook(folder / "bo.ipynb")
    graded = []

    def stand_in(source, assignment, *, results_path, extra_data, **_):
        graded.append(extra_data["student"])
        if extra_data["student"] == "bo":
            raise RuntimeError("the worker is gone \ud800\x1b[2J")
        test = ExpectedTest("test_visible.py::test_a", "test_a", "a works", 1, False)
        results_file.write(
            results_path, {**results_file.build([test], {test.id: Outcome(True)}, "", 0.1), "extra_data": extra_data}
        )

    monkeypatch.setattr(batch, "grade", stand_in)
    monkeypatch.setattr(batch, "Zygote", lambda: SimpleNamespace(close=lambda: None))
    first = run_batch(folder, ASSIGNMENTS / "00_example", progress=False)
    assert [(row.student, row.status, row.score, row.reason) for row in first.rows] == [
        ("ann", GRADED, 1, ""),
        ("bo", "failed", "", "grading failed (RuntimeError: the worker is gone \\ud800\\x1b[2J)"),
    ]
    assert (folder / "results" / "scores.csv").read_text(encoding="utf-8").splitlines()[1:] == [
        "ann,,ann.ipynb,1,1,graded,",
        "bo,,bo.ipynb,,,failed,grading failed (RuntimeError: the worker is gone \\ud800\\x1b[2J)",
    ]
    notebook(folder / "bo.ipynb", count="def count(xs):\n    return 0")  # bo changes his notebook; ann does not
    second = run_batch(folder, ASSIGNMENTS / "00_example", progress=False)
    assert graded == ["ann", "bo", "bo"] and second.graded_now == 1  # bo again: his results file never came
    assert second.summary() == "2 students: 1 graded (1 up to date, not graded again), 0 skipped, 1 failed"


# ---------------------------------------------------------------- fast: the tables, read back as their formats define


HOSTILE_NAME = "=cmd|' /C calc'!A0\x1b[2J\u202e\udce9"


def hostile_rows() -> list[Row]:
    return [
        Row(Identity("amy_11", "amy", "11", "canvas"), GRADED, "", "amy_11_5_02.ipynb", 9, 9),
        Row(Identity("Ben Ng_5", "Ben Ng", "5", "moodle"), GRADED, "count: wrong \x1b[31m\ud800", "Ben Ng_5/02.ipynb", 7.5, 9),
        Row(Identity("cy", "Cy Roe", "cy@uni.edu", "roster"), SKIPPED, "2 notebooks (cy/a.ipynb, cy/b.ipynb): leave one"),
        Row(Identity(HOSTILE_NAME, HOSTILE_NAME), SKIPPED, f"{HOSTILE_NAME} is a link, and links are never followed"),
    ]  # fmt: skip


def canvas_import(text: str) -> tuple[list[str], dict[str, str], list[dict]]:
    """What Canvas's GradebookImporter (app/models/gradebook_importer.rb) reads: a header whose columns are
    /Student/, /ID/, /SIS User ID/, /SIS Login ID/ and a last student column /Section/, then assignment columns
    (trailing Current/Final Score, Points and Grade columns dropped); a row whose first cell matches
    /Points Possible/ gives each assignment's points; rows only of empty or Muted cells are ignored; every other
    row is a student. Returns (assignments, points possible by assignment, students)."""
    header, *rows = list(csv.reader(io.StringIO(text)))
    assert len(header) > 3 and re.search("Student", header[0]) and re.search("ID", header[1]), header
    assert re.search(r"SIS\s+User\s+ID", header[2]) and re.search(r"SIS\s+Login\s+ID", header[3]), header
    student_columns = 6 if re.search(r"Root\s+Account", header[4]) else 5
    assert re.search("Section", header[student_columns - 1]), "Canvas: Invalid header row"
    assignments = header[student_columns:]
    while assignments and re.search(
        "Current Score|Current Points|Current Grade|Final Score|Final Points|Final Grade", assignments[-1]
    ):
        assignments.pop()  # fmt: skip
    points, students = {}, []
    for row in rows:
        if re.search("Points Possible", row[0]):
            points = dict(zip(assignments, row[student_columns:]))
        elif not all(re.fullmatch("(?i)(Muted|)", cell.strip()) for cell in row):
            grades = dict(zip(assignments, row[student_columns:]))
            students.append({"Student": row[0], "ID": row[1], "SIS Login ID": row[3], **grades})
    return assignments, points, students


def moodle_worksheet_import(text: str) -> dict[str, tuple[float | None, str]]:
    """What Moodle's grading worksheet import (mod/assign/feedback/offline/importgradeslib.php) reads: it fails
    without the columns Identifier, Grade and Last modified (grade); a row's participant is its Identifier after
    "Participant " (a row naming no participant is ignored); Feedback comments is the feedback. Also checks what
    the gradebook's CSV import (grade/import/csv) asks of a grade: a number, or empty for no grade."""
    columns, *rows = list(csv.reader(io.StringIO(text)))
    identifier, grade, modified = (columns.index(name) for name in ("Identifier", "Grade", "Last modified (grade)"))
    feedback = columns.index("Feedback comments")
    found = {}
    for row in rows:
        datetime.strptime(row[modified], "%Y-%m-%d %H:%M:%S")  # what PHP's strtotime reads
        value = None if row[grade] in ("", "-") else float(row[grade])
        if row[identifier].startswith("Participant "):
            found[row[identifier].removeprefix("Participant ")] = (value, row[feedback])
    return found


def test_the_canvas_file_is_one_row_per_student_after_a_points_possible_row():
    assignments, points, students = canvas_import(canvas_table(hostile_rows(), "Sampling (4567)"))
    assert assignments == ["Sampling (4567)"] and points == {"Sampling (4567)": "9"}
    assert students == [
        {"Student": "amy", "ID": "11", "SIS Login ID": "", "Sampling (4567)": "9"},  # Canvas matches her by ID
        {"Student": "Ben Ng", "ID": "", "SIS Login ID": "", "Sampling (4567)": "7.5"},  # by name: no Canvas id
        {"Student": "Cy Roe", "ID": "", "SIS Login ID": "cy@uni.edu", "Sampling (4567)": ""},  # not graded: no change
        {"Student": "'=cmd|' /C calc'!A0\\x1b[2J\\u202e\\udce9", "ID": "", "SIS Login ID": "", "Sampling (4567)": ""},
    ]


def test_the_moodle_worksheet_gives_each_participant_a_number_or_no_grade_with_the_reason():
    text = moodle_table(hostile_rows(), datetime(2025, 6, 3, 10, 15))
    assert moodle_worksheet_import(text) == {"5": (7.5, "count: wrong \\x1b[31m\\ud800")}
    by_identifier = {row["Identifier"]: row for row in csv.DictReader(io.StringIO(text))}  # the gradebook's import
    assert by_identifier["cy@uni.edu"]["Grade"] == ""  # Identifier mapped to the email address: no grade, and why
    assert (
        by_identifier["cy@uni.edu"]["Feedback comments"]
        == "not graded: 2 notebooks (cy/a.ipynb, cy/b.ipynb): leave one"
    )
    assert by_identifier[""]["Full name"] == "'=cmd|' /C calc'!A0\\x1b[2J\\u202e\\udce9"  # no identifier: ignored


def test_every_table_escapes_student_text_and_starts_no_formula():
    rows = hostile_rows()
    for text in (scores_table(rows), canvas_table(rows, "02"), moodle_table(rows, datetime(2025, 6, 3))):
        text.encode("utf-8")  # a lone surrogate would make this, and so the file's writing, fail
        assert unseen(text.replace("\r\n", "")) == []
        assert not [cell for row in csv.reader(io.StringIO(text)) for cell in row if cell.startswith(FORMULA_STARTS)]
    assert list(csv.reader(io.StringIO(scores_table(rows)))) == [
        ["student", "id", "notebook", "score", "max_score", "status", "reason"],
        ["amy_11", "11", "amy_11_5_02.ipynb", "9", "9", "graded", ""],
        ["Ben Ng_5", "5", "Ben Ng_5/02.ipynb", "7.5", "9", "graded", "count: wrong \\x1b[31m\\ud800"],
        ["cy", "cy@uni.edu", "", "", "", "skipped", "2 notebooks (cy/a.ipynb, cy/b.ipynb): leave one"],
        ["'=cmd|' /C calc'!A0\\x1b[2J\\u202e\\udce9", "", "", "", "", "skipped"]
        + ["'=cmd|' /C calc'!A0\\x1b[2J\\u202e\\udce9 is a link, and links are never followed"],
    ]


# ---------------------------------------------------------------- slow: grading the folder


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory):
    """`grader batch` on class_folder with written questions, a roster and both platforms' files, run twice."""
    root = tmp_path_factory.mktemp("batch")
    tests = root / "tests" / "00_example"
    shutil.copytree(ASSIGNMENTS / "00_example", tests)
    (tests / "assignment.toml").write_text(WHY)  # its manifest, with a written question
    folder = class_folder(root)
    roster = root / "roster.csv"
    roster.write_text("student,id,name\nerin,erin@uni.edu,Erin Example\nzoe,zoe@uni.edu,Zoe Absent\n")
    command = ["batch", str(folder), "--assignment", "00_example", "--tests-dir", str(tests.parent), "--quiet"]
    command += ["--lms", "canvas", "--lms", "moodle", "--roster", str(roster), *LIMITS_ARGS]
    printed = io.StringIO()
    with redirect_stdout(printed):
        assert main(command) == 0
        first = printed.getvalue()
        assert main(command) == 0  # nothing changed: nothing is graded again
    return folder / "results", first, printed.getvalue()[len(first) :]


ADD_ONE_LINE = " | (at test_visible.py line 12: out = student.add_one(torch.tensor([1.0, 2.5])))"
SCORES = [  # student, id, score, status, reason: what scores.csv says of each student
    ("'=2+5+cmd", "", "7", GRADED, "add_one adds one to every element: the notebook does not define `add_one`" + ADD_ONE_LINE),
    ("Bob Jones_77", "77", "7", GRADED, f"add_one adds one to every element: add_one raised ValueError: {HOSTILE_MESSAGE} (cell 2, line 2)" + ADD_ONE_LINE),
    ("alice_123", "123", "9", GRADED, ""),
    ("bob_456", "", "", SKIPPED, STUDENTS[3][1]),
    ("caf\\udce9_9", "", "9", GRADED, ""),
    ("carol_789", "", "", SKIPPED, STUDENTS[5][1]),
    ("dave", "", "", SKIPPED, STUDENTS[6][1]),
    ("erin", "erin@uni.edu", "8", GRADED, "count returns how many items a list holds, as an int: count is wrong for a list of 7"),
    ("eve_1", "", "", SKIPPED, STUDENTS[8][1]),
    ("fifo", "", "", SKIPPED, STUDENTS[9][1]),
    ("hardy", "", "9", GRADED, ""),
    ("mallory", "", "", SKIPPED, STUDENTS[11][1]),
    ("notes", "", "", SKIPPED, STUDENTS[12][1]),
    ("trent_2", "", "", SKIPPED, STUDENTS[13][1]),
    ("zoe", "zoe@uni.edu", "", SKIPPED, "no submission: nothing in the folder is theirs"),
]  # fmt: skip


@pytest.mark.slow
def test_batch_writes_one_row_per_student_with_the_whole_reason(batch_run):
    results, _, _ = batch_run
    header, *rows = list(csv.reader((results / "scores.csv").open(newline="", encoding="utf-8")))
    assert header == ["student", "id", "notebook", "score", "max_score", "status", "reason"]
    assert [(r[0], r[1], r[3], r[5], r[6]) for r in rows] == SCORES  # the whole reason, on one line
    assert {r[4] for r in rows if r[5] == GRADED} == {"9"}


@pytest.mark.slow
def test_batch_prints_who_was_not_graded_and_where_each_file_went(batch_run):
    results, first, second = batch_run
    not_graded = [f"{SKIPPED} {student}: {reason}" for student, _, _, status, reason in SCORES if status == SKIPPED]
    lines = first.splitlines()
    assert lines[: len(not_graded)] == not_graded
    assert lines[len(not_graded)] == "15 students: 6 graded, 9 skipped, 0 failed"
    assert lines[-1] == (
        f"Written to {results}: scores.csv (a row per student), scores-detail.csv (a row per test), answers.csv "
        "(the written answers), scores-canvas.csv (for Canvas's grade import), scores-moodle.csv (for Moodle's "
        "grading worksheet); a results file per graded student beside them"
    )
    assert "15 students: 6 graded (6 up to date, not graded again), 9 skipped, 0 failed" in second.splitlines()
    assert unseen(first) == []


@pytest.mark.slow
def test_batch_results_and_detail_hold_the_hostile_text_escaped(batch_run):
    results, _, _ = batch_run
    assert sorted(os.listdir(results)) == sorted(
        ["=2+5+cmd.json", "Bob Jones_77.json", "alice_123.json", f"{LATIN1_STUDENT}.json", "erin.json", "hardy.json"]
        + ["answers.csv", "scores.csv", "scores-detail.csv", "scores-canvas.csv", "scores-moodle.csv"]
    )
    bob = json.loads((results / "Bob Jones_77.json").read_text())
    assert unseen(json.dumps(bob, ensure_ascii=False)) == []
    assert any(f"ValueError: {HOSTILE_MESSAGE}" in test["output"] for test in bob["tests"])
    latin = json.loads((results / f"{LATIN1_STUDENT}.json").read_text())["extra_data"]
    assert latin["student"] == "caf\\udce9_9" and latin["notebook"] == "caf\\udce9_9/00_example.ipynb"
    detail = list(csv.DictReader((results / "scores-detail.csv").open(newline="", encoding="utf-8")))
    assert len(detail) == 6 * 7  # each graded student's 7 tests
    assert {row["student"] for row in detail} == {
        "'=2+5+cmd",
        "Bob Jones_77",
        "alice_123",
        "caf\\udce9_9",
        "erin",
        "hardy",
    }
    lost = [row for row in detail if row["status"] == "failed"]
    assert [(row["student"], row["test"], row["score"], row["max_score"]) for row in lost] == [
        ("'=2+5+cmd", "test_visible.py::test_add_one", "0", "2"),
        ("Bob Jones_77", "test_visible.py::test_add_one", "0", "2"),
        ("erin", "test_hidden.py::test_count", "0", "1"),
    ]


@pytest.mark.slow
def test_batch_answers_say_what_each_student_wrote_or_why_there_is_no_answer(batch_run):
    results, _, _ = batch_run
    rows = list(csv.reader((results / "answers.csv").open(newline="", encoding="utf-8")))
    assert rows == [
        ["student", "id", "why (2 points)"],
        ["question", "", "Why?"],
        ["'=2+5+cmd", "", "(no answer: the cell `#### Answer: why` is empty)"],
        ["Bob Jones_77", "77", ESCAPED_ANSWER],
        ["alice_123", "123", "(no answer: the answer is still the placeholder)"],
        ["caf\\udce9_9", "", "(no answer: the notebook has no markdown cell `#### Answer: why`)"],
        ["erin", "erin@uni.edu", "(no answer: the notebook has no markdown cell `#### Answer: why`)"],
        ["hardy", "", "(no answer: the notebook has no markdown cell `#### Answer: why`)"],
    ]


@pytest.mark.slow
def test_batch_platform_files_import_as_canvas_and_moodle_read_them(batch_run):
    results, _, _ = batch_run
    assignments, points, students = canvas_import((results / "scores-canvas.csv").read_text(encoding="utf-8"))
    assert assignments == ["00_example"] and points == {"00_example": "9"}
    assert [(s["Student"], s["ID"], s["SIS Login ID"], s["00_example"]) for s in students] == [
        ("'=2+5+cmd", "", "", "7"),
        ("Bob Jones", "", "", "7"),
        ("alice", "123", "", "9"),
        ("bob_456", "", "", ""),
        ("caf\\udce9_9", "", "", "9"),
        ("carol_789", "", "", ""),
        ("dave", "", "", ""),
        ("Erin Example", "", "erin@uni.edu", "8"),
        ("eve_1", "", "", ""),
        ("fifo", "", "", ""),
        ("hardy", "", "", "9"),
        ("mallory", "", "", ""),
        ("notes", "", "", ""),
        ("trent_2", "", "", ""),
        ("Zoe Absent", "", "zoe@uni.edu", ""),
    ]
    worksheet = (results / "scores-moodle.csv").read_text(encoding="utf-8")
    participants = moodle_worksheet_import(worksheet)
    assert list(participants) == ["77"] and participants["77"][0] == 7.0
    assert participants["77"][1].startswith(
        f"add_one adds one to every element: add_one raised ValueError: {HOSTILE_MESSAGE}"
    )
    by_email = {row["Identifier"]: row for row in csv.DictReader(io.StringIO(worksheet)) if "@" in row["Identifier"]}
    assert {email: (row["Grade"], row["Maximum Grade"]) for email, row in by_email.items()} == {
        "erin@uni.edu": ("8", "9"),
        "zoe@uni.edu": ("", "9"),
    }
