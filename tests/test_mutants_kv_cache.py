"""Mutation tests of the 04_kv_cache grader: every wrong cache, attention step or decoding loop in tests/mutants_kv/
must lose points, with feedback that names its symptom, and every correct one written in another style in
tests/mutants_kv/correct/ must score full marks.

Each mutant is a small Python file that redefines `KVCache`, `attend`, `left_pad`, `generate` and/or
`generate_batch`; it is graded as the solution notebook with one more code cell holding the mutant (the later
definition wins, as it does for a student who redefines a function further down). Its `# symptom: REGEX` line says
what the feedback of at least one failed test must mention. The mutants of the cache and of `generate`'s loop
(tests/mutants_kv/*.py) and the correct variants are graded by all of 04's tests; those of the attention step,
stopping, histories and batches (tests/mutants_kv/new_work/) by the hidden tests of that work alone
(test_hidden_batches.py), which name every one of their symptoms, so that the suite stays fast. The table of points
lost is printed after the results.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course.kit import ROOT

SOLUTION = ROOT / "solutions" / "04_kv_cache.ipynb"
TESTS = ROOT / "grader" / "assignments" / "04_kv_cache"
HERE = Path(__file__).parent / "mutants_kv"
MUTANTS = sorted(HERE.glob("*.py"))  # graded by all the tests
NEW_WORK_MUTANTS = sorted((HERE / "new_work").glob("*.py"))  # graded by test_hidden_batches.py alone
CORRECT = sorted((HERE / "correct").glob("*.py"))  # graded by all the tests, full marks expected

pytestmark = pytest.mark.slow


def _symptom(path: Path) -> re.Pattern:
    for line in path.read_text().splitlines():
        if line.startswith("# symptom:"):
            return re.compile(line.removeprefix("# symptom:").strip())
    raise AssertionError(f"{path.name} has no '# symptom: REGEX' line")


def _description(path: Path) -> str:
    text = path.read_text().strip()
    return text.split('"""')[1].strip() if text.startswith('"""') else path.stem


def _grade_batch(folder: Path, variants: list[Path], tests_dir: Path | None) -> dict[str, dict]:
    """Every variant notebook graded by one `grader batch` run (a fresh process: grading forks, and a fork of a
    process whose torch thread pool has run can deadlock)."""
    folder.mkdir()
    for variant in variants:
        notebook = nbformat.read(SOLUTION, as_version=4)
        notebook.cells.append(nbformat.v4.new_code_cell(variant.read_text()))
        nbformat.write(notebook, folder / f"04_kv_cache-{variant.stem}.ipynb")
    command = [sys.executable, "-m", "grader.cli", "batch", str(folder), "--assignment", "04_kv_cache", "--jobs", "2",
               "--quiet"] + (["--tests-dir", str(tests_dir)] if tests_dir else [])  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-2000:]
    return {v.stem: json.loads((folder / "results" / f"04_kv_cache-{v.stem}.json").read_text()) for v in variants}


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> dict[str, dict]:
    base = tmp_path_factory.mktemp("kv-mutants")
    new_work_tests = base / "new-work-tests" / "04_kv_cache"
    new_work_tests.mkdir(parents=True)
    for helper in ("kv_support.py", "kv_reference.py"):
        shutil.copy(TESTS / helper, new_work_tests)
    shutil.copy(TESTS / "test_hidden_batches.py", new_work_tests / "test_hidden.py")
    return {
        **_grade_batch(base / "all-tests", MUTANTS + CORRECT, None),
        **_grade_batch(base / "new-work", NEW_WORK_MUTANTS, new_work_tests.parent),
    }


def test_mutant_suites_are_big_enough():
    assert len(MUTANTS) >= 8 and len(NEW_WORK_MUTANTS) >= 10 and len(CORRECT) >= 3


@pytest.mark.parametrize("mutant", MUTANTS + NEW_WORK_MUTANTS, ids=[p.stem for p in MUTANTS + NEW_WORK_MUTANTS])
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


@pytest.mark.parametrize("variant", CORRECT, ids=[p.stem for p in CORRECT])
def test_correct_variant_scores_full_marks(variant, graded):
    results = graded[variant.stem]
    lost = [f"{t['name']}: {t['output']}" for t in results["tests"] if t["score"] < t["max_score"]]
    assert not lost, f"{variant.stem} ({_description(variant)}) lost points: {lost}"
