"""The one notebook loader: takes a notebook's definitions without running its top-level work.

Used by the grader's worker, `course generate --sampler`, `grader check` and the lectures.

    loaded = load_notebook("my_sampler.ipynb")
    fns = require(loaded.namespace, ["sample_next"], where="my_sampler.ipynb")

What is kept, from every code cell in order, whatever the cells' tags, ids or splitting:

- `import` and `from ... import` statements;
- function definitions (sync or async, decorated or not) and class definitions;
- simple constant assignments: every target is a name (or a tuple/list of names) and the value
  is built only from literals, names kept earlier, attribute and subscript access on those,
  operators, and calls of the pure builtins `float int bool str complex tuple frozenset`
  (so `EPS = 1e-9`, `VOCAB = ["a", "b"]`, `N = 2 ** 10`, `NEG_INF = float("-inf")`,
  `DTYPE = torch.float32` are kept; `x = train(model)`, `model = GPT(cfg)` are not);
  annotated assignments (`EPS: float = 1e-9`) likewise;
- `try` blocks made only of the above (and `pass`), such as an optional import with a fallback.

Everything else is dropped: calls, loops, prints, plots, `if __name__ == "__main__":` blocks,
augmented assignments (`N += 1`). A line of IPython syntax (`%time ...`, `!pip install ...`,
`x = !ls`, `f?`) is a statement that does nothing (`pass`), as the call IPython makes of it would be
dropped with the rest. A cell that starts with a cell magic is skipped, except the magics that run
their body as ordinary code in the session (`%%time`, `%%capture`, `%%prun`), whose body is read
like any cell. A cell with a syntax error is reported and skipped; the other cells keep their
definitions, and a name the broken cell would have defined is reported missing with that reason.

Reading a notebook is work the student's file sizes, so every part of it is bounded: the whole is
linear in the notebook's size (each statement's source is cut from line offsets computed once per
cell), and a notebook beyond these limits is refused with one sentence (a NotebookError). Each is
far above what a real notebook needs: the file (20 MB; outputs included), its JSON nesting (100
levels; nbformat's own structure takes 4, widget state about 10), cells (10,000), one cell's source
(1,000,000 characters, about 25,000 lines), all code cells together (4,000,000 characters) and the
statements kept (100,000). Finding the lines of IPython syntax parses a cell once more per such
line; that re-parsing stops at 4,000,000 characters per notebook, after which a cell's remaining
IPython lines are reported as the syntax errors they are in Python.

Cells are numbered 1-based among ALL cells of the notebook (markdown included), as a reader
counts them scrolling down. For a list of cell sources, a cell's number is its 1-based position
in the list: pass IPython's `In[1:]` so that cell n is `In [n]`.
"""

from __future__ import annotations
import __future__  # the module, for the compiler flags of the notebook's own future imports

import ast
import gc
import json
import linecache
import os
import re
import sys
import traceback
from collections.abc import Callable, Container, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from course.errors import UserError

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
MAX_JSON_DEPTH = 100
MAX_CELLS = 10_000
MAX_CELL_CHARS = 1_000_000
MAX_CODE_CHARS = 4_000_000
MAX_STATEMENTS = 100_000
MAX_REPARSED_CHARS = 4_000_000  # parsing done again to find lines of IPython syntax, per notebook
MODULE_NAME = "submission"  # the `__name__` the notebook's code sees

PURE_BUILTINS = frozenset({"float", "int", "bool", "str", "complex", "tuple", "frozenset"})
CODE_CELL_MAGICS = frozenset({"time", "capture", "prun"})  # cell magics whose body runs as plain code
LEADING_BLANK_LINES = re.compile(r"(?:[ \t\f]*\n)*")
PARSE_FLAGS = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
IPYTHON_LINE = re.compile(
    r"[ \t]*(?:[!%]"  # a magic or a shell command: `%time f(x)`, `!pip install x`
    r"|[\w., \t]+=[ \t]*[!%]"  # its output assigned: `files = !ls`
    r"|[\w.]+[ \t]*\?\??[ \t]*$)"  # help: `f?`, `torch.topk??`
)
DEFINITION_AT_LINE_START = re.compile(
    r"^(?:(?:async[ \t]+)?def|class)[ \t]+(\w+)|^(\w+)[ \t]*(?::[^=\n]*)?=(?!=)", re.M
)


class NotebookError(UserError):
    """A file that is not a readable Jupyter notebook."""


@dataclass
class Statement:
    cell: int  # 1-based among all cells of the notebook (or position in a list of sources)
    line: int  # 1-based line in the cell where the statement starts (its first decorator, if any)
    source: str
    name: str | None  # the name(s) it binds, comma-separated, for reporting


@dataclass
class ExtractedCode:
    statements: list[Statement] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # name -> why it was not loaded, for each name a cell that could not be parsed would have defined
    unparsed: dict[str, str] = field(default_factory=dict)


@dataclass
class LoadedNotebook:
    namespace: dict
    problems: list[str]
    unloaded: dict[str, str] = field(default_factory=dict)  # name -> why the notebook meant to define it but did not


# ---------------------------------------------------------------- reading the file


def read_notebook(path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES):
    """Read a notebook file as an nbformat NotebookNode, or raise NotebookError saying why it is not one."""
    label = str(path)
    refuse = partial(_not_a_notebook, label)
    path = Path(path)
    try:
        if not path.is_file():  # before opening: a FIFO would block
            raise refuse("it is not a regular file" if path.exists() else "there is no such file")
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)  # bounded even where the size on disk lies (pipes, devices)
    except OSError as e:
        raise refuse(f"the file cannot be read ({e.strerror or e})") from None
    return parse_notebook(data, label, max_bytes)


def parse_notebook(data: bytes, label: str, max_bytes: int = DEFAULT_MAX_BYTES):
    """A notebook file's bytes, already read (at most `max_bytes` + 1 of them), as an nbformat NotebookNode,
    or NotebookError saying why they are not one; `label` names the file in that sentence."""
    import nbformat

    refuse = partial(_not_a_notebook, label)
    if len(data) > max_bytes:
        raise refuse(f"the file is larger than the {_megabytes(max_bytes)} limit")
    if not data.strip():
        raise refuse("the file is empty")
    if b"\0" in data:
        raise refuse("the file holds binary data, not JSON text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise refuse("the file is not UTF-8 text") from None
    try:
        content = json.loads(text)
    except json.JSONDecodeError as e:
        raise refuse(f"the file is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise refuse("the file is not valid JSON (nested too deeply)") from None
    if _nested_deeper_than(content, MAX_JSON_DEPTH):  # nbformat.from_dict recurses: checked here, without recursion
        raise refuse(f"its JSON is nested more than {MAX_JSON_DEPTH} levels deep")
    _check_structure(content, refuse)
    return nbformat.from_dict(content)


def _not_a_notebook(label: str, reason: str) -> NotebookError:
    return NotebookError(f"{label} is not a Jupyter notebook: {reason}")


def _megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):g} MB"


def _nested_deeper_than(value, limit: int) -> bool:
    pending = [(value, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, (dict, list)):
            if depth > limit:
                return True
            pending.extend((child, depth + 1) for child in (value.values() if isinstance(value, dict) else value))
    return False


def _check_structure(content, refuse: Callable[[str], NotebookError]) -> None:
    """The least a notebook must be for its code cells to be read; stricter schema details are not required."""
    if not isinstance(content, dict):
        raise refuse(f"the file holds a JSON {_json_kind(content)}, not a notebook object")
    version = content.get("nbformat")
    if "cells" not in content and version is None:
        raise refuse("the JSON object has neither `cells` nor `nbformat`")
    if version != 4:
        raise refuse(f"it is nbformat version {version!r}; version 4 is needed (open and save it in Jupyter)")
    cells = content.get("cells")
    if not isinstance(cells, list):
        raise refuse("its `cells` is not a list")
    for number, cell in enumerate(cells, start=1):
        if not isinstance(cell, dict) or not isinstance(cell.get("cell_type"), str):
            raise refuse(f"cell {number} is not a cell object with a `cell_type`")
        source = cell.get("source")
        if not (isinstance(source, str) or (isinstance(source, list) and all(isinstance(s, str) for s in source))):
            raise refuse(f"cell {number} has no text `source`")


def _json_kind(value) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(value), "null")


def _code_cells(source, max_bytes: int) -> tuple[str, list[tuple[int, str]]]:
    """How to name the source in errors, and (cell number, text) of every code cell of a path, a
    notebook object or a list of cell sources, within the limits on cells and code."""
    if isinstance(source, (str, os.PathLike)):
        label, source = str(source), read_notebook(source, max_bytes)
    else:
        label = "the given notebook" if isinstance(source, Mapping) else "the list of cells"
    if isinstance(source, Mapping):
        _check_structure(source, lambda reason: NotebookError(f"{label} is not a Jupyter notebook: {reason}"))
        count = len(source["cells"])
        cells = [
            (number, _text(cell["source"]))
            for number, cell in enumerate(source["cells"], start=1)
            if cell["cell_type"] == "code"
        ]
    elif isinstance(source, Sequence) and all(isinstance(s, str) for s in source):
        count, cells = len(source), list(enumerate(source, start=1))
    else:
        raise UserError("expected a notebook path, a notebook object or a list of cell sources")
    _check_size(label, count, cells)
    return label, cells


def _check_size(label: str, count: int, cells: list[tuple[int, str]]) -> None:
    def refuse(reason: str) -> NotebookError:
        return NotebookError(f"{label} is too large to grade: {reason}")

    if count > MAX_CELLS:
        raise refuse(f"it has {count:,} cells (at most {MAX_CELLS:,})")
    for number, text in cells:
        if len(text) > MAX_CELL_CHARS:
            raise refuse(f"cell {number} holds {len(text):,} characters of code (at most {MAX_CELL_CHARS:,})")
    total = sum(len(text) for _, text in cells)
    if total > MAX_CODE_CHARS:
        raise refuse(f"its code cells hold {total:,} characters (at most {MAX_CODE_CHARS:,})")


def _text(source: str | list[str]) -> str:
    return source if isinstance(source, str) else "".join(source)


# ---------------------------------------------------------------- choosing the statements


def extract_code(source, *, max_bytes: int = DEFAULT_MAX_BYTES) -> ExtractedCode:
    """The kept statements of every code cell, in order, and the problems met. Runs nothing."""
    extracted = ExtractedCode()
    bound: set[str] = set()  # names bound by statements kept so far
    label, cells = _code_cells(source, max_bytes)
    reparsing = _Allowance(MAX_REPARSED_CHARS)
    with _no_cycle_collection():
        for number, text in cells:
            try:
                parsed = _parse_cell(text, f"<cell {number}>", reparsing)
                if parsed is None:
                    continue
                python, tree = parsed
                if isinstance(tree, SyntaxError):
                    where = f"line {tree.lineno} ({tree.msg})"
                    _unparsed(extracted, number, text, f"syntax error on {where}", f"has a syntax error at {where}")
                    continue
                kept = [(node, names) for node in tree.body if (names := _kept_names(node, bound)) is not None]
            except (ValueError, RecursionError, MemoryError) as e:  # null bytes, absurd nesting
                what = f"cannot be parsed ({type(e).__name__})"
                _unparsed(extracted, number, text, what, what)
                continue
            lines = _Lines(python)
            extracted.statements.extend(_statement(number, node, names, lines) for node, names in kept)
            if len(extracted.statements) > MAX_STATEMENTS:
                raise NotebookError(
                    f"{label} is too large to grade: it keeps more than {MAX_STATEMENTS:,} statements"
                    " (imports, definitions and constants)"
                )
    return extracted


@contextmanager
def _no_cycle_collection():
    """Syntax trees hold no reference cycles, yet building a large one sets off full collections that
    traverse all of it again and again (40% of the time on a 60,000-line cell): pause them meanwhile."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _unparsed(extracted: ExtractedCode, number: int, text: str, problem: str, predicate: str) -> None:
    """Report a cell that could not be parsed, and remember the names its lines start to define."""
    extracted.problems.append(f"cell {number}: {problem}; the cell was skipped")
    reason = f"cell {number} {predicate}, so nothing in that cell was loaded"
    for match in DEFINITION_AT_LINE_START.finditer(text):
        extracted.unparsed[match.group(1) or match.group(2)] = reason


def plain_python(cell: str) -> str | None:
    """The cell with IPython syntax turned into Python, line numbers unchanged; None for a non-Python cell magic."""
    try:
        parsed = _parse_cell(cell, "<cell>", _Allowance(MAX_REPARSED_CHARS))
    except (ValueError, RecursionError, MemoryError):
        return _cell_body(cell)  # parsing it again reports the problem
    return None if parsed is None else parsed[0]


@dataclass
class _Allowance:
    left: int


def _cell_body(cell: str) -> str | None:
    """The cell's Python, newlines made `\n`: all of it, or a code cell magic's body in its place; None for other cell magics."""
    text = cell.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        return None
    first = LEADING_BLANK_LINES.match(text).end()
    if not text.startswith("%%", first):
        return text
    first_end = text.find("\n", first)
    magic = text[first + 2 : len(text) if first_end < 0 else first_end].split(maxsplit=1)
    if not magic or magic[0] not in CODE_CELL_MAGICS:
        return None
    return "" if first_end < 0 else "\n" * text.count("\n", 0, first_end + 1) + text[first_end + 1 :]


def _parse_cell(cell: str, filename: str, reparsing: _Allowance) -> tuple[str, ast.Module | SyntaxError] | None:
    """The cell's Python and its syntax tree (or the syntax error that stops it), or None for a cell
    magic that is not Python. Each line of IPython syntax that Python rejects becomes `pass`, and the
    cell is parsed again, as long as `reparsing` allows."""
    python = _cell_body(cell)
    if python is None:
        return None
    while True:
        try:
            return python, compile(python, filename, "exec", PARSE_FLAGS, dont_inherit=True)
        except SyntaxError as error:
            repaired = _without_ipython_line(python, error)
            if repaired is None or reparsing.left < len(repaired):
                return python, error
            python = repaired
            reparsing.left -= len(python)


def _without_ipython_line(python: str, error: SyntaxError) -> str | None:
    """The text with the line that `error` is on made `pass`, if that line is IPython syntax; else None."""
    if not error.lineno or error.lineno < 1:
        return None
    start = 0
    for _ in range(error.lineno - 1):
        start = python.find("\n", start) + 1
        if start == 0:
            return None
    end = python.find("\n", start)
    end = len(python) if end < 0 else end
    line = python[start:end]
    if not IPYTHON_LINE.match(line):
        return None
    indent = line[: len(line) - len(line.lstrip(" \t"))]
    return python[:start] + indent + "pass" + python[end:]


def _kept_names(node: ast.stmt, bound: set[str]) -> list[str] | None:
    """The names a top-level statement binds if it is kept (and adds them to `bound`); None if it is not."""
    if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        keep = True
    elif isinstance(node, ast.Assign):
        keep = all(_is_name_target(t) for t in node.targets) and _is_simple_value(node.value, bound)
    elif isinstance(node, ast.AnnAssign):
        keep = isinstance(node.target, ast.Name) and node.value is not None and _is_simple_value(node.value, bound)
    elif isinstance(node, ast.Try):
        keep = _is_definitions_only_try(node, bound)
    else:
        keep = False
    if not keep:
        return None
    names = _bound_names(node)
    bound.update(names)
    return names


def _is_definitions_only_try(node: ast.Try, bound: set[str]) -> bool:
    inner = set(bound)
    blocks = [node.body, node.orelse, node.finalbody, *(handler.body for handler in node.handlers)]
    return all(_is_exception_spec(handler.type) for handler in node.handlers) and all(
        isinstance(statement, ast.Pass) or _kept_names(statement, inner) is not None
        for block in blocks
        for statement in block
    )


def _is_exception_spec(node: ast.expr | None) -> bool:
    """What may follow `except`: nothing, a (dotted) name, or a tuple of them."""
    match node:
        case None | ast.Name():
            return True
        case ast.Attribute(value=value):
            return _is_exception_spec(value)
        case ast.Tuple(elts=items):
            return all(map(_is_exception_spec, items))
    return False


def _is_name_target(target: ast.expr) -> bool:
    if isinstance(target, ast.Name):
        return True
    if isinstance(target, ast.Starred):
        return _is_name_target(target.value)
    return isinstance(target, (ast.Tuple, ast.List)) and all(_is_name_target(t) for t in target.elts)


def _is_simple_value(node: ast.expr | None, bound: set[str]) -> bool:
    """Literals, kept names, and operators, attributes and subscripts on them: nothing that runs user code."""
    simple = lambda child: _is_simple_value(child, bound)  # noqa: E731
    match node:
        case None | ast.Constant():
            return True
        case ast.Name(id=name):
            return name in bound
        case ast.Attribute(value=value) | ast.Starred(value=value):
            return simple(value)
        case ast.Tuple(elts=items) | ast.List(elts=items) | ast.Set(elts=items):
            return all(map(simple, items))
        case ast.Dict(keys=keys, values=values):
            return None not in keys and all(map(simple, keys + values))
        case ast.UnaryOp(operand=operand):
            return simple(operand)
        case ast.BinOp(left=left, right=right):
            return simple(left) and simple(right)
        case ast.BoolOp(values=values):
            return all(map(simple, values))
        case ast.Compare(left=left, comparators=comparators):
            return simple(left) and all(map(simple, comparators))
        case ast.Subscript(value=value, slice=index):
            return simple(value) and simple(index)
        case ast.Slice(lower=lower, upper=upper, step=step):
            return simple(lower) and simple(upper) and simple(step)
        case ast.Call(func=ast.Name(id=name), args=args, keywords=[]):
            return name in PURE_BUILTINS and name not in bound and all(map(simple, args))
    return False


def _bound_names(node: ast.stmt) -> list[str]:
    match node:
        case ast.Import(names=aliases):
            return [alias.asname or alias.name.split(".")[0] for alias in aliases]
        case ast.ImportFrom(names=aliases):
            return [alias.asname or alias.name for alias in aliases if alias.name != "*"]
        case ast.FunctionDef(name=name) | ast.AsyncFunctionDef(name=name) | ast.ClassDef(name=name):
            return [name]
        case ast.Assign(targets=targets):
            return [name for target in targets for name in _target_names(target)]
        case ast.AnnAssign(target=ast.Name(id=name)):
            return [name]
        case ast.Try():
            inner = [*node.body, *node.orelse, *node.finalbody, *(s for h in node.handlers for s in h.body)]
            return list(dict.fromkeys(name for s in inner for name in _bound_names(s)))
    return []


def _target_names(target: ast.expr) -> list[str]:
    match target:
        case ast.Name(id=name):
            return [name]
        case ast.Starred(value=value):
            return _target_names(value)
        case ast.Tuple(elts=items) | ast.List(elts=items):
            return [name for item in items for name in _target_names(item)]
    return []


class _Lines:
    """A cell's text as UTF-8 (the encoding of the parser's column offsets) with each line's start
    computed once, so that cutting out a statement costs only the statement's length."""

    def __init__(self, python: str):
        self.data = python.encode()
        self.starts = [0]
        position = self.data.find(b"\n")
        while position >= 0:
            self.starts.append(position + 1)
            position = self.data.find(b"\n", position + 1)

    def segment(self, line: int, column: int, end_line: int, end_column: int) -> str:
        return self.data[self.starts[line - 1] + column : self.starts[end_line - 1] + end_column].decode()

    def whole_lines(self, first: int, last: int) -> str:
        end = self.starts[last] - 1 if last < len(self.starts) else len(self.data)
        return self.data[self.starts[first - 1] : end].decode()


def _statement(cell: int, node: ast.stmt, names: list[str], lines: _Lines) -> Statement:
    decorators = getattr(node, "decorator_list", [])
    start = min([node.lineno, *(d.lineno for d in decorators)])
    if isinstance(node, (ast.Import, ast.ImportFrom, ast.Assign, ast.AnnAssign)):  # exact: may share its line after `;`
        source = lines.segment(node.lineno, node.col_offset, node.end_lineno, node.end_col_offset)
    else:  # a compound statement always owns its lines (and its decorators' lines)
        source = lines.whole_lines(start, node.end_lineno)
    return Statement(cell=cell, line=start, source=source, name=", ".join(names) or None)


# ---------------------------------------------------------------- running them


def run_code(extracted: ExtractedCode, namespace: dict | None = None) -> tuple[dict, list[str]]:
    """Execute the kept statements in order, each on its own, in one module-like namespace.

    A statement that raises an `Exception` costs only itself (and, at call time, what uses it):
    its problem is reported and the next statement runs. `BaseException`s that are not `Exception`s
    (SystemExit, KeyboardInterrupt) propagate on purpose: the grader's worker process decides what a
    student's `exit()` means. This is not a sandbox: decorators, class bodies and imports run the
    notebook's code with the caller's rights.
    """
    namespace = {} if namespace is None else namespace
    namespace.setdefault("__name__", MODULE_NAME)
    _register_sources(extracted.statements)
    with _findable_module(namespace):
        problems = _run_statements(extracted.statements, namespace)
    return namespace, problems


@contextmanager
def _findable_module(namespace: dict):
    """While the code runs, `sys.modules[__name__]` is the namespace, as for an imported module:
    `dataclasses` and `typing` look a class's module up there to resolve string annotations.
    A real module of that name (such as `__main__`) is never shadowed."""
    name = namespace["__name__"]
    if name in sys.modules:
        yield
        return
    sys.modules[name] = _ModuleView(namespace)
    try:
        yield
    finally:
        sys.modules.pop(name, None)


class _ModuleView:
    """Stands in for a module object: its attributes are the namespace's entries, live."""

    def __init__(self, namespace: dict):
        self.__dict__ = namespace


def _run_statements(statements: list[Statement], namespace: dict) -> list[str]:
    problems: list[str] = []
    future_flags = 0  # `from __future__ import annotations` in one cell holds for the cells after it
    for statement in statements:
        filename = f"<cell {statement.cell}>"
        try:
            tree = compile(statement.source, filename, "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
            ast.increment_lineno(tree, statement.line - 1)  # its line in the cell, at a cost independent of it
            exec(compile(tree, filename, "exec", future_flags, dont_inherit=True), namespace)
        except Exception as e:
            problems.append(f"cell {statement.cell}: {_failure(statement, e)}")
            continue
        future_flags |= _future_flags(statement.source)
    return problems


def _register_sources(statements: list[Statement]) -> None:
    """Put each cell's kept lines in linecache, so tracebacks and `inspect.getsource` show them."""
    cells: dict[int, list[str]] = {}
    for statement in statements:
        lines = cells.setdefault(statement.cell, [])
        own = statement.source.splitlines(keepends=True)
        end = statement.line - 1 + len(own)
        lines.extend("\n" for _ in range(end - len(lines)))
        lines[statement.line - 1 : end] = [line if line.endswith("\n") else line + "\n" for line in own]
    for cell, lines in cells.items():
        filename = f"<cell {cell}>"
        linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)  # mtime None: never evicted


def _future_flags(source: str) -> int:
    if not source.startswith("from __future__"):
        return 0
    node = ast.parse(source).body[0]
    return sum(getattr(__future__, alias.name).compiler_flag for alias in node.names)


def _failure(statement: Statement, error: Exception) -> str:
    reason = describe_exception(error)
    node = _parse_quietly(statement.source)
    if isinstance(node, ast.Import):
        modules = ", ".join(alias.name for alias in node.names)
        return f"import of '{modules}' failed ({reason}); functions that use it will fail"
    if isinstance(node, ast.ImportFrom):
        module = "." * node.level + (node.module or "")
        return f"import from '{module}' failed ({reason}); functions that use it will fail"
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return f"defining `{statement.name}` failed ({reason}); it is missing"
    return f"line {statement.line} failed ({reason}); `{statement.name}` may be missing"


def _parse_quietly(source: str) -> ast.stmt | None:
    try:
        return ast.parse(source).body[0]
    except (SyntaxError, ValueError, RecursionError, IndexError):
        return None


def describe_exception(error: BaseException) -> str:
    """'ValueError: first line of the message', at most 200 characters, whatever the exception does."""
    try:  # a hostile exception may fail to print itself
        message = str(error).strip().splitlines()
        text = f"{type(error).__name__}: {message[0]}" if message else type(error).__name__
    except Exception:
        text = "an exception that cannot be printed"
    return text if len(text) <= 200 else text[:197] + "..."


def notebook_location(error: BaseException) -> str | None:
    """'cell 7, line 3': where in the notebook's code the error was raised (its innermost such frame)."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename.startswith("<cell ")]
    return f"{frames[-1].filename.strip('<>')}, line {frames[-1].lineno}" if frames else None


# ---------------------------------------------------------------- the whole thing


def load_notebook(source, namespace: dict | None = None, *, max_bytes: int = DEFAULT_MAX_BYTES) -> LoadedNotebook:
    """Extract a notebook's definitions and run them: the namespace and every problem met."""
    extracted = extract_code(source, max_bytes=max_bytes)
    namespace, problems = run_code(extracted, namespace)
    return LoadedNotebook(namespace, extracted.problems + problems, missing_reasons(extracted, namespace))


def missing_reasons(extracted: ExtractedCode, defined: Container[str]) -> dict[str, str]:
    """Each name the notebook meant to define that `defined` lacks, with why: the kept statement that
    defines it failed when it ran, or the cell that would have defined it could not be parsed."""
    reasons = {
        name: f"defining it at cell {statement.cell}, line {statement.line} failed when the notebook was loaded"
        for statement in extracted.statements
        for name in (statement.name.split(", ") if statement.name else ())
    }
    reasons.update(extracted.unparsed)
    return {name: reason for name, reason in reasons.items() if name not in defined}


def require(
    namespace: Mapping,
    names: Sequence[str],
    *,
    where: str = "the notebook",
    why: str | None = None,
    unloaded: Mapping[str, str] | None = None,
) -> dict[str, Callable]:
    """The named functions (or classes), or one UserError naming every one that is missing or not
    callable, and why a missing one is (`unloaded`, such as `LoadedNotebook.unloaded`)."""
    missing = [name for name in names if not callable(namespace.get(name))]
    if missing:
        listed = ", ".join(f"`{name}`" for name in missing)
        message = f"{where} defines no {listed}" if len(missing) == 1 else f"{where} defines none of {listed}"
        not_callable = [name for name in missing if name in namespace]
        if not_callable:
            message += f" ({', '.join(f'`{n}`' for n in not_callable)} is not a function)"
        unloaded = unloaded or {}
        reasons = dict.fromkeys(unloaded[name] for name in missing if name in unloaded)  # each once, in order
        if reasons:
            message += ": " + "; ".join(reasons)
        raise UserError(message + (f"; {why}" if why else ""))
    return {name: namespace[name] for name in names}
