"""Grading many notebooks of one assignment in a single `grader batch` run, cached per test process.

One batch per assignment holds: the solution notebook, the blank student notebook, every mutant of
tests/mutants/<assignment>/, every correct implementation in another style and a notebook written before the
assignment grew (tests/mutants/styles.py).
The assignment, mutation and style tests all read the same results, so each notebook is graded once.
"""

from __future__ import annotations

import ast
import atexit
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat

from course.kit import ROOT

MUTANTS = Path(__file__).resolve().parent
ASSIGNMENTS = ("02_sampling", "03_penalties", "05_decoding")


@dataclass
class Graded:
    score: float
    max_score: float
    results: dict  # the Gradescope results.json

    @property
    def failed(self) -> list[dict]:
        return [t for t in self.results["tests"] if t["score"] < t["max_score"]]


def mutants(assignment: str) -> dict[str, tuple[str, str]]:
    """name -> (description, code) for every mutant file of the assignment."""
    found = {}
    for path in sorted((MUTANTS / assignment).glob("*.py")):
        code = path.read_text()
        found[path.stem] = (ast.get_docstring(ast.parse(code)) or path.stem, code)
    return found


def symptom(code: str) -> str | None:
    """The regular expression of a mutant's `# symptom: REGEX` line: what the feedback of a failed test must say."""
    found = re.search(r"^# symptom: (.+)$", code, flags=re.MULTILINE)
    return found.group(1).strip() if found else None


def notebook_with_cells(base: Path, extra_cells: list[str]) -> nbformat.NotebookNode:
    notebook = nbformat.read(base, as_version=4)
    for source in extra_cells:
        notebook.cells.append(nbformat.v4.new_code_cell(source))
    return notebook


def notebook_from_cells(cells: list[str]) -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])


def _planned_notebooks(assignment: str) -> dict[str, nbformat.NotebookNode]:
    from mutants.styles import EARLIER, STYLES  # noqa: PLC0415 -- correct implementations in other styles

    solution = ROOT / "solutions" / f"{assignment}.ipynb"
    planned = {
        "solution": nbformat.read(solution, as_version=4),
        "blank": nbformat.read(ROOT / "assignments" / f"{assignment}.ipynb", as_version=4),
    }
    for name, (_, code) in mutants(assignment).items():
        planned[f"mutant-{name}"] = notebook_with_cells(solution, [code])
    for name, make in STYLES.get(assignment, {}).items():
        planned[f"style-{name}"] = make()
    if assignment in EARLIER:
        planned["earlier"] = EARLIER[assignment][0]()
    return planned


@functools.cache
def graded(assignment: str) -> dict[str, Graded]:
    """Grade every planned notebook of the assignment in one batch; name -> Graded."""
    folder = Path(tempfile.mkdtemp(prefix=f"graded-{assignment}-"))
    atexit.register(shutil.rmtree, folder, True)
    notebooks = folder / "notebooks"
    notebooks.mkdir()
    for name, notebook in _planned_notebooks(assignment).items():
        nbformat.write(notebook, notebooks / f"{name}.ipynb")
    results_dir = folder / "results"
    command = [sys.executable, "-m", "grader.cli", "batch", str(notebooks), "--assignment", assignment]
    command += ["--jobs", str(min(2, os.cpu_count() or 1)), "--results-dir", str(results_dir), "--quiet"]
    run = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=1500)
    assert run.returncode == 0, f"grader batch failed:\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
    out = {}
    for path in sorted(notebooks.glob("*.ipynb")):
        candidates = list(results_dir.glob(f"{path.stem}*.json"))
        assert candidates, f"no results for {path.name} in {sorted(p.name for p in results_dir.iterdir())}"
        results = json.loads(candidates[0].read_text())
        max_score = results.get("max_score", sum(t["max_score"] for t in results["tests"]))
        out[path.stem] = Graded(results["score"], max_score, results)
    return out
