"""`grader batch`: every notebook of a folder, in parallel, one results file each plus a CSV of scores.

The folder holds one notebook per student, directly (`alice.ipynb`, the row is `alice`) or in a folder of
the student's own, as a learning platform's export lays it out (`alice_123/02_sampling.ipynb`, the row is
`alice_123`; a notebook may lie deeper in it). Whatever cannot be graded as one student's notebook (a
folder with no notebook or with several, a file that cannot be read, a file that is not a notebook, the
results folder) is skipped, with the reason, and listed beside the CSV.

Resumable: a notebook whose results file is newer than it and was made from the same notebook path by the
same tests, grader version and limits (the fingerprint in the file's extra_data) is not graded again. One
bad notebook never stops the batch: whatever goes wrong is in its own results file or its row's reason.

The CSV is a spreadsheet's table: a header row (student, notebook, score, max_score, reason, then one
column per test), then a `max points` row giving each numeric column's maximum, then one row per student.
When the assignment asks written questions, `answers.csv` beside it holds every student's answers, for the
teaching assistants to grade by hand (grader/answers.py).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from course.kit import write_atomically
from grader import __version__
from grader.answers import questions, write_answers
from grader.errors import GraderError
from grader.identity import Limits
from grader.results import printable
from grader.runner import grade, test_files
from grader.sandbox import Zygote

MAX_ROW_LABEL = "max points"
REASON_LENGTH = 100
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet may run as a formula (OWASP, CSV injection)


@dataclass(frozen=True)
class Submission:
    student: str  # the row's name: the student's folder, or the notebook's stem when it lies directly in DIR
    notebook: Path


@dataclass(frozen=True)
class Skipped:
    name: str  # as it appears in DIR
    reason: str

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"


@dataclass
class Batch:
    rows: list[dict]  # one per submission: student, notebook, score, max_score, tests, max_points, reason
    skipped: list[Skipped]
    graded_now: int  # how many notebooks were graded in this run; the others' results were current
    csv_path: Path
    skipped_path: Path
    answers_path: Path | None = None  # the written answers (grader/answers.py), when the assignment asks any

    @property
    def failed(self) -> list[dict]:
        return [row for row in self.rows if row["score"] == ""]

    def summary(self) -> str:
        current = len(self.rows) - self.graded_now
        kept = f" ({current} up to date, not graded again)" if current else ""
        return (
            f"{len(self.rows) - len(self.failed)} graded{kept}, {len(self.skipped)} skipped, "
            f"{len(self.failed)} failed; scores in {self.csv_path}"
            + (f", written answers in {self.answers_path}" if self.answers_path else "")
        )


def fingerprint(assignment: Path, limits: Limits) -> str:
    """What the results depend on besides the notebook: the tests, the grader's version, the limits."""
    digest = hashlib.sha256(f"{__version__} {sorted(asdict(limits).items())}".encode())
    for path in sorted(Path(assignment).glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def is_current(results_path: Path, notebook: str, modified: float, expected: str) -> bool:
    try:
        if results_path.stat().st_mtime < modified:
            return False
        extra = json.loads(results_path.read_text()).get("extra_data", {})
        return extra.get("fingerprint") == expected and extra.get("notebook") == notebook
    except (OSError, ValueError, AttributeError):
        return False


def find_submissions(folder: Path, results_dir: Path) -> tuple[list[Submission], list[Skipped]]:
    """One submission per student folder or notebook directly in `folder`; everything else, skipped and why."""
    submissions: list[Submission] = []
    skipped: list[Skipped] = []
    taken: dict[str, str] = {}  # student name -> the entry that claimed it
    for entry in sorted(folder.iterdir()):
        label = f"{entry.name}/" if entry.is_dir() else entry.name
        found = _submission(entry, results_dir)
        if isinstance(found, str):
            skipped.append(Skipped(label, found))
        elif found.student in taken:
            skipped.append(Skipped(label, f"its student name `{found.student}` is taken by {taken[found.student]}"))
        else:
            taken[found.student] = label
            submissions.append(found)
    return submissions, skipped


def _submission(entry: Path, results_dir: Path) -> Submission | str:
    """The entry's submission, or why it is not one."""
    if entry.name.startswith("."):
        return "hidden (the name starts with a dot)"
    if entry.is_dir():
        if entry.resolve() == results_dir.resolve():
            return "the results folder"
        notebooks = sorted(
            p for p in entry.rglob("*.ipynb") if not any(part.startswith(".") for part in p.relative_to(entry).parts)
        )
        if not notebooks:
            return "no notebook (.ipynb) in this folder"
        if len(notebooks) > 1:
            listed = ", ".join(str(p.relative_to(entry)) for p in notebooks)
            return f"{len(notebooks)} notebooks in this folder ({listed}): leave one"
        notebook, student = notebooks[0], entry.name
    elif entry.suffix == ".ipynb":
        notebook, student = entry, entry.stem
    else:
        return "not a notebook (.ipynb)"
    problem = _why_unreadable(notebook)
    if problem is None:
        return Submission(student, notebook)
    return f"{notebook.relative_to(entry) if entry.is_dir() else 'it'} {problem}"


def _why_unreadable(path: Path) -> str | None:
    if not path.is_file():
        return "is not a file (a broken link?)"
    try:
        with path.open("rb") as file:
            file.read(1)
    except OSError as error:
        return f"cannot be read ({error.strerror})"
    return None


def run_batch(
    folder: Path,
    assignment: Path,
    *,
    jobs: int = 2,
    results_dir: Path | None = None,
    csv_path: Path | None = None,
    limits: Limits = Limits(),
    progress: bool = True,
) -> Batch:
    """Grade every student's notebook in `folder`; write the CSV and the list of what was skipped beside it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GraderError(f"no folder at {folder}")
    test_files(assignment)  # a usage mistake stops here, before anything is graded
    results_dir = Path(results_dir) if results_dir else folder / "results"
    submissions, skipped = find_submissions(folder, results_dir)
    if not submissions:
        raise GraderError(f"no notebooks (*.ipynb) in {folder} or its subfolders")
    results_dir.mkdir(parents=True, exist_ok=True)
    current = fingerprint(assignment, limits)
    tasks = [(s, str(s.notebook.relative_to(folder)), results_dir / f"{s.student}.json") for s in submissions]
    to_grade = [task for task in tasks if not is_current(task[2], task[1], task[0].notebook.stat().st_mtime, current)]
    errors: dict[str, str] = {}
    if to_grade:  # run as root, no worker sees the batch's notebooks or results (nor the tests, nor the solutions)
        errors = _grade_in_parallel(to_grade, assignment, limits, current, jobs, progress, hidden=(folder, results_dir))
    rows = [_row(s.student, name, path, errors.get(s.student)) for s, name, path in tasks]
    csv_path = Path(csv_path) if csv_path else results_dir / "scores.csv"
    skipped_path = csv_path.with_name(f"{csv_path.stem}.skipped.txt")
    write_csv(csv_path, rows)
    write_atomically(skipped_path, "".join(f"{item}\n" for item in skipped))
    asked = questions(assignment)
    answers_path = csv_path.with_name("answers.csv") if asked else None
    if asked:  # the written answers, for the teaching assistants to grade by hand
        write_answers(answers_path, [(s.student, s.notebook) for s in submissions], asked)
    return Batch(rows, skipped, len(to_grade), csv_path, skipped_path, answers_path)


def _grade_in_parallel(tasks, assignment, limits, current, jobs, progress, hidden) -> dict[str, str]:
    """`jobs` threads, each waiting on one grading process at a time: the processes, forked by the zygote, do the work.
    Returns why grading failed, by student, for the notebooks it failed on."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    errors = {}
    with Zygote() as zygote, ThreadPoolExecutor(jobs) as pool:
        work = [(*task, assignment, limits, current, zygote, hidden) for task in tasks]
        bar = tqdm(total=len(work), unit="notebook", disable=not progress or None, desc="grading")
        for student, error in pool.map(_grade_one, work):
            if error:
                errors[student] = error
            bar.update()
        bar.close()
    return errors


def _grade_one(task) -> tuple[str, str | None]:
    submission, name, results_path, assignment, limits, current, zygote, hidden = task
    try:
        grade(
            submission.notebook,
            assignment,
            results_path=results_path,
            limits=limits,
            zygote=zygote,
            hidden=hidden,
            extra_data={"fingerprint": current, "notebook": name, "student": submission.student},
        )
    except Exception as error:  # a bug of ours must not stop the batch: the row says so
        reason = f"grading failed ({type(error).__name__}: {error})"
        print(f"grader batch: {printable(f'{name}: {reason}')}", flush=True)
        return submission.student, reason
    return submission.student, None


def _row(student: str, notebook: str, results_path: Path, error: str | None) -> dict:
    row = {"student": student, "notebook": notebook, "score": "", "max_score": "", "tests": {}, "max_points": {}}
    try:
        results = json.loads(results_path.read_text())
    except (OSError, ValueError):
        return {**row, "reason": error or "grading failed: no results file"}
    tests = results["tests"]
    return {
        **row,
        "score": results["score"],
        "max_score": results["max_score"],
        "tests": {_test_id(t): t["score"] for t in tests},
        "max_points": {_test_id(t): t["max_score"] for t in tests},
        "reason": _reason(results),
    }


def _test_id(test: dict) -> str:
    return test.get("extra_data", {}).get("test", test["name"])


def _reason(results: dict) -> str:
    """Why points were lost, in a few words: the notebook's problem when it scored nothing, else the first lost test's."""
    if results["score"] >= results["max_score"]:
        return ""
    if results["score"] == 0 and results.get("output"):
        return _shorten(results["output"])
    lost = next(t for t in results["tests"] if t["score"] < t["max_score"])
    return _shorten(f"{lost['name']}: {lost['output'] or lost['status']}")


def _shorten(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= REASON_LENGTH else line[: REASON_LENGTH - 1] + "…"


def spreadsheet_safe(cell):
    """A text cell that a spreadsheet would run as a formula gets a leading quote; numbers stay numbers."""
    return f"'{cell}" if isinstance(cell, str) and cell.startswith(FORMULA_STARTS) else cell


def write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(name for row in rows for name in row["tests"]))
    max_points = {name: points for row in rows for name, points in row["max_points"].items()}
    max_score = next((row["max_score"] for row in rows if row["max_score"] != ""), "")
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    lines = [
        ["student", "notebook", "score", "max_score", "reason", *columns],
        [MAX_ROW_LABEL, "", max_score, max_score, "", *(max_points[c] for c in columns)],
        *(
            [row["student"], row["notebook"], row["score"], row["max_score"], row["reason"]]
            + [row["tests"].get(c, "") for c in columns]
            for row in rows
        ),
    ]
    writer.writerows([spreadsheet_safe(cell) for cell in line] for line in lines)
    write_atomically(path, table.getvalue())
