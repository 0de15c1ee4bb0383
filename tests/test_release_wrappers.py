"""No shipped function earns a point for a student who wraps it (slow: about 450 real gradings, 18 minutes).

A release of every assignment is built; for every assignment and every graded function, notebooks whose graded
functions wrap the release's own functions and classes (tests/release_wrappers.py: imported from course/ and
grader/, pasted from beside the visible tests) are graded by the real grader, visible and hidden tests. No test may
pass except those a trivial notebook passes too (each graded function raising ValueError or TypeError, returning
None, 0.0 or its first argument: validation checks, and the edge cases an assignment declares), and the library
functions an assignment declares as answers. Each assignment declares both in `audit.toml` in its folder, with why:
`passes_trivially` (a test whose right answer is the input itself, 0 or an empty cache) and `library_answers` (a
shipped function that is itself a correct answer because the kit's own model needs it: the model's attention, the
lens's caches). Groups of helpers that behave alike on a test's calls share one grading; a group whose members
differ is split and graded again (see release_wrappers.py).
"""

from __future__ import annotations

import json
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from course.assignments import assignments, names, tomllib
from course.kit import ROOT
from course.notebook import read_notebook
from course.release import release
from grader.identity import Limits
from grader.runner import find_assignment, grade
from grader.sandbox import Zygote

sys.path.insert(0, str(Path(__file__).parent))
from release_wrappers import (  # noqa: E402
    Graded,
    Member,
    conflict,
    graded_functions,
    members,
    pasted_sources,
    shipped_callables,
    wrapper_cell,
)

pytestmark = [pytest.mark.slow, pytest.mark.audit]  # make audit

ASSIGNMENTS = names()
LIMITS = Limits(call_timeout=120.0, cpu_seconds=3600)  # a call runs every member of its group
LOST = ("did not finish within its time limit", "ended the worker process", "broke the worker's connection")
TRIVIAL = {
    "raises ValueError": "raise ValueError()",
    "raises TypeError": "raise TypeError()",
    "returns None": "return None",
    "returns 0.0": "return 0.0",
    "returns its first argument": "return {first}",
}

AUDIT_FILE = "audit.toml"  # in an assignment's folder: what this audit finds there, declared with why


def declared(key: str) -> set[tuple[str, ...]]:
    """(assignment, test) for `passes_trivially`, (assignment, test, callable) for `library_answers`, from every
    assignment's audit.toml; an entry without a `why` is refused."""
    found = set()
    for one in assignments():
        path = one.folder / AUDIT_FILE
        if not path.is_file():
            continue
        for entry in tomllib.loads(path.read_text()).get(key, []):
            assert entry.get("why"), f"{path}: every entry of {key} says why"
            found.add((one.name, entry["test"], *([entry["callable"]] if "callable" in entry else [])))
    return found


@dataclass
class Job:
    """One notebook to grade: for each graded function of `assignment`, the group of members it dispatches to."""

    assignment: str
    groups: dict[str, list[Member]]
    passed: set[str] = field(default_factory=set)  # test ids, once graded


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    out = tmp_path_factory.mktemp("wrapped") / "kit"
    assert release(out) == 0
    return out


@pytest.fixture(scope="module")
def zygote():
    with Zygote() as z:
        yield z


def _cells(kit: Path, assignment: str) -> list[str]:
    """The code cells of the student's notebook, as the release ships it."""
    notebook = read_notebook(kit / "assignments" / f"{assignment}.ipynb")
    return [
        c.source if isinstance(c.source, str) else "".join(c.source) for c in notebook.cells if c.cell_type == "code"
    ]


def _grade_all(zygote, kit: Path, graded: dict[str, list[Graded]], jobs: list[Job], pasted) -> list[dict]:
    def one(job: Job) -> dict:
        cells = _cells(kit, job.assignment) + [wrapper_cell(graded[job.assignment], job.groups, pasted)]
        return grade(cells, find_assignment(job.assignment), zygote=zygote, limits=LIMITS)

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(one, jobs))


def _test_id(test: dict) -> str:
    return test["extra_data"]["test"]


def _split(job: Job, reports: dict[str, list[dict]]) -> list[Job]:
    """Jobs that grade each class of each reported group: a conflict's listed classes, the rest (one more class, or
    two halves when the worker was lost), refined by every report on that group. A group nothing split goes whole
    into the first job only: the tests that reported nothing have their verdict for it already."""
    classes = {}
    for name, found in reports.items():
        group = job.groups[name]
        keys = [[] for _ in group]
        for report in found:
            where = {index: number for number, indices in enumerate(report.get("classes", [])) for index in indices}
            for index in range(len(group)):
                keys[index].append(index < len(group) // 2 if report.get("halve") else where.get(index, -1))
        split: dict[tuple, list[Member]] = {}
        for index, key in enumerate(keys):
            split.setdefault(tuple(key), []).append(group[index])
        classes[name] = list(split.values())
    count = max(len(c) for c in classes.values())
    return [
        Job(job.assignment, {name: (classes[name][i] if i < len(classes[name]) else []) if name in classes else
                             (group if i == 0 else []) for name, group in job.groups.items()})
        for i in range(count)
    ]  # fmt: skip


def _search(zygote, kit, graded, jobs, pasted) -> tuple[list[Job], int]:
    """Grade and split until no test reports a conflict; every job graded, with the tests it passed, and the number
    of gradings."""
    done, gradings = [], 0
    while jobs:
        started = time.monotonic()
        results = _grade_all(zygote, kit, graded, jobs, pasted)
        gradings += len(jobs)
        largest = max(len(group) for job in jobs for group in job.groups.values())
        print(f"{len(jobs)} gradings (largest group {largest}) in {time.monotonic() - started:.0f} s", flush=True)
        next_jobs = []
        for job, result in zip(jobs, results):
            assert "could not be loaded" not in result.get("output", ""), result["output"]
            job.passed = {_test_id(t) for t in result["tests"] if t["score"] > 0}
            reports: dict[str, list[dict]] = {}
            for test in result["tests"]:
                found = conflict(test["output"]) if test["score"] == 0 else None
                if found is None and any(lost in test["output"] for lost in LOST):
                    name = test["output"].split(" ")[0].split(".")[0]
                    if len(job.groups.get(name, [])) > 1:
                        found = {"g": name, "halve": True}
                if found is not None:
                    reports.setdefault(found["g"], []).append(found)
            done.append(job)
            next_jobs += _split(job, reports) if reports else []
        jobs = next_jobs
    return done, gradings


def _needed(zygote, kit, graded, job: Job, test: str, pasted) -> list[str]:
    """The graded functions whose group `test` needs to pass in `job` (left out one at a time)."""
    names = [name for name, group in job.groups.items() if group]
    trials = [Job(job.assignment, {**job.groups, name: []}) for name in names]
    results = _grade_all(zygote, kit, graded, trials, pasted)
    return [
        name
        for name, result in zip(names, results)
        if test not in {_test_id(t) for t in result["tests"] if t["score"] > 0}
    ]


def _trivial_cell(graded: list[Graded], body: str) -> str:
    definitions = []
    for g in graded:
        names = [name for name, _ in g.parameters.positional]
        line = body.format(first=names[0] if names else "None")
        if g.is_class:
            definitions.append(
                f"class {g.name}:\n    def __len__(self):\n        return 0\n\n"
                f"    def __getattr__(self, name):\n        def method(*args):\n"
                f"            {body.format(first='args[0] if args else None')}\n\n        return method\n"
            )
        else:
            definitions.append(f"{g.definition}\n    {line}\n")
    return "\n\n".join(definitions)


@pytest.fixture(scope="module")
def trivial_passes(kit, zygote) -> dict[str, dict[str, set[str]]]:
    """assignment -> trivial behaviour (TRIVIAL) -> the tests a notebook whose graded functions all behave so passes."""
    graded = {a: graded_functions(ROOT / "solutions" / f"{a}.ipynb") for a in ASSIGNMENTS}
    jobs = [(a, label) for a in ASSIGNMENTS for label in TRIVIAL]

    def one(job):
        assignment, label = job
        cells = _cells(kit, assignment) + [_trivial_cell(graded[assignment], TRIVIAL[label])]
        return job, grade(cells, find_assignment(assignment), zygote=zygote, limits=LIMITS)

    passes = {a: {} for a in ASSIGNMENTS}
    with ThreadPoolExecutor(2) as pool:
        for (assignment, label), result in pool.map(one, jobs):
            passes[assignment][label] = {_test_id(t) for t in result["tests"] if t["score"] > 0}
    return passes


def test_only_validation_tests_pass_for_a_trivial_notebook(trivial_passes):
    """A test that a notebook raising ValueError (or TypeError) everywhere passes checks the error a graded function
    raises: fine. Any other test a trivial notebook passes (returning None, 0.0 or the first argument) checks too
    little, unless the assignment declares it (audit.toml's passes_trivially, with why): no other may appear."""
    found = set()
    for assignment, passes in trivial_passes.items():
        raising = {label for label in passes if label.startswith("raises")}
        found |= {(assignment, test) for label, tests in passes.items() if label not in raising for test in tests}
        print(f"{assignment}: passed by raising an error: {sorted(set().union(*(passes[r] for r in raising)))}")
    assert found == declared("passes_trivially")


def test_the_pasted_helpers_load_in_the_worker(kit, zygote):
    """The helpers beside the visible tests, pasted into a notebook, load in the worker, so that their functions are
    tried (a pasted test file cannot load its helpers from its folder, nor a script run as __main__: theirs fail)."""
    pasted = pasted_sources(kit)
    helpers = {s for s in pasted if not Path(s).name.startswith("test_") and Path(s).name != "__main__.py"}
    assert len(helpers) >= 3
    assignment = ASSIGNMENTS[0]
    graded = graded_functions(ROOT / "solutions" / f"{assignment}.ipynb")
    probe = next(g for g in graded if not g.is_class)
    loaded = "sorted(s for s in _PASTED if not isinstance(_module(s), BaseException))"
    cells = _cells(kit, assignment) + [
        wrapper_cell(graded, {g.name: [] for g in graded}, pasted),
        f"{probe.definition}\n    raise RuntimeError('LOADED ' + json.dumps({loaded}))\n",
    ]
    result = grade(cells, find_assignment(assignment), zygote=zygote, limits=LIMITS)
    reports = [re.search(r"LOADED (\[.*?\])", t["output"]) for t in result["tests"]]
    found = next(r for r in reports if r is not None)
    assert helpers <= set(json.loads(found.group(1))), (sorted(helpers), found.group(1))


def test_no_shipped_function_earns_a_point_when_wrapped(kit, zygote, trivial_passes):
    shipped = shipped_callables(kit)
    pasted = pasted_sources(kit)
    graded = {a: graded_functions(ROOT / "solutions" / f"{a}.ipynb") for a in ASSIGNMENTS}
    sources = {c.source for c in shipped}
    assert len(shipped) > 300 and "course.model" in sources
    assert any(source.startswith("grader/assignments/") for source in sources)  # the helpers beside visible tests
    jobs = [Job(a, {g.name: members(g, shipped) for g in graded[a]}) for a in ASSIGNMENTS]
    assert all(job.groups and all(job.groups.values()) for job in jobs), "a graded function wraps nothing"
    done, gradings = _search(zygote, kit, graded, jobs, pasted)
    found = set()
    for job in done:
        trivial = set().union(*trivial_passes[job.assignment].values())
        for test in sorted(job.passed - trivial):
            for name in _needed(zygote, kit, graded, job, test, pasted):
                found |= {(job.assignment, test, m.helper.label) for m in job.groups[name]}
    print(f"{gradings} gradings; passed beyond the trivial: {sorted(found)}")
    assert found == declared("library_answers")
