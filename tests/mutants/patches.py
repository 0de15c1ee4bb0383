"""Mutants as patches: each mutant is the solution notebook with one mistake, made at test time.

`grader/assignments/NN_name/mutants.toml` lists the assignment's mutants, one `[[mutant]]` table each:

    [[mutant]]
    name = "minp_one_bar_for_the_batch"     # a short id, unique in the file
    wrong = "min-p sets one bar for the whole batch, from the largest probability of any row"
    symptom = "own largest probability"     # optional: a regular expression the feedback of a failed test matches
    function = "min_p_filter"               # where the mistake goes: a function, or a method as "KVCache.update"
    find = "probs.amax(dim=-1, keepdim=True)"   # text of that function in solutions/NN_name.ipynb, once
    replace = "probs.max()"

`graded_by = "test_hidden_batches.py"` (optional) has the mutant graded by that test file of the assignment alone.

A mistake that needs more than one edit adds `[[mutant.also]]` tables (`function`, default the mutant's,
`find`, `replace`), applied in order. The edits are made to the solution notebook as it is now, so a
mutant always stays one mistake away from the current solution; when the solution changes under a
patch, the patch no longer applies and `StalePatch` says which one to update.
"""

from __future__ import annotations

import ast
import copy
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

from course.assignments import MUTANTS_FILE, assignments, find, tomllib
from course.kit import ROOT

MINIMUM_PER_ASSIGNMENT = 10  # mutants for every assignment that has graded functions (CONTRIBUTING.md)

REQUIRED = ("name", "wrong", "function", "find", "replace")
OPTIONAL = ("symptom", "graded_by", "also")
EDIT_KEYS = ("function", "find", "replace")


class MutantFileError(Exception):
    """A mutant file that cannot be read as mutants (a missing key, a typo, two mutants of one name)."""


class StalePatch(Exception):
    """A patch that no longer fits the solution notebook: the solution changed, the patch must follow."""


@dataclass(frozen=True)
class Edit:
    function: str  # "top_k_filter", or "KVCache.update" for a method
    find: str
    replace: str


@dataclass(frozen=True)
class Mutant:
    name: str
    wrong: str
    edits: tuple[Edit, ...]
    symptom: str | None = None
    graded_by: str | None = None  # a test file of the assignment, or None for all of them


def mutant_file(assignment: str) -> Path:
    return find(assignment).folder / MUTANTS_FILE


def assignments_with_mutants() -> list[str]:
    return [one.name for one in assignments() if (one.folder / MUTANTS_FILE).is_file()]


def load_mutants(path: Path) -> dict[str, Mutant]:
    """name -> Mutant for every `[[mutant]]` table of a mutant file, checked for what a typo would break."""
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    try:
        tables = tomllib.loads(path.read_text()).get("mutant", [])
    except tomllib.TOMLDecodeError as error:
        raise MutantFileError(f"{where} is not valid TOML: {error}") from None
    found: dict[str, Mutant] = {}
    for number, table in enumerate(tables, start=1):
        label = f"{where}, mutant {table.get('name', f'number {number}')!r}"
        _check_keys(table, REQUIRED, OPTIONAL, label)
        if table["name"] in found:
            raise MutantFileError(f"{label}: a second mutant of that name")
        edits = [Edit(table["function"], table["find"], table["replace"])]
        also = table.get("also", [])
        if not isinstance(also, list) or not all(isinstance(extra, dict) for extra in also):
            raise MutantFileError(f"{label}: `also` should be [[mutant.also]] tables")
        for extra in also:
            _check_keys(extra, ("find", "replace"), ("function",), f"{label}, `also` edit")
            edits.append(Edit(extra.get("function", table["function"]), extra["find"], extra["replace"]))
        for edit in edits:
            if not edit.find or edit.find == edit.replace:
                raise MutantFileError(f"{label}: an edit must find some text and replace it with other text")
        try:
            re.compile(table.get("symptom", ""))
        except re.error as error:
            raise MutantFileError(f"{label}: `symptom` is not a regular expression ({error})") from None
        found[table["name"]] = Mutant(
            table["name"], table["wrong"], tuple(edits), table.get("symptom"), table.get("graded_by")
        )
    return found


def _check_keys(table: dict, required: tuple[str, ...], optional: tuple[str, ...], label: str) -> None:
    missing = [key for key in required if key not in table]
    unknown = sorted(set(table) - set(required) - set(optional))
    if missing or unknown:
        raise MutantFileError(
            f"{label}: missing {missing or 'nothing'}, unknown {unknown or 'nothing'} "
            f"(expected the keys {', '.join(required + optional)})"
        )
    for key, value in table.items():
        if key != "also" and not isinstance(value, str):
            raise MutantFileError(f"{label}: `{key}` should be a string, got {type(value).__name__}")


def mutants(assignment: str) -> dict[str, Mutant]:
    """name -> Mutant of the assignment (none when it has no mutant file)."""
    path = mutant_file(assignment)
    return load_mutants(path) if path.is_file() else {}


def solution_notebook(assignment: str) -> nbformat.NotebookNode:
    return nbformat.read(find(assignment).solution, as_version=4)


def apply(solution: nbformat.NotebookNode, mutant: Mutant, assignment: str) -> nbformat.NotebookNode:
    """A copy of the assignment's solution notebook with the mutant's edits, made in the cells that define
    the functions they name.

    Raises StalePatch when a function is not defined exactly once, when a `find` text does not occur exactly
    once in its function, or when the edited cell no longer parses."""
    notebook = copy.deepcopy(solution)
    where = f"solutions/{assignment}.ipynb"
    label = f"{mutant_file(assignment).relative_to(ROOT).as_posix()}, mutant {mutant.name!r}"
    for edit in mutant.edits:
        cell, start, end = _locate(notebook, edit.function, f"{label}: {edit.function} is defined", where)
        source = cell.source
        segment = source[start:end]
        count = segment.count(edit.find)
        if count != 1:
            what = "no longer occurs" if count == 0 else f"occurs {count} times"
            advice = (
                "the solution changed since the patch was written: update `find` and `replace` so that the mutant "
                "makes the same mistake in the current code"
                if count == 0
                else "make `find` longer, so that it names one place"
            )
            raise StalePatch(
                f"{label}: the text to find {what} in {edit.function} of {where}: {advice}.\n  find: {edit.find!r}"
            )
        cell.source = source[:start] + segment.replace(edit.find, edit.replace) + source[end:]
        try:
            ast.parse(cell.source)
        except SyntaxError as error:
            raise StalePatch(
                f"{label}: after the edit of {edit.function}, its cell does not parse "
                f"({error.msg}, line {error.lineno}): check the indentation of `replace`"
            ) from None
    return notebook


def _locate(notebook: nbformat.NotebookNode, function: str, refusal: str, where: str):
    """(cell, start, end): the one code cell defining `function`, and the character span of the definition."""
    found = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue  # a cell with IPython syntax defines nothing a patch can name
        found += [(cell, node) for name, node in _definitions(tree) if name == function]
    if len(found) != 1:
        raise StalePatch(f"{refusal} {len(found)} times in {where}; a patch needs one definition: update `function`")
    cell, node = found[0]
    first = min([node.lineno] + [decorator.lineno for decorator in node.decorator_list])
    line_ends = [match.end() for match in re.finditer(r"\r\n?|\n", cell.source)] + [len(cell.source)]
    return cell, ([0] + line_ends)[first - 1], line_ends[node.end_lineno - 1]


def _definitions(tree: ast.Module):
    """(qualified name, node) of each top-level function and class, and of each class's methods."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.name, node
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield f"{node.name}.{item.name}", item


def mutant_notebooks(assignment: str) -> dict[str, nbformat.NotebookNode]:
    """name -> the solution notebook with that mutant's mistake, for every mutant of the assignment."""
    solution = solution_notebook(assignment)
    return {name: apply(solution, mutant, assignment) for name, mutant in mutants(assignment).items()}


def solution_functions_with_regions(assignment: str) -> list[str]:
    """The functions and methods of the solution notebook that hold a solution region (what the student writes)."""
    found = []
    for cell in solution_notebook(assignment).cells:
        if cell.cell_type != "code" or "BEGIN SOLUTION" not in cell.source:
            continue
        lines = cell.source.splitlines()
        for name, node in _definitions(ast.parse(cell.source)):
            if not isinstance(node, ast.ClassDef) and any(
                "BEGIN SOLUTION" in line for line in lines[node.lineno - 1 : node.end_lineno]
            ):
                found.append(name)
    return found


def graded_assignments() -> list[str]:
    """The assignments whose manifest declares graded functions: each needs MINIMUM_PER_ASSIGNMENT mutants."""
    return [one.name for one in assignments() if one.graded]
