"""The kit's assignments: each one a folder of grader/assignments/ that declares itself in `assignment.toml`.

    grader/assignments/NN_name/
      assignment.toml   this manifest
      test_visible.py   shipped to students, run by check() and `grader check`
      test_hidden.py    never shipped (more test_*.py files may exist; only test_visible.py ships)
      *.py              helper modules of the tests; those listed in `ship` go to students with test_visible.py
      mutants.toml      plausible wrong implementations, as patches of the solution (never shipped)
      README.md         optional: the contract of the graded functions, copied into docs/assignments.md
    solutions/NN_name.ipynb       the solution notebook, the single source of truth
    assignments/NN_name.ipynb     built from it by `course build`

The manifest:

    title = "Speculative sampling"              # as the notebook's first heading gives it
    summary = "one line for the kit's tables"
    graded = ["speculative_step"]               # the graded functions and classes, in teaching order
    ship = ["spec_support.py"]                  # helper modules the visible tests load (shipped to students)
    reuses = ["NN_earlier"]                     # earlier assignments whose graded functions the notebook gives
                                                # as stubs or builds on: a release ships it only with them
    [[questions]]                               # written questions, answered in a markdown cell
    name = "when-drafting-pays"                 # `#### Answer: NAME`, graded by a person
    points = 2
    question = "When does drafting pay off?"

The order of the assignments is their NN prefix; their points come from the tests' `@points(n)`. Every list of
assignments in the kit (the tests, the demo, the release, Gradescope, grading, the README's table, the students'
README, docs/assignments.md) comes from `assignments()`. A manifest that cannot be read is refused in one line
naming its file and the key at fault.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from course import kit
from course.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

MANIFEST_FILE = "assignment.toml"
CONTRACT_FILE = "README.md"
MUTANTS_FILE = "mutants.toml"
VISIBLE_FILE = "test_visible.py"
NAME = re.compile(r"(?P<number>\d\d)_[a-z][a-z0-9_]*")
QUESTION_NAME = re.compile(r"[A-Za-z0-9_.-]+")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
KEYS = {"title": str, "summary": str, "graded": list, "ship": list, "reuses": list, "questions": list}
REQUIRED = ("title", "summary", "graded")
QUESTION_KEYS = {"name": str, "points": (int, float), "question": str}
NEVER_SHIPPED = re.compile(r"test_.*\.py|mutants\.toml|assignment\.toml")  # test_visible.py ships by itself


@dataclass(frozen=True)
class Question:
    name: str
    points: float
    question: str


@dataclass(frozen=True)
class Assignment:
    name: str  # "NN_name": the folder's name, the notebooks' file stem
    folder: Path  # grader/assignments/NN_name
    title: str
    summary: str
    graded: tuple[str, ...]
    ship: tuple[str, ...] = ()
    reuses: tuple[str, ...] = ()
    questions: tuple[Question, ...] = ()

    @property
    def number(self) -> int:
        return int(self.name[:2])

    @property
    def root(self) -> Path:
        """The kit the assignment belongs to (its folder is ROOT/grader/assignments/NN_name)."""
        return self.folder.parents[2]

    @property
    def solution(self) -> Path:
        return self.root / "solutions" / f"{self.name}.ipynb"

    @property
    def notebook(self) -> Path:
        """The student notebook `course build` writes."""
        return self.root / "assignments" / f"{self.name}.ipynb"

    @property
    def contract(self) -> str:
        """The folder's README.md (the graded functions' contract), or '' when it has none."""
        path = self.folder / CONTRACT_FILE
        return path.read_text(encoding="utf-8").strip() if path.is_file() else ""


def assignments_dir(root: Path | None = None) -> Path:
    return (kit.ROOT if root is None else Path(root)) / "grader" / "assignments"


def read_manifest(folder: Path) -> Assignment:
    """The assignment that `folder`/assignment.toml declares, every key checked."""
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    where = _shown(path)
    if not NAME.fullmatch(folder.name):
        raise UserError(f"{folder}: an assignment's folder is named NN_name (two digits, then lower-case words)")
    if not path.is_file():
        raise UserError(f"{where} is missing: every assignment declares itself there (CONTRIBUTING.md)")
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{where} is not valid TOML: {error}") from None
    for key in REQUIRED:
        if key not in table:
            raise UserError(f"{where}: `{key}` is missing (expected the keys {', '.join(KEYS)})")
    for key, value in table.items():
        if key not in KEYS:
            raise UserError(f"{where}: unknown key `{key}` (expected the keys {', '.join(KEYS)})")
        if not isinstance(value, KEYS[key]):
            raise UserError(f"{where}: `{key}` should be a {KEYS[key].__name__}, not {type(value).__name__}")
    for key in ("title", "summary"):
        if not table[key].strip() or "\n" in table[key]:
            raise UserError(f"{where}: `{key}` should be one line of text")
    graded = _names(table, "graded", where, lambda name: all(IDENTIFIER.fullmatch(p) for p in name.split(".")))
    ship = _names(table, "ship", where, lambda name: name == Path(name).name and not NEVER_SHIPPED.fullmatch(name))
    for name in ship:
        if not (folder / name).is_file():
            raise UserError(f"{where}: `ship` names {name}, which is not a file of {_shown(folder)}")
    reuses = _names(table, "reuses", where, lambda name: bool(NAME.fullmatch(name)) and name < folder.name)
    return Assignment(
        name=folder.name,
        folder=folder,
        title=table["title"].strip(),
        summary=table["summary"].strip(),
        graded=graded,
        ship=ship,
        reuses=reuses,
        questions=_questions(table.get("questions", []), where),
    )


def _names(table: dict, key: str, where: str, valid: Callable[[str], bool]) -> tuple[str, ...]:
    expected = {
        "graded": "names of the notebook's functions or classes",
        "ship": "file names of the assignment's folder, neither a test file nor mutants.toml",
        "reuses": "names of earlier assignments (NN_name, a lower NN)",
    }[key]
    names = table.get(key, [])
    if not all(isinstance(name, str) and valid(name) for name in names) or len(set(names)) < len(names):
        raise UserError(f"{where}: `{key}` should list {expected}, each once, not {names!r}")
    return tuple(names)


def _questions(tables: list, where: str) -> tuple[Question, ...]:
    found = []
    for number, question in enumerate(tables, start=1):
        label = f"{where}: question {number}"
        if not isinstance(question, dict) or set(question) != set(QUESTION_KEYS):
            keys = sorted(question) if isinstance(question, dict) else type(question).__name__
            raise UserError(f"{label} should be a [[questions]] table of {', '.join(QUESTION_KEYS)}, not {keys}")
        for key, kind in QUESTION_KEYS.items():
            if not isinstance(question[key], kind) or isinstance(question[key], bool):
                raise UserError(f"{label}: `{key}` has the wrong type ({type(question[key]).__name__})")
        if not QUESTION_NAME.fullmatch(question["name"]) or any(q.name == question["name"] for q in found):
            raise UserError(f"{label}: `name` should be unique, of letters, digits, '_', '-' or '.'")
        if not question["points"] > 0 or not question["question"].strip():
            raise UserError(f"{label}: `points` should be positive and `question` should say what is asked")
        found.append(Question(question["name"], float(question["points"]), question["question"].strip()))
    return tuple(found)


def assignments(root: Path | None = None) -> list[Assignment]:
    """Every assignment of the kit at `root` (default: this kit), in the order of their numbers.

    A folder of grader/assignments/ that holds tests but no manifest, two assignments of one number and a `reuses`
    naming no assignment are refused."""
    base = assignments_dir(root)
    found = []
    folders = (
        sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))) if base.is_dir() else []
    )
    for folder in folders:
        if (folder / MANIFEST_FILE).is_file() or any(folder.glob("test_*.py")):
            found.append(read_manifest(folder))
    numbers = [a.number for a in found]
    for one in found:
        if numbers.count(one.number) > 1:
            twins = ", ".join(a.name for a in found if a.number == one.number)
            raise UserError(f"{base}: {twins} share the number {one.number:02d}, which orders the assignments")
        unknown = [name for name in one.reuses if name not in {a.name for a in found}]
        if unknown:
            raise UserError(
                f"{_shown(one.folder / MANIFEST_FILE)}: `reuses` names {unknown[0]}, which is no assignment"
            )
    return found


def names(root: Path | None = None) -> list[str]:
    return [a.name for a in assignments(root)]


def find(name: str, root: Path | None = None) -> Assignment:
    """The assignment called `name` (`NN_name`, `NN_name.ipynb` or a path to its notebook)."""
    stem = Path(name).stem
    for one in assignments(root):
        if one.name == stem:
            return one
    raise UserError(f"no assignment {stem!r}: expected one of {', '.join(names(root)) or 'none'}")


def grading(functions: Sequence[str], root: Path | None = None) -> Assignment:
    """The one assignment whose graded functions include every one of `functions` (two assignments may grade
    functions of one name, `perplexity`: give more names to tell them apart)."""
    matching = [a for a in assignments(root) if set(functions) <= set(a.graded)]
    if len(matching) != 1:
        which = "no assignment grades" if not matching else f"{len(matching)} assignments grade"
        raise UserError(f"{which} {', '.join(functions)}: expected exactly one (their assignment.toml's `graded`)")
    return matching[0]


def solution_functions(
    functions: Sequence[str], also: Sequence[str] = (), root: Path | None = None
) -> dict[str, Callable]:
    """The named functions of the solution notebook of the assignment that grades them all (`grading`), and the names
    in `also` that the notebook gives (code it hands the student), through the course's notebook loader: the code
    students complete and the grader runs."""
    from course.notebook import load_notebook, require

    path = grading(functions, root).solution
    wanted = [*functions, *also]
    if not path.is_file():
        raise UserError(f"expected the solution notebook {path}, which defines {', '.join(wanted)}")
    return require(load_notebook(path).namespace, wanted, where=str(path))


def check_reuses(chosen: Sequence[str], root: Path | None = None) -> None:
    """Refuse, in one line, a choice of assignments that leaves out one that a chosen assignment reuses."""
    by_name = {a.name: a for a in assignments(root)}
    for name in chosen:
        missing = [other for other in by_name[name].reuses if other not in chosen]
        if missing:
            raise UserError(f"{name} reuses {', '.join(missing)} (its assignment.toml's `reuses`): ship them together")


def _shown(path: Path) -> str:
    """A path as the kit's user reads it: relative to the kit when inside it."""
    path = Path(path)
    try:
        return path.resolve().relative_to(kit.ROOT).as_posix()
    except ValueError:
        return str(path)
