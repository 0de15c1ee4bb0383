"""`course build`: writes the student notebooks in assignments/ from the solution notebooks in solutions/.

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


def planned_assignments(solutions_dir: Path) -> dict[str, bytes]:
    """File name -> the bytes `course build` writes for it."""
    if not solutions_dir.is_dir():
        raise UserError(f"no solutions folder at {solutions_dir} (give one with --solutions DIR)")
    return {
        path.name: render(student_notebook(read_notebook(path), str(path)))
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
    found = differences(planned, assignments_dir)
    if check:
        for kind, name in found:
            print(CHECK_LINES[kind].format(path=assignments_dir / name))
        if any(kind != "extra" for kind, _ in found):
            print(f"assignments are out of date with {solutions_dir}: run `course build`")
            return 1
        print("assignments are up to date")
        return 0
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
