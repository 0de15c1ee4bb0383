"""`course build`: writes the student notebooks in assignments/ from the solution notebooks in solutions/, the
cells every notebook shares, and the kit's tables of assignments.

A solution notebook is the one source of its assignment. In its code cells, the lines from a
`# BEGIN SOLUTION` comment to the next `# END SOLUTION` comment (markers at any indentation, both
lines included) are replaced by one stub line at the BEGIN marker's indentation:

- inside a function (or method) body: `raise NotImplementedError("HINT")`;
- anywhere else (top level, class body): `...  # YOUR CODE HERE: HINT`, a statement that does nothing,
  so the student's notebook still runs from top to bottom.

HINT is the text after `hint:` on the BEGIN line (`# BEGIN SOLUTION hint: use torch.topk`), or
"Your code here". Markers must pair up inside one cell, without nesting, and a region must cover
whole statements of one block, starting at the marker's indentation; a cell whose student version
would not parse is refused.

Cells tagged `instructor` (cell metadata `tags`), of any kind, are left out: notes for the
instructor, checks that need the solution. Markers outside code cells are refused, since
nothing would remove them.

Common cells: every notebook has the same set-up cell and self-check cell, written from one template each
(`COMMON_CELLS`), never by hand. A code cell tagged `common:setup` gets the set-up: on Google Colab only, it clones
and installs the kit from the students' repository (`student-repository` under `[tool.course]` in pyproject.toml);
then `from grader import demo` and CHECKPOINT, the trained model the demos run, found by
`course.checkpoint.find_checkpoints`. A code cell tagged `common:check` gets `check("NN_name")`, the notebook's own
name. The build writes them in solutions/ too, so the solution and its student notebook always agree; `--check`
reports a solution whose common cell differs from its template.

The tables of assignments in README.md and docs/assignments.md are written from the manifests
(course/generated.py); `--check` reports them when they differ.

The output is deterministic: outputs, execution counts and volatile metadata are dropped, cell ids
are the solution cells' ids, the JSON is nbformat's fixed formatting with a trailing newline, and
files are replaced atomically. `course build --check` compares the bytes it would write with
assignments/ and exits 1 listing the stale and missing notebooks (extra ones are listed, as information).

Student work is never lost: the build records the sha256 of every notebook it writes in
assignments/.build.json (committed with the notebooks). A notebook whose bytes are no longer what the
build last wrote was edited by someone: it is kept as it is, and said so, unless `--force` asks to
replace it, which first moves it to a timestamped backup beside it. A file the build did not write is
never deleted; one it wrote, left unedited, whose solution notebook is gone, is removed.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import re
import time
import tokenize
from pathlib import Path
from typing import TYPE_CHECKING

from course import generated, kit
from course.assignments import tomllib
from course.errors import UserError
from course.kit import write_atomically
from course.notebook import plain_python, read_notebook

if TYPE_CHECKING:
    import nbformat  # imported where used: with JupyterLab installed it takes seconds, and every command imports us

DROP_TAG = "instructor"
DEFAULT_HINT = "Your code here"
BEGIN = re.compile(r"^(?P<indent>[ \t]*)#\s*BEGIN SOLUTION\b(?P<rest>.*)$")
END = re.compile(r"^[ \t]*#\s*END SOLUTION\b(?P<rest>.*)$")
KEPT_CELL_METADATA = ("tags", "editable", "deletable", "jupyter", "slideshow")
KEPT_NOTEBOOK_METADATA = ("kernelspec",)
MANIFEST = ".build.json"
MANIFEST_ABOUT = "written by `course build`: the sha256 of each notebook as it wrote it, so that it never overwrites one edited since"
COMMON_TAG = "common:"
PLACEHOLDER_REPOSITORY = "https://github.com/YOUR-COURSE/YOUR-STUDENT-KIT"
REPOSITORY = re.compile(r"(https://|git@)[A-Za-z0-9._~:/@+-]+")

# The cells every notebook shares, by tag. `{repository}` is the students' repository, `{name}` the notebook's.
COMMON_CELLS = {
    "common:setup": """\
# The set-up every notebook of the course starts with.
import os
import subprocess
import sys

# On Google Colab only (nothing happens elsewhere): a fresh runtime has no course kit, so this cell fetches and installs
# it, once per runtime, and works from its assignments/ folder. Your instructor sets the repository's address.
COURSE_KIT_REPOSITORY = {repository}
if "google.colab" in sys.modules:
    if not os.path.isdir("/content/course-kit"):
        subprocess.run(["git", "clone", "--depth", "1", COURSE_KIT_REPOSITORY, "/content/course-kit"], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-e", "/content/course-kit"], check=True)
    sys.path.insert(0, "/content/course-kit")
    os.chdir("/content/course-kit/assignments")

from course.checkpoint import find_checkpoints  # noqa: E402 (on Colab, the kit is installed just above)
from grader import demo  # noqa: E402 (`with demo():` runs a demo; while a function it calls is a stub, it says which)

# The trained model the demos run, or None before there is one: $COURSE_CHECKPOINT, else runs/course, runs/laptop or
# runs/tiny, here or one folder up (`course train --preset tiny` saves runs/tiny)
CHECKPOINT = next(iter(find_checkpoints().values()), None)""",
    "common:check": """\
from grader import check

check({name})""",
}


def student_source(source: str, where: str) -> str:
    """A code cell's text with every solution region replaced by its stub. `where` names the cell in errors."""
    lines = source.splitlines(keepends=True)
    regions = solution_regions(lines, where)
    if not regions:
        return source
    python = plain_python(source) or ""
    function_lines = _function_body_lines(python, where)
    statement_starts = _statement_starts(python)
    out: list[str] = []
    position = 0
    for begin, end, indent, hint in regions:
        inside = [(line, column) for line, column in statement_starts if begin + 1 < line < end + 1]
        for line, column in inside:
            if column < len(indent) or (line, column) == inside[0] and column != len(indent):
                raise UserError(
                    f"{where}: line {line} is outside the block of the `# BEGIN SOLUTION` on line {begin + 1}; "
                    "a region must cover whole statements of one block, at the marker's indentation"
                )
        if (inside[0][0] if inside else begin + 1) in function_lines:
            stub = f"raise NotImplementedError({json.dumps(hint, ensure_ascii=False)})"
        else:
            stub = "...  # YOUR CODE HERE" + ("" if hint == DEFAULT_HINT else f": {hint}")
        out += lines[position:begin]
        out.append(f"{indent}{stub}\n")
        position = end + 1
    out += lines[position:]
    student = "".join(out)
    if not source.endswith("\n"):
        student = student.removesuffix("\n")
    _parse(student, where, "the student version")
    return student


def solution_regions(lines: list[str], where: str) -> list[tuple[int, int, str, str]]:
    """(begin index, end index, indentation, hint) of each marked region, checked for pairing."""
    regions = []
    open_at: tuple[int, str, str] | None = None
    for index, line in enumerate(lines):
        if begin := BEGIN.match(line.rstrip("\r\n")):
            if open_at is not None:
                raise UserError(
                    f"{where}: `# BEGIN SOLUTION` on line {index + 1} is nested in the one on line {open_at[0] + 1}"
                )
            open_at = (index, begin["indent"], _hint(begin["rest"], where, index))
        elif end := END.match(line.rstrip("\r\n")):
            if open_at is None:
                raise UserError(f"{where}: `# END SOLUTION` on line {index + 1} has no `# BEGIN SOLUTION` before it")
            if end["rest"].strip():
                raise UserError(f"{where}: unexpected text after `# END SOLUTION` on line {index + 1}")
            regions.append((open_at[0], index, open_at[1], open_at[2]))
            open_at = None
    if open_at is not None:
        raise UserError(f"{where}: `# BEGIN SOLUTION` on line {open_at[0] + 1} has no `# END SOLUTION` after it")
    return regions


def _hint(rest: str, where: str, index: int) -> str:
    rest = rest.strip()
    if not rest:
        return DEFAULT_HINT
    if rest.startswith("hint:") and rest[len("hint:") :].strip():
        return rest[len("hint:") :].strip()
    raise UserError(f"{where}: line {index + 1} should be `# BEGIN SOLUTION` or `# BEGIN SOLUTION hint: TEXT`")


def _statement_starts(python: str) -> list[tuple[int, int]]:
    """(line, column) where each logical line starts: statements and clause headers such as `else:`."""
    starts = []
    at_start = True
    for token in tokenize.generate_tokens(io.StringIO(python).readline):
        if token.type == tokenize.NEWLINE:
            at_start = True
        elif at_start and token.type not in (tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT):
            starts.append(token.start)
            at_start = False
    return starts


def _function_body_lines(python: str, where: str) -> set[int]:
    """1-based lines whose innermost enclosing scope is a function body."""
    tree = _parse(python, where, "the solution")
    scopes = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    innermost: dict[int, ast.AST] = {}
    for scope in sorted(scopes, key=lambda n: n.lineno):  # an inner scope starts later and overwrites
        for line in range(scope.body[0].lineno, scope.end_lineno + 1):
            innermost[line] = scope
    return {line for line, scope in innermost.items() if not isinstance(scope, ast.ClassDef)}


def _parse(source: str, where: str, what: str) -> ast.Module:
    try:
        return ast.parse(plain_python(source) or "")
    except SyntaxError as e:
        raise UserError(f"{where}: {what} does not parse: {e.msg} on line {e.lineno}") from None


def student_notebook(solution: nbformat.NotebookNode, label: str) -> nbformat.NotebookNode:
    """The assignment built from a solution notebook; `label` names it in errors."""
    import nbformat

    student = nbformat.v4.new_notebook()
    student.metadata = {key: solution.metadata[key] for key in KEPT_NOTEBOOK_METADATA if key in solution.metadata}
    for number, cell in enumerate(solution.cells, start=1):
        if DROP_TAG in cell.get("metadata", {}).get("tags", []):
            continue
        where = f"{label} cell {number}"
        source = joined_source(cell.source)
        if cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(student_source(source, where))
        elif any(BEGIN.match(line) or END.match(line) for line in source.splitlines()):
            raise UserError(f"{where}: solution markers only work in code cells; tag the cell `{DROP_TAG}` instead")
        elif cell.cell_type == "markdown":
            new = nbformat.v4.new_markdown_cell(source)
        else:
            new = nbformat.v4.new_raw_cell(source)
        if "attachments" in cell and cell.cell_type != "code":
            new.attachments = cell.attachments
        new.metadata = {key: cell.metadata[key] for key in KEPT_CELL_METADATA if key in cell.get("metadata", {})}
        new.id = cell.get("id") or f"cell-{number}"
        student.cells.append(new)
    return student


def joined_source(source: str | list[str]) -> str:
    return source if isinstance(source, str) else "".join(source)


def render(notebook: nbformat.NotebookNode) -> bytes:
    import nbformat

    text = nbformat.writes(notebook, version=4)
    return (text if text.endswith("\n") else text + "\n").encode("utf-8")


def student_repository() -> str:
    """The students' repository, which the set-up cell clones on Colab: `student-repository` under `[tool.course]`
    in the kit's pyproject.toml (a placeholder until an instructor sets it)."""
    path = kit.ROOT / "pyproject.toml"
    settings = tomllib.loads(path.read_text(encoding="utf-8")).get("tool", {}).get("course", {})
    address = settings.get("student-repository", PLACEHOLDER_REPOSITORY)
    if not isinstance(address, str) or not REPOSITORY.fullmatch(address):
        raise UserError(
            f"{path}: [tool.course] student-repository should be a repository's address (https://... or git@...), "
            f"not {address!r}"
        )
    return address


def common_source(tag: str, name: str, where: str) -> str:
    """The source `course build` writes in a cell tagged `tag` of notebook `name`."""
    if tag not in COMMON_CELLS:
        raise UserError(f"{where}: no common cell is tagged {tag}: expected {' or '.join(COMMON_CELLS)}")
    return COMMON_CELLS[tag].format(repository=json.dumps(student_repository()), name=json.dumps(name))


def with_common_cells(solution: nbformat.NotebookNode, name: str, label: str) -> nbformat.NotebookNode:
    """`solution` with each cell tagged `common:...` written from its template, in place (returned for chaining)."""
    for number, cell in enumerate(solution.cells, start=1):
        tags = [tag for tag in cell.get("metadata", {}).get("tags", []) if tag.startswith(COMMON_TAG)]
        if not tags:
            continue
        where = f"{label} cell {number}"
        if len(tags) > 1 or cell.cell_type != "code":
            raise UserError(
                f"{where}: a common cell is a code cell with one `common:` tag, not {cell.cell_type} {tags}"
            )
        source = common_source(tags[0], name, where)
        if joined_source(cell.source) != source:
            cell.source = source
            cell.outputs, cell.execution_count = [], None
    return solution


def planned_solutions(solutions_dir: Path) -> dict[str, bytes]:
    """File name -> the bytes of each solution notebook whose common cells differ from their templates, as `course
    build` rewrites it."""
    planned = {}
    for path in sorted(solutions_dir.glob("*.ipynb")):
        solution = read_notebook(path)
        before = [joined_source(cell.source) for cell in solution.cells]
        with_common_cells(solution, path.stem, str(path))
        if [joined_source(cell.source) for cell in solution.cells] != before:
            planned[path.name] = render(solution)
    return planned


def planned_assignments(solutions_dir: Path) -> dict[str, bytes]:
    """File name -> the bytes `course build` writes for it (from the solution with its common cells written)."""
    if not solutions_dir.is_dir():
        raise UserError(f"no solutions folder at {solutions_dir} (give one with --solutions DIR)")
    return {
        path.name: render(student_notebook(with_common_cells(read_notebook(path), path.stem, str(path)), str(path)))
        for path in sorted(solutions_dir.glob("*.ipynb"))
    }


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def read_manifest(assignments_dir: Path) -> dict[str, str]:
    """File name -> sha256 of the bytes the last build wrote there; empty before the first build."""
    path = assignments_dir / MANIFEST
    if not path.is_file():
        return {}
    try:
        notebooks = json.loads(path.read_bytes())["notebooks"]
        if all(isinstance(name, str) and isinstance(digest, str) for name, digest in notebooks.items()):
            return notebooks
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    raise UserError(f"{path} is not a record written by `course build`: delete it, then run `course build` again")


def render_manifest(notebooks: dict[str, str]) -> bytes:
    record = {"about": MANIFEST_ABOUT, "notebooks": dict(sorted(notebooks.items()))}
    return (json.dumps(record, indent=1) + "\n").encode("utf-8")


def differences(planned: dict[str, bytes], assignments_dir: Path) -> list[tuple[str, str]]:
    """(kind, name) for every file of assignments_dir that `course build` would change, or would leave alone
    although it does not match the solutions. Kinds: `missing`, `stale` (the build replaces it), `edited`
    (changed since the build wrote it: kept unless --force), `orphan` (written by the build, its solution
    is gone: removed), `extra` (not written by the build: left alone), and `record` (the manifest)."""
    existing = {p.name for p in assignments_dir.glob("*.ipynb")} if assignments_dir.is_dir() else set()
    written = read_manifest(assignments_dir)
    found = []
    for name, content in planned.items():
        if name not in existing:
            found.append(("missing", name))
            continue
        current = (assignments_dir / name).read_bytes()
        if current != content:
            found.append(("stale" if sha256(current) == written.get(name) else "edited", name))
    for name in sorted(existing - planned.keys()):
        ours = name in written and sha256((assignments_dir / name).read_bytes()) == written[name]
        found.append(("orphan" if ours else "extra", name))
    as_built = {name: sha256(content) for name, content in planned.items()}
    if all(kind == "extra" for kind, _ in found) and written != as_built:
        found.append(("record", MANIFEST))
    return found


CHECK_LINES = {
    "missing": "missing: {path}",
    "stale": "stale: {path}",
    "edited": "stale: {path} (edited after the last build: `course build` keeps it, `course build --force` replaces it)",
    "orphan": "stale: {path} (its solution notebook is gone: `course build` removes it)",
    "record": "stale: {path} (does not record the notebooks as built)",
    "extra": "extra: {path} (not written by `course build`, which leaves it alone)",
}


def build(solutions_dir: Path, assignments_dir: Path, check: bool = False, force: bool = False) -> int:
    planned = planned_assignments(solutions_dir)
    solutions = planned_solutions(solutions_dir)
    documents = generated.planned_documents() if _is_the_kits(solutions_dir) else {}
    found = differences(planned, assignments_dir)
    if check:
        for name in solutions:
            print(f"stale: {solutions_dir / name} (a common cell differs from its template: `course build` writes it)")
        for path in documents:
            print(
                f"stale: {path.relative_to(kit.ROOT)} (a table of assignments differs from the manifests: `course build` writes it)"
            )
        for kind, name in found:
            print(CHECK_LINES[kind].format(path=assignments_dir / name))
        if solutions or documents or any(kind != "extra" for kind, _ in found):
            print(f"assignments are out of date with {solutions_dir}: run `course build`")
            return 1
        print("assignments are up to date")
        return 0
    for name, content in solutions.items():
        write_atomically(solutions_dir / name, content)
        print(f"wrote the common cells of {solutions_dir / name}")
    for path, content in documents.items():
        write_atomically(path, content)
        print(f"wrote the tables of assignments in {path.relative_to(kit.ROOT)}")
    written = read_manifest(assignments_dir)
    record = {name: sha256(content) for name, content in planned.items()}  # as the notebooks will be
    assignments_dir.mkdir(parents=True, exist_ok=True)
    for kind, name in found:
        path = assignments_dir / name
        if kind in ("missing", "stale"):
            write_atomically(path, planned[name])
            print(f"wrote {path}")
        elif kind == "edited" and force:
            backup = _move_to_backup(path)
            write_atomically(path, planned[name])
            print(f"replaced {path}; the edited copy is now {backup}")
        elif kind == "edited":
            del record[name]
            if name in written:  # still what the build last wrote: the notebook stays protected
                record[name] = written[name]
            print(
                f"kept {path}: it was edited after the last build (your work?); "
                "move it away or pass --force to replace it, a backup is kept"
            )
        elif kind == "orphan":
            path.unlink()
            print(f"removed {path} (its solution notebook is gone)")
    if record != written:
        write_atomically(assignments_dir / MANIFEST, render_manifest(record))
    if all(kind in ("extra", "record") for kind, _ in found):
        print("assignments are up to date")
    return 0


def _is_the_kits(solutions_dir: Path) -> bool:
    """Whether `solutions_dir` is this kit's solutions/: only then are the kit's documents its tables."""
    return solutions_dir.resolve() == (kit.ROOT / "solutions").resolve()


def _move_to_backup(path: Path) -> Path:
    """Rename `path` to a free `NAME.bak-YYYYmmdd-HHMMSS[-N]` beside it; return the new path."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup, number = path.with_name(f"{path.name}.bak-{stamp}"), 1
    while backup.exists():
        number += 1
        backup = path.with_name(f"{path.name}.bak-{stamp}-{number}")
    os.rename(path, backup)
    return backup


def register(subparsers) -> None:
    parser = subparsers.add_parser("build", help="write assignments/ from solutions/")
    parser.add_argument("--check", action="store_true", help="exit 1 if assignments/ differs from what would be built")
    parser.add_argument(
        "--force", action="store_true", help="also replace notebooks edited since the last build (a backup is kept)"
    )
    parser.add_argument("--solutions", type=Path, default=Path("solutions"), metavar="DIR")
    parser.add_argument("--assignments", type=Path, default=Path("assignments"), metavar="DIR")
    parser.set_defaults(run=lambda args: build(args.solutions, args.assignments, args.check, args.force))
