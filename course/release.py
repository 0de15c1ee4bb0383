"""`course release OUT`: the kit as students get it, without the answers.

    course release OUT [--assignments NAME ...] [--reveal NAME ...] [--lectures NAME ...] [--zip]

OUT gets the library (course/), the grader with each shipped assignment's manifest, visible tests and the helper
modules its manifest lists in `ship` (no test_hidden.py, no mutants.toml, no helper that only hidden tests load: a
visible test that loads a file `ship` does not list is refused, see `visible_test_files`), the
student notebooks built afresh from solutions/ (never a copy of assignments/, which may hold someone's work), the lectures named
(default: none), pyproject.toml, data/README.md, a Makefile (`make env`, `make check`) and a README for
students made from this kit's README. There is no solutions/, tests/ or bench/, so nothing in it can run
a solution: `course generate` without --sampler asks for one.

An assignment ships only with the earlier ones it reuses (its manifest's `reuses`: their graded functions are its
stubs, or it builds on them). An assignment notebook must not give away another's answers (a notebook that reuses
another gives students stubs for their own functions, not that other's solution; given code copied from another
solution would give it away). Before anything is written, every file is searched for the solution regions of the shipped assignments, each
assignment's own (a region that another solution holds too, as 03's stubs hold 02's bodies, is that other's):
a file holding at least half of a region's lines gives that solution away, and the release is refused, unless
--reveal names the assignment (its deadline has passed). OUT is written whole or not at all; --zip also writes OUT.zip, one top folder named like OUT.
"""

from __future__ import annotations

import ast
import json
import re
import zipfile
from pathlib import Path

from course import generated, kit
from course.assignments import MANIFEST_FILE, Assignment, assignments, check_reuses
from course.build import DROP_TAG, PLACEHOLDER_REPOSITORY, joined_source, planned_assignments, solution_regions
from course.errors import UserError
from course.notebook import read_notebook

TRIVIAL_LINE = 12  # characters: shorter solution lines (`else:`, `return ids`) appear anywhere and reveal nothing
LIBRARY = ("course", "grader")
KIT_FILES = ("pyproject.toml", "data/README.md", ".gitignore")
STUDENT_SECTIONS = ("For students", "Troubleshooting", "Licence and data")  # of the kit's README, in this order

STUDENT_README = """\
# Sampling & Inference: the student kit

The "Sampling and Inference" module of a build-ChatGPT-from-scratch course: a small GPT trained on WikiText, and
how it chooses the next token, written by you in Jupyter notebooks. The autograder's visible tests tell you how you
are doing as you go; your instructor grades with more tests of the same rules.

| folder | what is in it |
|---|---|
| `assignments/` | your notebooks: {notebooks} |
| `course/` | the course library: model, tokenizer, data, training, generation loop, the `course` command |
| `grader/` | the autograder (`grader` command) and each assignment's visible tests |
| `data/` | how to get WikiText ([data/README.md](data/README.md)) |{lectures_row}

`make env` installs everything into `.venv` (the CPU build of PyTorch, the kit and JupyterLab);
`make check` runs the visible tests on every notebook in `assignments/`.

{sections}
"""

MAKEFILE = """\
# The student kit: `make env` installs it into .venv, `make check` runs the visible tests on your notebooks.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: env check

$(VENV)/.installed: pyproject.toml
\ttest -d $(VENV) || python3 -m venv $(VENV)
\t$(PY) -m pip install -q --upgrade pip
\t$(PY) -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu || $(PY) -m pip install -q torch
\t$(PY) -m pip install -q -e ".[notebooks]"
\ttouch $@

env: $(VENV)/.installed

check: env
{checks}"""


def release(
    out: Path,
    assignments: list[str] | None = None,
    reveal: list[str] = (),
    lectures: list[str] = (),
    make_zip: bool = False,
) -> int:
    out = Path(out)
    archive = out.with_name(out.name + ".zip")
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise UserError(f"{out} exists and is not an empty folder: give a new one (a release is written whole)")
    if make_zip and archive.exists():
        raise UserError(f"{archive} exists: move it away or give another OUT")
    declared = {one.name: one for one in assignments_of_the_kit()}
    names = _chosen("assignment", assignments, list(declared), "--assignments")
    _chosen("assignment", reveal, names, "--reveal")
    check_reuses(names)
    built = planned_assignments(kit.ROOT / "solutions")
    files = _library([declared[name] for name in names])
    files.update({f"assignments/{name}.ipynb": built[f"{name}.ipynb"] for name in names})
    lectures = _chosen("lecture", lectures, sorted(p.stem for p in (kit.ROOT / "lectures").glob("*.ipynb")))
    for name in lectures:
        files[f"lectures/{name}.ipynb"] = (kit.ROOT / "lectures" / f"{name}.ipynb").read_bytes()
        if b"load_solution(" in files[f"lectures/{name}.ipynb"]:
            print(
                f"note: lectures/{name}.ipynb runs the solutions, which a release does not hold: students can read it, not run it"
            )
    placeholder = [name for name in names if PLACEHOLDER_REPOSITORY.encode() in built[f"{name}.ipynb"]]
    if placeholder:
        print(
            f"note: on Colab, {', '.join(placeholder)} would clone the placeholder {PLACEHOLDER_REPOSITORY}: "
            "set `student-repository` under [tool.course] in pyproject.toml to the students' repository and run "
            "`course build` first"
        )
    files.update({path: (kit.ROOT / path).read_bytes() for path in KIT_FILES if (kit.ROOT / path).is_file()})
    files["README.md"] = student_readme([declared[name] for name in names], lectures).encode("utf-8")
    files["Makefile"] = MAKEFILE.format(checks="".join(_check_line(name) for name in names)).encode("utf-8")
    _refuse_given_away(files, [name for name in names if name not in reveal])
    with kit.atomic_folder(out) as staging:
        for path, content in files.items():
            (staging / path).parent.mkdir(parents=True, exist_ok=True)
            (staging / path).write_bytes(content)
    shipped = ", ".join(names) + (f"; lectures {', '.join(lectures)}" if lectures else "")
    print(f"wrote {out}: the library, the assignments {shipped}, the visible tests; its README.md is for students")
    if make_zip:
        with kit.atomic_path(archive) as temporary, zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as bundle:
            for path, content in sorted(files.items()):
                bundle.writestr(f"{out.name}/{path}", content)
        print(f"wrote {archive}")
    return 0


def _chosen(kind: str, asked: list[str] | None, known: list[str], option: str = "") -> list[str]:
    """The names asked for (all known ones when `asked` is None), each checked against `known`."""
    if asked is None:
        return known
    names = [Path(name).stem for name in asked]  # `NN_name`, `NN_name.ipynb` and a path all name it
    unknown = [name for name in names if name not in known]
    if unknown:
        where = f" among those shipped ({option} names only those)" if option == "--reveal" else ""
        raise UserError(f"no {kind} {unknown[0]!r}{where}: expected one of {', '.join(known) or 'none'}")
    return list(dict.fromkeys(names))


def assignments_of_the_kit() -> list[Assignment]:
    """The kit's assignments that have a solution notebook to build (every one, in a complete kit)."""
    return [one for one in assignments() if one.solution.is_file()]


def _library(chosen: list[Assignment]) -> dict[str, bytes]:
    """course/ and grader/ as files, with only the students' side of the shipped assignments' folders."""
    tests = kit.ROOT / "grader" / "assignments"
    files = {}
    for package in LIBRARY:
        for path in sorted((kit.ROOT / package).rglob("*")):
            if _is_source(path) and tests not in path.parents:
                files[path.relative_to(kit.ROOT).as_posix()] = path.read_bytes()
    for assignment in chosen:
        for path in shipped_test_files(assignment):
            files[path.relative_to(kit.ROOT).as_posix()] = path.read_bytes()
    return files


def shipped_test_files(assignment: Assignment) -> list[Path]:
    """What students get of an assignment's folder: its manifest, test_visible.py (and a conftest.py) and the helper
    modules its manifest lists in `ship`. A file the visible tests load (`visible_test_files`) that `ship` does not
    list is refused in one line: it would be missing from the students' kit, or it is a file they must not get."""
    from grader.results import VISIBLE_FILE

    folder = assignment.folder
    shipped = [folder / MANIFEST_FILE, *(p for p in (folder / VISIBLE_FILE, folder / "conftest.py") if p.is_file())]
    shipped += [folder / name for name in assignment.ship]
    unlisted = [path for path in visible_test_files(folder) if path not in shipped]
    if unlisted:
        raise UserError(
            f"{assignment.name}: the visible tests load {unlisted[0].name}, which {MANIFEST_FILE}'s `ship` does not "
            "list: list it there, or keep it out of the visible tests"
        )
    return shipped


def _is_source(path: Path, base: Path = kit.ROOT) -> bool:
    """A file of `base` worth shipping: not bytecode, not in a cache or hidden folder (.ipynb_checkpoints)."""
    relative = path.relative_to(base).parts
    return (
        path.is_file() and path.suffix != ".pyc" and not any(p == "__pycache__" or p.startswith(".") for p in relative)
    )


def visible_test_files(folder: Path) -> list[Path]:
    """An assignment's test folder as students get it: test_visible.py, conftest.py, and every other file of the
    folder that one of those loads, transitively. A Python file loads a file of its folder when it holds that file's
    name as a string (`helper_module(__file__, "kv_support.py")`, `Path(__file__).with_name("cases.json")`) or
    imports it (`import kv_support`); a name that only appears in a comment or inside a longer text (a docstring
    that mentions the hidden tests' kv_reference.py) loads nothing. test_hidden.py and whatever only it loads stay
    behind, so a helper that holds a reference answer ships only if a visible test loads it."""
    from grader.results import VISIBLE_FILE
    from grader.runner import HIDDEN_FILE

    others = {
        p.relative_to(folder).as_posix(): p
        for p in sorted(folder.rglob("*"))
        if _is_source(p, folder) and p.name not in (VISIBLE_FILE, HIDDEN_FILE)
    }
    kept = [p for p in (folder / VISIBLE_FILE, folder / "conftest.py") if p.is_file()]
    unread = list(kept)
    while unread:
        for name in sorted(_loaded_names(unread.pop(0))):
            for candidate in (name, f"{name}.py"):
                path = others.get(candidate)
                if path is not None and path not in kept:
                    kept.append(path)
                    unread.append(path)
    return kept


def _loaded_names(path: Path) -> set[str]:
    """The file names a Python file holds as whole strings, and the modules it imports (first component)."""
    if path.suffix != ".py":
        return set()
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except SyntaxError as error:
        raise UserError(
            f"{path} is not valid Python ({error.msg}, line {error.lineno}): fix it before a release"
        ) from None
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)
        elif isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def _check_line(name: str) -> str:
    return f"\t$(VENV)/bin/grader check {name} --notebook assignments/{name}.ipynb\n"


def student_readme(chosen: list[Assignment], lectures: list[str]) -> str:
    """The release's README: a short introduction naming the shipped assignments (from their manifests), then the
    students' sections of the kit's README without the numbered steps and the table rows that name an assignment left
    out of the release."""
    readme = generated.without_markers((kit.ROOT / "README.md").read_text(encoding="utf-8"))
    shipped = {one.name for one in chosen}
    left_out = [one.name for one in assignments() if one.name not in shipped]
    sections = []
    for title in STUDENT_SECTIONS:
        found = re.search(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", readme, flags=re.MULTILINE | re.DOTALL)
        if found is None:
            raise UserError(f"{kit.ROOT / 'README.md'} has no `## {title}` section, which the students' README copies")
        sections.append(_without_items_naming(found.group(0).strip(), left_out))
    lectures_row = "\n| `lectures/` | the lecture notebooks: " + ", ".join(f"`{n}`" for n in lectures) + " |"
    return STUDENT_README.format(
        notebooks=", ".join(f"`{one.name}.ipynb` ({one.title})" for one in chosen),
        lectures_row=lectures_row if lectures else "",
        sections="\n\n".join(sections),
    )


def _without_items_naming(section: str, names: list[str]) -> str:
    """`section` without the table rows and the items of its numbered list that name one of `names`, the list's
    other items renumbered."""
    kept, number = [], 0
    for block in re.split(r"(?m)^(?=\d+\. |\|)", section):
        if any(name in block for name in names) and re.match(r"\d+\. |\|", block):
            continue
        if re.match(r"\d+\. ", block):
            number += 1
            block = re.sub(r"^\d+\.", f"{number}.", block)
        kept.append(block)
    return "".join(kept)


def solution_lines(name: str) -> list[list[str]]:
    """The lines of each solution region of assignment `name`, stripped, the trivial ones left out."""
    path = kit.ROOT / "solutions" / f"{name}.ipynb"
    regions = []
    for number, cell in enumerate(read_notebook(path).cells, start=1):
        if cell.cell_type != "code" or DROP_TAG in cell.get("metadata", {}).get("tags", []):
            continue
        lines = joined_source(cell.source).splitlines()
        for begin, end, _, _ in solution_regions(lines, f"{path} cell {number}"):
            region = [line.strip() for line in lines[begin + 1 : end] if len(line.strip()) >= TRIVIAL_LINE]
            if region:
                regions.append(region)
    return regions


def _lines(path: str, content: bytes) -> set[str]:
    """The stripped lines a reader of the file sees: a notebook's cell sources, another file's text."""
    text = content.decode("utf-8", errors="replace")
    if path.endswith(".ipynb"):
        text = "\n".join("".join(cell.get("source", "")) for cell in json.loads(text).get("cells", []))
    return {line.strip() for line in text.splitlines()}


def own_solution_lines(name: str) -> list[list[str]]:
    """solution_lines(name) without the regions that are another assignment's too: the stubs that an assignment gives
    for the student's own functions of one it reuses hold that one's bodies, which are its answers, not this one's."""
    others = {
        tuple(region)
        for path in sorted((kit.ROOT / "solutions").glob("*.ipynb"))
        if path.stem != name
        for region in solution_lines(path.stem)
    }
    return [region for region in solution_lines(name) if tuple(region) not in others]


def _refuse_given_away(files: dict[str, bytes], secret: list[str]) -> None:
    regions = {name: own_solution_lines(name) for name in secret}
    given = {}  # file -> the assignments whose solution it holds
    for path, content in files.items():
        seen = _lines(path, content)
        for name, lines in regions.items():
            if any(2 * sum(line in seen for line in region) >= len(region) for region in lines):
                given.setdefault(path, []).append(name)
    if given:
        names = " ".join(sorted({name for held in given.values() for name in held}))
        holds = "; ".join(f"{path} holds the solution of {', '.join(held)}" for path, held in given.items())
        raise UserError(
            f"the release would give answers away: {holds}. Ship them apart (--assignments NAME ...) "
            f"or, once the deadline has passed, pass --reveal {names}"
        )


def register(subparsers) -> None:
    parser = subparsers.add_parser("release", help="write the student kit: no solutions, no hidden tests")
    parser.add_argument("out", type=Path, metavar="OUT", help="a new (or empty) folder for the student kit")
    parser.add_argument(
        "--assignments", nargs="+", metavar="NAME", help="the assignments to ship (default: every one in solutions/)"
    )
    parser.add_argument(
        "--reveal",
        nargs="+",
        default=[],
        metavar="NAME",
        help="shipped assignments whose solutions may appear (their deadline has passed)",
    )
    parser.add_argument("--lectures", nargs="+", default=[], metavar="NAME", help="lecture notebooks to ship")
    parser.add_argument("--zip", action="store_true", help="also write OUT.zip")
    parser.set_defaults(run=lambda args: release(args.out, args.assignments, args.reveal, args.lectures, args.zip))
