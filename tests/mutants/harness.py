"""Grading many notebooks of one assignment in a few `grader batch` runs, cached per test process.

The notebooks of an assignment: the solution, the blank student notebook, every mutant of its folder's
mutants.toml (the solution with one mistake, patches.py), every correct implementation in
another style and a notebook written before the assignment grew (tests/mutants/styles.py). One batch grades
those that all the assignment's tests grade, and one more batch each test file that alone grades some
mutants (their `graded_by`). The mutation and style tests read the same results, so each notebook is
graded once.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat

from course.assignments import find
from course.kit import ROOT
from mutants.patches import apply, assignments_with_mutants, mutants, solution_notebook

ASSIGNMENTS = assignments_with_mutants()


@dataclass
class Graded:
    score: float
    max_score: float
    results: dict  # the Gradescope results.json

    @property
    def failed(self) -> list[dict]:
        return [t for t in self.results["tests"] if t["score"] < t["max_score"]]


def notebook_with_cells(base: Path, extra_cells: list[str]) -> nbformat.NotebookNode:
    notebook = nbformat.read(base, as_version=4)
    for source in extra_cells:
        notebook.cells.append(nbformat.v4.new_code_cell(source))
    return notebook


def notebook_from_cells(cells: list[str]) -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])


def _planned_notebooks(assignment: str) -> dict[str | None, dict[str, nbformat.NotebookNode]]:
    """test file that alone grades them (None: all the assignment's tests) -> notebook name -> notebook."""
    from mutants.styles import EARLIER, STYLES  # noqa: PLC0415 -- correct implementations in other styles

    solution = solution_notebook(assignment)
    planned = {
        "solution": solution,
        "blank": nbformat.read(find(assignment).notebook, as_version=4),
    }
    for name, make in STYLES.get(assignment, {}).items():
        planned[f"style-{name}"] = make()
    if assignment in EARLIER:
        planned["earlier"] = EARLIER[assignment][0]()
    groups: dict[str | None, dict[str, nbformat.NotebookNode]] = {None: planned}
    for name, mutant in mutants(assignment).items():
        groups.setdefault(mutant.graded_by, {})[f"mutant-{name}"] = apply(solution, mutant, assignment)
    return groups


def _tests_with_only(assignment: str, test_file: str, folder: Path) -> Path:
    """A copy of the assignment's tests folder whose one test file is `test_file`, as its hidden tests."""
    tests, kit_tests = folder / assignment, find(assignment).folder
    shutil.copytree(kit_tests, tests, ignore=lambda _, names: [n for n in names if n.startswith("test_")])
    shutil.copy(kit_tests / test_file, tests / "test_hidden.py")  # the grader runs test_visible/test_hidden
    return folder


def _grade_batch(assignment: str, notebooks: dict[str, nbformat.NotebookNode], folder: Path, tests_dir: Path | None):
    """Every notebook graded by one `grader batch` run (a fresh process: grading forks, and a fork of a process
    whose torch thread pool has run can deadlock); name -> Graded."""
    inbox = folder / "notebooks"
    inbox.mkdir(parents=True)
    for name, notebook in notebooks.items():
        nbformat.write(notebook, inbox / f"{name}.ipynb")
    results_dir = folder / "results"
    command = [sys.executable, "-m", "grader.cli", "batch", str(inbox), "--assignment", assignment]
    command += ["--jobs", str(min(2, os.cpu_count() or 1)), "--results-dir", str(results_dir), "--quiet"]
    command += ["--tests-dir", str(tests_dir)] if tests_dir else []
    run = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=1500)
    assert run.returncode == 0, f"grader batch failed:\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
    out = {}
    for name in notebooks:
        path = results_dir / f"{name}.json"
        assert path.is_file(), f"no results for {name} in {sorted(p.name for p in results_dir.iterdir())}"
        results = json.loads(path.read_text())
        max_score = results.get("max_score", sum(t["max_score"] for t in results["tests"]))
        out[name] = Graded(results["score"], max_score, results)
    return out


@functools.cache
def graded(assignment: str) -> dict[str, Graded]:
    """Grade every planned notebook of the assignment; name -> Graded."""
    folder = Path(tempfile.mkdtemp(prefix=f"graded-{assignment}-"))
    atexit.register(shutil.rmtree, folder, True)
    out = {}
    for number, (test_file, notebooks) in enumerate(_planned_notebooks(assignment).items()):
        batch = folder / f"batch-{number}"
        tests_dir = _tests_with_only(assignment, test_file, batch / "tests") if test_file else None
        out.update(_grade_batch(assignment, notebooks, batch, tests_dir))
    return out
