"""`grader batch`: every student's notebook of a folder, graded in parallel, and the gradebook made of them.

What the folder holds. What a learning platform's "download all submissions" gives, or what a person put
there: one notebook per student, directly (`alice.ipynb`) or in a folder of the student's own
(`alice_123/NN_name.ipynb`, at any depth in it). Names that start with a dot (Jupyter's checkpoints,
.DS_Store) and the results folder are not submissions. A name in a platform's own pattern says who the
student is, and a student's several entries (a notebook and a PDF) are one student:
- Canvas, `login_[LATE_]USERID_SUBMISSIONID_FILE`: the student `login_USERID`, Canvas user id USERID;
- Moodle, `Full Name_PARTICIPANT_assignsubmission_TYPE_[FILE]` (a folder, or a file when the submissions were
  not downloaded in folders): the student `Full Name_PARTICIPANT`, Moodle participant identifier PARTICIPANT.
Any other name is the student itself (a folder's name, a file's stem). A roster (`--roster FILE`, a CSV with
the columns `student`, `id` and optionally `name`) gives students an identifier and a name, and puts in the
gradebook, skipped, those who submitted nothing. A student with no notebook, or several, is skipped, and why
is said; one bad notebook never stops the batch: what goes wrong is in its own results file or its row.

Links. A submission is a regular file inside the student's entry. Every file and folder is opened relative
to its opened parent, one name at a time, with O_NOFOLLOW (and O_DIRECTORY for folders): a link anywhere on
the way, a linked student folder, a linked notebook or a folder inside that is a link, is never followed,
even one put there after the folder was searched. FIFOs, sockets and devices are refused. Each notebook is
read once, at most course.notebook.DEFAULT_MAX_BYTES, and graded from those bytes. A hard link is a regular
file and is graded as one: it is a file's own content, not a path to follow, and making one needs rights on
the file it shares (the kernel's fs.protected_hardlinks).

Resumable: a notebook whose results file was made from the same bytes (their SHA-256), by the same tests,
grader version and limits (the fingerprint in the file's extra_data) is not graded again.

The tables, all beside scores.csv (default FOLDER/results/; every student text in them escaped by
grader.results.printable, no cell a formula):
- scores.csv: one row per student, graded, failed or skipped: student, id, notebook, score, max_score,
  status, reason (the whole reason, on one line);
- scores-detail.csv: one row per (graded student, test): student, id, test, name, score, max_score, status,
  feedback;
- answers.csv, when the assignment asks written questions (grader/answers.py);
- with `lms=("canvas",)`, scores-canvas.csv in Canvas's gradebook import format: the columns Student, ID,
  SIS User ID, SIS Login ID, Section and the assignment's, a Points Possible row, one row per student;
- with `lms=("moodle",)`, scores-moodle.csv in the format of Moodle's grading worksheet (Identifier,
  Full name, Grade, Maximum Grade, Last modified (grade), Feedback comments), which the assignment's "Upload
  grading worksheet" imports as is, and the gradebook's CSV import with its Identifier column mapped.
A student who was not graded has no grade in the platforms' files (Canvas leaves the grade as it was; Moodle's
worksheet gives the reason as feedback): the reason is in scores.csv.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import re
import stat
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path

from course.kit import write_atomically
from course.notebook import DEFAULT_MAX_BYTES, NotebookError, parse_notebook
from grader import __version__
from grader.answers import WrittenAnswer, answers_table, questions, read_answers
from grader.errors import GraderError
from grader.identity import Limits
from grader.results import csv_text, one_line, printable
from grader.runner import grade, test_files
from grader.sandbox import Zygote

GRADED, FAILED, SKIPPED = "graded", "failed", "skipped"
LMS_FORMATS = ("canvas", "moodle")
MAX_FOLDER_ENTRIES = 10_000  # files and folders searched in one student's folder
MAX_FOLDER_DEPTH = 16
MAX_LISTED = 10  # paths named in one reason
CANVAS_NAME = re.compile(r"(?P<name>[^_]+)_(?:LATE_)?(?P<id>\d+)_\d+_.")
MOODLE_NAME = re.compile(r"(?P<name>[^_]+)_(?P<id>\d+)_assignsubmission_")
FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC  # a FIFO must not block
SCORES_HEADER = ["student", "id", "notebook", "score", "max_score", "status", "reason"]
DETAIL_HEADER = ["student", "id", "test", "name", "score", "max_score", "status", "feedback"]
CANVAS_STUDENT_COLUMNS = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
MOODLE_HEADER = ["Identifier", "Full name", "Grade", "Maximum Grade", "Last modified (grade)", "Feedback comments"]


@dataclass(frozen=True)
class Identity:
    student: str  # unique in the batch: the gradebook's row, the results file's name
    name: str  # the student's name, for a platform's "Student" or "Full name" column
    id: str = ""  # the platform's identifier for the student, or the roster's
    source: str = ""  # where `id` comes from: "canvas" or "moodle" (the entry's name) or "roster"


@dataclass
class Entry:
    """One name in the batch folder: the notebooks it holds (each a path of names from the folder), or why none."""

    notebooks: list[tuple[str, ...]] = field(default_factory=list)
    why_none: str = ""


@dataclass
class Student:
    identity: Identity
    notebook: tuple[str, ...] | None  # the one notebook to grade, or None
    reason: str = ""  # why there is none to grade


@dataclass
class Row:
    """One student's line of the gradebook."""

    identity: Identity
    status: str  # graded, failed or skipped
    reason: str
    notebook: str = ""  # the graded notebook's path in the batch folder
    score: float | str = ""
    max_score: float | str = ""
    tests: list[dict] = field(default_factory=list)  # the results' entries, for the detail
    graded_now: bool = False  # graded in this run, not kept from an earlier one whose results were current

    @property
    def student(self) -> str:
        return self.identity.student


@dataclass
class Batch:
    rows: list[Row]
    results_dir: Path
    written: dict[str, Path]  # what each table is ("scores", "detail", "answers", "canvas", "moodle") -> its path

    def count(self, status: str) -> int:
        return sum(row.status == status for row in self.rows)

    @property
    def graded_now(self) -> int:
        return sum(row.graded_now for row in self.rows)

    def summary(self) -> str:
        graded = self.count(GRADED)
        current = sum(row.status == GRADED and not row.graded_now for row in self.rows)
        kept = f" ({current} up to date, not graded again)" if current else ""
        return (
            f"{len(self.rows)} students: {graded} graded{kept}, {self.count(SKIPPED)} skipped, "
            f"{self.count(FAILED)} failed"
        )

    def unidentified(self, platform: str) -> list[str]:
        """The students the platform's file gives no identifier: Canvas can only match them by name, Moodle not at all."""
        identifier = {"canvas": lambda i: any(canvas_ids(i)), "moodle": moodle_identifier}[platform]
        return [row.student for row in self.rows if not identifier(row.identity)]

    def where(self) -> str:
        """Where each file went, in one paragraph."""
        what = {
            "scores": "a row per student",
            "detail": "a row per test",
            "answers": "the written answers",
            "canvas": "for Canvas's grade import",
            "moodle": "for Moodle's grading worksheet",
        }
        folder = self.written["scores"].parent
        files = ", ".join(f"{path.name} ({what[kind]})" for kind, path in self.written.items())
        results = "beside them" if self.results_dir == folder else f"in {printable(str(self.results_dir))}"
        return f"Written to {printable(str(folder))}: {files}; a results file per graded student {results}"


# ---------------------------------------------------------------- who the students are


def identify(name: str, is_folder: bool) -> Identity:
    """The student a batch folder's entry belongs to, from its name (see the module's docstring)."""
    for source, pattern in (("canvas", CANVAS_NAME), ("moodle", MOODLE_NAME)):
        if found := pattern.match(name):
            return Identity(f"{found['name']}_{found['id']}", found["name"], found["id"], source)
    student = name if is_folder or "." not in name else name.rsplit(".", 1)[0]
    return Identity(student, student)


def read_roster(path: Path) -> dict[str, Identity]:
    """student -> identity, from a CSV with the columns student, id and optionally name."""
    expected = "a CSV file with the columns student, id and optionally name"
    try:
        rows = list(csv.DictReader(io.StringIO(Path(path).read_text(encoding="utf-8-sig"))))
    except OSError as error:
        raise GraderError(f"cannot read the roster {path} ({error.strerror}): expected {expected}") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise GraderError(f"the roster {path} is not {expected} ({error})") from None
    if not rows or not {"student", "id"} <= set(rows[0]):
        raise GraderError(f"the roster {path} is not {expected}")
    return {
        row["student"]: Identity(row["student"], row.get("name") or "", row["id"] or "", "roster")
        for row in rows
        if row["student"]
    }


def find_students(root: int, ours: list[Path], roster: dict[str, Identity] | None = None) -> list[Student]:
    """Every student of the folder opened as `root` (and of the roster), in the folder's order, each with the
    one notebook to grade or the reason there is none. The paths in `ours` (the results folder, the tables)
    are no students."""
    roster = roster or {}
    skip = {identity for path in ours if (identity := _file_identity(path))}
    entries: dict[str, tuple[Identity, list[Entry]]] = {}
    for name, kind in _listing(root):
        if kind in ("folder", "file") and _file_identity(name, root) in skip:
            continue
        identity = identify(name, kind == "folder")
        if identity.student in roster:
            identity = replace(roster[identity.student], name=roster[identity.student].name or identity.name)
        entries.setdefault(identity.student, (identity, []))[1].append(_entry(root, name, kind))
    students = [_student(identity, found) for identity, found in entries.values()]
    absent = [replace(identity, name=identity.name or name) for name, identity in roster.items() if name not in entries]
    return students + [Student(identity, None, "no submission: nothing in the folder is theirs") for identity in absent]


def _student(identity: Identity, entries: list[Entry]) -> Student:
    notebooks = [path for entry in entries for path in entry.notebooks]
    if len(notebooks) == 1:
        return Student(identity, notebooks[0])
    if notebooks:
        paths = listed(["/".join(path) for path in notebooks])
        return Student(identity, None, f"{len(notebooks)} notebooks ({paths}): leave one")
    return Student(identity, None, "; ".join(entry.why_none for entry in entries))


def _entry(root: int, name: str, kind: str) -> Entry:
    if kind == "folder":
        return _search_folder(root, name)
    if kind == "file" and _is_notebook_name(name):
        return Entry([(name,)])
    return Entry(why_none=f"{name} {_not_a_notebook(kind)}")


def _not_a_notebook(kind: str) -> str:
    return {
        "link": "is a link, and links are never followed",
        "other": "is not a regular file",
        "file": "is not a notebook (.ipynb)",
    }[kind]


def _is_notebook_name(name: str) -> bool:
    return name.lower().endswith(".ipynb")


class _Unsearchable(Exception):
    pass


def _search_folder(root: int, name: str) -> Entry:
    """The notebooks in the student's folder `name`, searched without following a link, within the bounds."""
    label, entry, others, seen = f"{name}/", Entry(), [], [0]

    def search(folder: int, parts: tuple[str, ...]) -> None:
        if len(parts) > MAX_FOLDER_DEPTH:
            raise _Unsearchable(f"holds folders nested more than {MAX_FOLDER_DEPTH} deep")
        for child, kind in _listing(folder, MAX_FOLDER_ENTRIES - seen[0]):
            seen[0] += 1
            path = (*parts, child)
            if kind == "folder":
                try:
                    with _opened(folder, child, FOLDER_FLAGS) as inner:
                        search(inner, path)
                except OSError as error:
                    others.append(f"{'/'.join(path)}/ cannot be opened ({error.strerror})")
            elif kind == "file" and _is_notebook_name(child):
                entry.notebooks.append(path)
            elif kind != "file":
                others.append(f"{'/'.join(path)} {_not_a_notebook(kind)}")

    try:
        with _opened(root, name, FOLDER_FLAGS) as folder:
            search(folder, (name,))
    except _Unsearchable as problem:
        return Entry(why_none=f"{label} {problem}: it was not searched")
    except OSError as error:
        return Entry(why_none=f"{label} cannot be opened ({error.strerror})")
    entry.why_none = f"no notebook (.ipynb) in {label}" + (f": {listed(others)}" if others else "")
    return entry


def _listing(folder: int, most: int | None = None) -> list[tuple[str, str]]:
    """(name, kind) of each entry of the opened `folder` but hidden ones, sorted; kind is folder, file, link or
    other, as the entry itself is (a link is never followed). More than `most` entries: _Unsearchable."""
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if most is not None and len(found) >= most:
                raise _Unsearchable(f"holds more than {MAX_FOLDER_ENTRIES:,} files and folders")
            found.append((entry.name, _kind(entry)))
    return sorted(found)


def _kind(entry: os.DirEntry) -> str:
    if entry.is_symlink():
        return "link"
    if entry.is_dir(follow_symlinks=False):
        return "folder"
    return "file" if entry.is_file(follow_symlinks=False) else "other"


def listed(items: list[str]) -> str:
    """The first few of `items`, comma-separated, and how many more there are."""
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def _file_identity(path: str | Path, folder: int | None = None) -> tuple[int, int] | None:
    """(device, inode) of `path` (a name in the opened `folder`), itself and not a link's target; None if absent."""
    try:
        found = os.stat(path, dir_fd=folder, follow_symlinks=False)
    except OSError:
        return None
    return found.st_dev, found.st_ino


# ---------------------------------------------------------------- reading a notebook


@contextmanager
def _opened(folder: int, name: str, flags: int):
    with _opened_fd(os.open(name, flags, dir_fd=folder)) as fd:
        yield fd


@contextmanager
def _opened_fd(fd: int):
    try:
        yield fd
    finally:
        os.close(fd)


def read_submission(root: int, path: tuple[str, ...], limit: int = DEFAULT_MAX_BYTES) -> bytes:
    """The bytes of the regular file at `path` (names from the folder opened as `root`), at most `limit` + 1 of
    them, opened one name at a time without following a link. Else OSError, whose strerror is the sentence
    that says why (errno ELOOP for a link on the way)."""
    opened = []  # every descriptor on the way, closed at the end
    try:
        parent = root
        for depth, name in enumerate(path[:-1], start=1):
            opened.append(parent := _open_step(parent, name, FOLDER_FLAGS, "/".join(path[:depth])))
        file = _open_step(parent, path[-1], FILE_FLAGS, "/".join(path))
        opened.append(file)
        if not stat.S_ISREG(os.fstat(file).st_mode):
            raise OSError(errno.EINVAL, f"{'/'.join(path)} is not a regular file")
        os.set_blocking(file, True)
        data = bytearray()
        while len(data) <= limit and (chunk := os.read(file, min(1 << 20, limit + 1 - len(data)))):
            data += chunk
        return bytes(data)
    finally:
        for fd in opened:
            os.close(fd)


def _open_step(parent: int, name: str, flags: int, shown: str) -> int:
    try:
        return os.open(name, flags, dir_fd=parent)
    except OSError as error:
        if _is_link(parent, name):  # O_NOFOLLOW's ELOOP, or ENOTDIR where O_DIRECTORY met the link first
            raise OSError(errno.ELOOP, f"{shown} is a link, and links are never followed") from None
        raise OSError(error.errno, f"{shown} cannot be read ({error.strerror})") from None


def _is_link(folder: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode)
    except OSError:
        return False


# ---------------------------------------------------------------- grading


def fingerprint(assignment: Path, limits: Limits) -> str:
    """What the results depend on besides the notebook: the tests, the grader's version, the limits."""
    digest = hashlib.sha256(f"{__version__} {sorted(asdict(limits).items())}".encode())
    for path in sorted(Path(assignment).glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def is_current(results_path: Path, extra_data: dict) -> bool:
    """Whether the results file was made from the same notebook bytes by the same tests, grader and limits."""
    try:
        return json.loads(results_path.read_text()).get("extra_data") == extra_data
    except (OSError, ValueError, AttributeError):
        return False


@dataclass
class _Graded:
    student: str
    graded_now: bool = False
    error: str = ""  # why grading failed, or why the notebook could not be read (then `unread`)
    unread: bool = False
    answers: dict[str, WrittenAnswer] | None = None


class _LazyZygote:
    """The batch's one zygote, started by the first notebook that needs grading: a rerun that grades none starts none."""

    def __init__(self):
        self._lock = threading.Lock()
        self._zygote: Zygote | None = None

    def get(self) -> Zygote:
        with self._lock:
            if self._zygote is None:
                self._zygote = Zygote()
            return self._zygote

    def close(self) -> None:
        if self._zygote is not None:
            self._zygote.close()


def run_batch(
    folder: Path,
    assignment: Path,
    *,
    jobs: int = 2,
    results_dir: Path | None = None,
    csv_path: Path | None = None,
    limits: Limits = Limits(),
    progress: bool = True,
    lms: tuple[str, ...] = (),
    lms_assignment: str | None = None,
    roster: Path | None = None,
) -> Batch:
    """Grade every student's notebook in `folder`; write the gradebook's tables (see the module's docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GraderError(f"no folder at {printable(str(folder))}")
    test_files(assignment)  # a usage mistake stops here, before anything is graded
    unknown = sorted(set(lms) - set(LMS_FORMATS))
    if unknown:
        raise GraderError(f"unknown learning platform {unknown[0]!r}: expected one of {', '.join(LMS_FORMATS)}")
    known = read_roster(roster) if roster else None
    results_dir = Path(results_dir) if results_dir else folder / "results"
    tables = table_paths(Path(csv_path) if csv_path else results_dir / "scores.csv")
    try:
        root = os.open(folder, FOLDER_FLAGS & ~os.O_NOFOLLOW)  # the folder named is followed, nothing in it
    except OSError as error:
        raise GraderError(f"cannot open the folder {printable(str(folder))} ({error.strerror})") from None
    with _opened_fd(root):
        students = find_students(root, [results_dir, *tables.values()], known)
        if not any(student.notebook for student in students):
            raise GraderError(f"no notebooks (*.ipynb) in {printable(str(folder))} or its students' folders")
        results_dir.mkdir(parents=True, exist_ok=True)
        asked = questions(assignment)
        grading = _Grading(
            root,
            results_dir,
            assignment,
            limits,
            asked,
            fingerprint(assignment, limits),
            _LazyZygote(),
            (folder, results_dir),
        )
        graded = _grade_all(students, grading, jobs, progress)
    rows = [_row(student, results_dir, graded.get(student.identity.student)) for student in students]
    wanted = {"scores", "detail", *(["answers"] if asked else []), *lms}
    written = {kind: path for kind, path in tables.items() if kind in wanted}
    _write_tables(written, rows, asked, graded, lms_assignment or Path(assignment).name)
    return Batch(rows, results_dir, written)


@dataclass(frozen=True)
class _Grading:
    """What grading one student's notebook needs, the same for every student of the batch."""

    root: int  # the batch folder, opened
    results_dir: Path
    assignment: Path
    limits: Limits
    asked: list
    fingerprint: str
    zygote: _LazyZygote
    hidden: tuple[Path, ...]  # run as root, no worker sees these (nor the tests, nor the solutions)


def _grade_all(students: list[Student], grading: _Grading, jobs: int, progress: bool) -> dict[str, _Graded]:
    """`jobs` threads, each reading one notebook and waiting on its grading process at a time: the processes,
    forked by the zygote, do the work. Returns what happened to each student with a notebook."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    to_grade = [student for student in students if student.notebook]
    done = {}
    try:
        with ThreadPoolExecutor(jobs) as pool:
            bar = tqdm(total=len(to_grade), unit="notebook", disable=not progress or None, desc="grading")
            for result in pool.map(lambda student: _grade_one(student, grading), to_grade):
                done[result.student] = result
                bar.update()
            bar.close()
    finally:
        grading.zygote.close()
    return done


def _grade_one(student: Student, grading: _Grading) -> _Graded:
    """Read the student's notebook once, grade those bytes unless their results are current, read its answers."""
    name = "/".join(student.notebook)
    graded = _Graded(student.identity.student)
    try:
        data = read_submission(grading.root, student.notebook)
    except OSError as error:
        graded.error, graded.unread = error.strerror, True
        return graded
    try:
        notebook, refusal = parse_notebook(data, printable(name)), None
    except NotebookError as error:  # not a notebook: graded, every test failing with this sentence
        notebook, refusal = None, str(error)
    extra = {
        "fingerprint": grading.fingerprint,
        "notebook": printable(name),
        "student": printable(student.identity.student),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    results_path = grading.results_dir / f"{student.identity.student}.json"
    if not is_current(results_path, extra):
        graded.graded_now = True
        try:
            grade(
                notebook,
                grading.assignment,
                refusal=refusal,
                results_path=results_path,
                limits=grading.limits,
                zygote=grading.zygote.get(),
                hidden=grading.hidden,
                extra_data=extra,
            )
        except Exception as error:  # a bug of ours must not stop the batch: the row says so
            graded.error = f"grading failed ({type(error).__name__}: {error})"
    if grading.asked and notebook is not None:
        graded.answers = read_answers(notebook, grading.asked)
    return graded


# ---------------------------------------------------------------- the gradebook


def _row(student: Student, results_dir: Path, graded: _Graded | None) -> Row:
    if student.notebook is None:
        return Row(student.identity, SKIPPED, one_line(student.reason))
    if graded.unread:
        return Row(student.identity, SKIPPED, one_line(graded.error))
    name, now = printable("/".join(student.notebook)), graded.graded_now
    if graded.error:
        return Row(student.identity, FAILED, one_line(graded.error), name, graded_now=now)
    try:
        results = json.loads((results_dir / f"{student.identity.student}.json").read_text())
    except (OSError, ValueError):
        return Row(student.identity, FAILED, "grading failed: no results file", name, graded_now=now)
    score, maximum = _number(results["score"]), _number(results["max_score"])
    return Row(student.identity, GRADED, _reason(results), name, score, maximum, results["tests"], now)


def _reason(results: dict) -> str:
    """Why points were lost, on one line: the notebook's problem when it scored nothing, else the first lost test's."""
    if results["score"] >= results["max_score"]:
        return ""
    lost = [test for test in results["tests"] if test["score"] < test["max_score"]]
    if results["score"] == 0 and results.get("output"):
        return one_line(results["output"])
    first = lost[0]
    more = f" (and {len(lost) - 1} more tests lost points)" if len(lost) > 1 else ""
    return one_line(f"{first['name']}: {first['output'] or first['status']}") + more


def _number(value) -> int | float:
    return int(value) if float(value).is_integer() else round(float(value), 6)


def table_paths(csv_path: Path) -> dict[str, Path]:
    """Where each table of a batch goes (if it is written): scores.csv's path and the others beside it."""
    return {
        "scores": csv_path,
        "detail": csv_path.with_name(f"{csv_path.stem}-detail.csv"),
        "answers": csv_path.with_name("answers.csv"),
        **{platform: csv_path.with_name(f"{csv_path.stem}-{platform}.csv") for platform in LMS_FORMATS},
    }


def _write_tables(written: dict[str, Path], rows, asked, graded, lms_assignment) -> None:
    """Write each table of `written` (what it is -> its path), each atomically."""
    tables = {
        "scores": lambda: scores_table(rows),
        "detail": lambda: detail_table(rows),
        "answers": lambda: answers_table(
            [(r.student, r.identity.id, graded[r.student].answers) for r in rows if r.student in graded], asked
        ),
        "canvas": lambda: canvas_table(rows, lms_assignment),
        "moodle": lambda: moodle_table(rows, datetime.now()),
    }
    written["scores"].parent.mkdir(parents=True, exist_ok=True)
    for kind, path in written.items():
        write_atomically(path, tables[kind]())


def scores_table(rows: list[Row]) -> str:
    return csv_text(
        [SCORES_HEADER]
        + [[r.student, r.identity.id, r.notebook, r.score, r.max_score, r.status, r.reason] for r in rows]
    )


def detail_table(rows: list[Row]) -> str:
    return csv_text(
        [DETAIL_HEADER]
        + [
            [r.student, r.identity.id, test.get("extra_data", {}).get("test", test["name"]), test["name"]]
            + [_number(test["score"]), _number(test["max_score"]), test["status"], one_line(test["output"] or "")]
            for r in rows
            for test in r.tests
        ]
    )


def _points_possible(rows: list[Row]) -> int | float | str:
    return next((row.max_score for row in rows if row.status == GRADED), "")


def canvas_ids(identity: Identity) -> tuple[str, str]:
    """The student's Canvas ID (from a Canvas download's name) and SIS Login ID (from the roster)."""
    return (
        identity.id if identity.source == "canvas" else "",
        identity.id if identity.source == "roster" else "",
    )


def moodle_identifier(identity: Identity) -> str:
    """`Participant N`, as Moodle's worksheet names the participant of a Moodle download's name, or the roster's id."""
    return {"moodle": f"Participant {identity.id}", "roster": identity.id}.get(identity.source, "")


def canvas_table(rows: list[Row], assignment: str) -> str:
    """Canvas's gradebook import: the student columns (Canvas matches a row by ID, then SIS User ID, then SIS
    Login ID, then the name), one assignment column (`Title (ID)` names an existing assignment; a new title makes
    one), a Points Possible row, then a row per student; a student not graded has an empty cell (no change)."""
    return csv_text(
        [
            [*CANVAS_STUDENT_COLUMNS, assignment],
            ["Points Possible", "", "", "", "", _points_possible(rows)],
            *(
                [r.identity.name, canvas_id, "", login, "", r.score]
                for r in rows
                for canvas_id, login in [canvas_ids(r.identity)]
            ),
        ]
    )


def moodle_table(rows: list[Row], now: datetime) -> str:
    """Moodle's grading worksheet: Identifier (`Participant N`, as the worksheet names a participant, or the
    roster's id), the grade, and the reason as feedback comments; a student not graded has no grade."""
    maximum = _points_possible(rows)
    return csv_text(
        [MOODLE_HEADER]
        + [
            [
                moodle_identifier(r.identity),
                r.identity.name,
                r.score,
                maximum,
                now.strftime("%Y-%m-%d %H:%M:%S"),
                r.reason if r.status == GRADED else f"not graded: {r.reason}",
            ]
            for r in rows
        ]
    )
