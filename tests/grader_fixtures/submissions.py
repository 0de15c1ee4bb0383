"""Submissions of the example assignment (tests/grader_fixtures/assignments/00_example), built at test time.

A submission is the solution with some definitions replaced: `notebook(path, add_one=...)`.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

FIXTURES = Path(__file__).resolve().parent
ASSIGNMENTS = FIXTURES / "assignments"
SOLUTION = FIXTURES / "00_example.ipynb"

# test function -> the definitions it needs
TESTS = {
    "test_add_one": {"add_one"},
    "test_pick": {"pick"},
    "test_pick_rejects_empty": {"pick"},
    "test_count": {"count"},
    "test_draw_uses_the_generator": {"draw"},
    "test_counter_handle": {"Counter"},
    "test_apply_twice_calls_back": {"apply_twice"},
}
MAX_SCORE = 9


def solution_cells() -> dict[str, str]:
    """The solution's code cells by the name they define ('' for the imports)."""
    cells = {}
    for cell in nbformat.read(SOLUTION, as_version=4).cells:
        if cell.cell_type == "code":
            first = cell.source.split("\n", 1)[0]
            name = first.split()[1].split("(")[0].rstrip(":") if first.startswith(("def ", "class ")) else ""
            cells[name] = cell.source
    return cells


def notebook(path: Path, *extra_cells: str, omit=(), **replaced: str) -> Path:
    """Write the solution with `replaced` definitions, without `omit`, plus `extra_cells` (first)."""
    cells = solution_cells()
    sources = list(extra_cells) + [replaced.get(name, source) for name, source in cells.items() if name not in omit]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    nbformat.write(nb, path)
    return path


def needing(*names: str) -> set[str]:
    return {test for test, needs in TESTS.items() if needs & set(names)}
