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
assignments/ and exits 1 listing the stale, missing and extra notebooks.
"""

from __future__ import annotations

import ast
import io
import json
import re
import tokenize
from pathlib import Path

import nbformat

from course.errors import UserError
from course.kit import write_atomically
from course.notebook import plain_python, read_notebook

DROP_TAG = "instructor"
DEFAULT_HINT = "Your code here"
BEGIN = re.compile(r"^(?P<indent>[ \t]*)#\s*BEGIN SOLUTION\b(?P<rest>.*)$")
END = re.compile(r"^[ \t]*#\s*END SOLUTION\b(?P<rest>.*)$")
KEPT_CELL_METADATA = ("tags", "editable", "deletable", "jupyter", "slideshow")
KEPT_NOTEBOOK_METADATA = ("kernelspec",)


def student_source(source: str, where: str) -> str:
    """A code cell's text with every solution region replaced by its stub. `where` names the cell in errors."""
    lines = source.splitlines(keepends=True)
    regions = _regions(lines, where)
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


def _regions(lines: list[str], where: str) -> list[tuple[int, int, str, str]]:
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
    student = nbformat.v4.new_notebook()
    student.metadata = {key: solution.metadata[key] for key in KEPT_NOTEBOOK_METADATA if key in solution.metadata}
    for number, cell in enumerate(solution.cells, start=1):
        if DROP_TAG in cell.get("metadata", {}).get("tags", []):
            continue
        where = f"{label} cell {number}"
        source = _joined(cell.source)
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


def _joined(source: str | list[str]) -> str:
    return source if isinstance(source, str) else "".join(source)


def render(notebook: nbformat.NotebookNode) -> bytes:
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


def differences(planned: dict[str, bytes], assignments_dir: Path) -> list[tuple[str, str]]:
    """(kind, name) for every notebook of assignments_dir that is stale, missing or extra."""
    existing = {p.name for p in assignments_dir.glob("*.ipynb")} if assignments_dir.is_dir() else set()
    found = []
    for name, content in planned.items():
        if name not in existing:
            found.append(("missing", name))
        elif (assignments_dir / name).read_bytes() != content:
            found.append(("stale", name))
    found += [("extra", name) for name in sorted(existing - planned.keys())]
    return found


def build(solutions_dir: Path, assignments_dir: Path, check: bool = False) -> int:
    planned = planned_assignments(solutions_dir)
    found = differences(planned, assignments_dir)
    if check:
        for kind, name in found:
            print(f"{kind}: {assignments_dir / name}")
        if found:
            print(f"assignments are out of date with {solutions_dir}: run `course build`")
            return 1
        print("assignments are up to date")
        return 0
    assignments_dir.mkdir(parents=True, exist_ok=True)
    for kind, name in found:
        path = assignments_dir / name
        if kind == "extra":
            path.unlink()
            print(f"removed {path} (no solution notebook of that name)")
        else:
            write_atomically(path, planned[name])
            print(f"wrote {path}")
    if not found:
        print("assignments are up to date")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("build", help="write assignments/ from solutions/")
    parser.add_argument("--check", action="store_true", help="exit 1 if assignments/ differs from what would be built")
    parser.add_argument("--solutions", type=Path, default=Path("solutions"), metavar="DIR")
    parser.add_argument("--assignments", type=Path, default=Path("assignments"), metavar="DIR")
    parser.set_defaults(run=lambda args: build(args.solutions, args.assignments, args.check))
