"""Mutation tests of the 04_kv_cache grader: every wrong cache or generate in tests/mutants_kv/ must lose
points, with feedback that names its symptom.

Each mutant is a small Python file that redefines `KVCache` and/or `generate`; it is graded as the
solution notebook with one more code cell holding the mutant (the later definition wins, as it does
for a student who redefines a function further down). Its `# symptom: REGEX` line says what the
feedback of at least one failed test must mention. The table of points lost is printed after the results.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course.kit import ROOT

SOLUTION = ROOT / "solutions" / "04_kv_cache.ipynb"
MUTANTS = sorted((Path(__file__).parent / "mutants_kv").glob("*.py"))

pytestmark = pytest.mark.slow


def _symptom(path: Path) -> re.Pattern:
    for line in path.read_text().splitlines():
        if line.startswith("# symptom:"):
            return re.compile(line.removeprefix("# symptom:").strip())
    raise AssertionError(f"{path.name} has no '# symptom: REGEX' line")


def _description(path: Path) -> str:
    text = path.read_text().strip()
    return text.split('"""')[1].strip() if text.startswith('"""') else path.stem


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> dict[str, dict]:
    """Every mutant notebook graded by one `grader batch` run (a fresh process: grading forks, and a fork of a
    process whose torch thread pool has run can deadlock)."""
    folder = tmp_path_factory.mktemp("kv-mutants")
    for mutant in MUTANTS:
        notebook = nbformat.read(SOLUTION, as_version=4)
        notebook.cells.append(nbformat.v4.new_code_cell(mutant.read_text()))
        nbformat.write(notebook, folder / f"04_kv_cache-{mutant.stem}.ipynb")
    command = [sys.executable, "-m", "grader.cli", "batch", str(folder), "--assignment", "04_kv_cache", "--jobs", "2",
               "--quiet"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-2000:]
    return {m.stem: json.loads((folder / "results" / f"04_kv_cache-{m.stem}.json").read_text()) for m in MUTANTS}


def test_mutant_suite_is_big_enough():
    assert len(MUTANTS) >= 8, [p.name for p in MUTANTS]


@pytest.mark.parametrize("mutant", MUTANTS, ids=[p.stem for p in MUTANTS])
def test_mutant_loses_points_with_its_symptom(mutant, graded, mutant_table):
    results = graded[mutant.stem]
    total = sum(t["max_score"] for t in results["tests"])
    failed = [t for t in results["tests"] if t["score"] < t["max_score"]]
    first = failed[0]["output"].splitlines()[0] if failed else ""
    table = mutant_table("04_kv_cache: points each mutant lost", "mutant", "lost", "first failed test's feedback")
    table.append((mutant.stem, f"{total - results['score']:g}/{total:g}", first[:110]))
    assert failed, f"{mutant.stem} ({_description(mutant)}) scored full marks"
    pattern = _symptom(mutant)
    assert any(pattern.search(t["output"]) for t in failed), (
        f"{mutant.stem}: no failed test's feedback matches {pattern.pattern!r}; feedback was:\n"
        + "\n".join(f"- {t['name']}: {t['output']}" for t in failed)
    )
