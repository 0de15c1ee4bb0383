"""The mutation suite: plausible wrong implementations of every graded assignment must lose points.

A mutant is the solution notebook with one mistake: a patch of grader/assignments/NN_name/mutants.toml made to
solutions/NN_name.ipynb as it is now (tests/mutants/patches.py). The fast tests check that every patch still
fits the current solution and that every assignment with graded functions has enough mutants. The slow ones grade
them all (tests/mutants/harness.py): each loses points, a failed hidden test explains itself without showing the
test's code, and a mutant's `symptom` is what its feedback says. The table of points each mutant lost is printed
after the results, and the frequency checks each solution's grading made with the chance that a correct notebook
loses a point to them.
"""

from __future__ import annotations

import re

import pytest

from course.assignments import grading
from grader.results import frequency_checks_by_file
from grader.testing import FALSE_FAILURE_PER_CHECK, false_failure_bound
from mutants.harness import ASSIGNMENTS, graded
from mutants.patches import (
    MINIMUM_PER_ASSIGNMENT,
    Edit,
    Mutant,
    MutantFileError,
    StalePatch,
    apply,
    graded_assignments,
    load_mutants,
    mutant_notebooks,
    mutants,
    solution_notebook,
)

GREEDY_RETURN = "return torch.argmax(logits, dim=-1)"  # the line of greedy that the patch tests below edit
WITH_GREEDY = grading(["greedy"]).name  # the assignment that grades it


def test_every_assignment_with_graded_functions_has_enough_mutants():
    assignments = graded_assignments()
    assert len(assignments) >= 5, f"graded assignments found: {assignments}"
    counts = {assignment: len(mutants(assignment)) for assignment in assignments}
    short = {assignment: n for assignment, n in counts.items() if n < MINIMUM_PER_ASSIGNMENT}
    assert not short, f"fewer than {MINIMUM_PER_ASSIGNMENT} mutants: {short} (add to their folder's mutants.toml)"
    assert set(ASSIGNMENTS) <= set(assignments), (
        f"mutant files of no graded assignment: {set(ASSIGNMENTS) - set(assignments)}"
    )


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_every_patch_fits_the_current_solution(assignment):
    """Each mutant applies (StalePatch says which to update) and changes only the cells of the functions it names."""
    solution = solution_notebook(assignment)
    for name, notebook in mutant_notebooks(assignment).items():
        changed = [new.source for old, new in zip(solution.cells, notebook.cells) if old.source != new.source]
        functions = {edit.function.split(".")[0] for edit in mutants(assignment)[name].edits}
        assert changed, f"{name} changes nothing"
        assert all(any(f"def {f}(" in s or f"class {f}" in s for f in functions) for s in changed), name


def _greedy_mutant(find: str, replace: str, function: str = "greedy") -> Mutant:
    return Mutant("example", "an example", (Edit(function, find, replace),))


def test_a_patch_the_solution_outgrew_fails_loudly():
    mutant = _greedy_mutant("return torch.argmax(logits, dim=-1, keepdim=False)", "return 0")
    where = re.escape(f"grader/assignments/{WITH_GREEDY}/mutants.toml, mutant 'example'")
    with pytest.raises(StalePatch, match=rf"^{where}: .* no longer occurs in greedy .*update"):
        apply(solution_notebook(WITH_GREEDY), mutant, WITH_GREEDY)


def test_a_find_text_must_name_one_place():
    with pytest.raises(StalePatch, match=r"occurs \d+ times in greedy .*make `find` longer"):
        apply(solution_notebook(WITH_GREEDY), _greedy_mutant("logits", "x"), WITH_GREEDY)


def test_a_patch_that_breaks_the_syntax_is_refused():
    with pytest.raises(StalePatch, match=r"after the edit of greedy, its cell does not parse .*indentation"):
        apply(solution_notebook(WITH_GREEDY), _greedy_mutant(GREEDY_RETURN, "return (\n"), WITH_GREEDY)


def test_a_patch_names_a_defined_function():
    with pytest.raises(StalePatch, match=rf"KVCache.update is defined 0 times in solutions/{WITH_GREEDY}.ipynb"):
        apply(solution_notebook(WITH_GREEDY), _greedy_mutant(GREEDY_RETURN, "x", "KVCache.update"), WITH_GREEDY)


def test_a_patch_edits_its_function_only():
    """The edit lands in greedy's cell, in greedy; every other cell stays the solution's."""
    solution = solution_notebook(WITH_GREEDY)
    mutant = apply(solution, _greedy_mutant("dim=-1)", "dim=0)"), WITH_GREEDY)
    changed = [(old.source, new.source) for old, new in zip(solution.cells, mutant.cells) if old != new]
    assert len(changed) == 1
    old, new = changed[0]
    assert new == old.replace(GREEDY_RETURN, "return torch.argmax(logits, dim=0)")


@pytest.mark.parametrize(
    "table, refusal",
    [
        (
            'name = "a"\nwrong = "w"\nfunction = "f"\nfind = "x"\nreplce = "y"',
            r"missing \['replace'\], unknown \['replce'\]",
        ),
        ('name = "a"\nwrong = "w"\nfunction = "f"\nfind = "x"\nreplace = "x"', "other text"),
        ('name = "a"\nwrong = "w"\nfunction = "f"\nfind = "x"\nreplace = 3', "`replace` should be a string"),
        ('name = "a"\nwrong = "w"\nfunction = "f"\nfind = "x"\nreplace = "y"\nalso = "z"', r"\[\[mutant.also\]\]"),
    ],
)
def test_a_mutant_file_with_a_typo_is_refused(tmp_path, table, refusal):
    path = tmp_path / "99_example.toml"
    path.write_text(f"[[mutant]]\n{table}\n")
    with pytest.raises(MutantFileError, match=refusal):
        load_mutants(path)


# ---------------------------------------------------------------- graded (slow)


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_every_mutant_loses_points(assignment, mutant_table):
    results = graded(assignment)
    table = mutant_table(f"{assignment}: points each mutant lost", "mutant", "lost", "failing tests", "what is wrong")
    escaped = []
    for name, mutant in mutants(assignment).items():
        g = results[f"mutant-{name}"]
        table.append((name, f"{g.max_score - g.score:g}/{g.max_score:g}", str(len(g.failed)), mutant.wrong))
        if g.score >= g.max_score:
            escaped.append(name)
    assert not escaped, f"mutants of {assignment} that scored full marks: {escaped}"


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_hidden_feedback_explains_without_code(assignment):
    for name, g in graded(assignment).items():
        if not name.startswith("mutant-"):
            continue
        for test in g.failed:
            output = test.get("output", "")
            assert output.strip(), f"{name}: test {test['name']!r} failed without a message"
            if test["visibility"] != "visible":
                assert "test_hidden" not in output and "student." not in output, (
                    f"{name}: the feedback of hidden test {test['name']!r} shows test code: {output!r}"
                )


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_feedback_names_the_mistake(assignment):
    """A mutant with a `symptom`: the feedback of one of its failed tests matches that regular expression."""
    unexplained = {}
    for name, mutant in mutants(assignment).items():
        if mutant.symptom is None:
            continue
        outputs = [test.get("output", "") for test in graded(assignment)[f"mutant-{name}"].failed]
        if not any(re.search(mutant.symptom, output) for output in outputs):
            unexplained[name] = (mutant.symptom, [output[:200] for output in outputs])
    assert not unexplained, f"feedback that does not name the mistake: {unexplained}"


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_solution_full_marks_blank_zero(assignment, mutant_table):
    results = graded(assignment)
    solution, blank = results["solution"], results["blank"]
    checks = frequency_checks_by_file(solution.results)
    table = mutant_table(
        "frequency checks made grading each solution (grader.testing.expect_frequencies; each fails a correct "
        f"sampler with probability at most {FALSE_FAILURE_PER_CHECK:g})",
        "assignment",
        "checks per test file",
        "a correct notebook loses a point to chance with probability at most",
    )
    per_file = ", ".join(f"{name} {count}" for name, count in sorted(checks.items())) or "none"
    table.append((assignment, per_file, f"{false_failure_bound(sum(checks.values())):.2g}"))
    assert solution.max_score > 0
    assert solution.score == solution.max_score, (
        f"solutions/{assignment}.ipynb lost points: {[t['name'] for t in solution.failed]}"
    )
    assert blank.score == 0, f"assignments/{assignment}.ipynb (blank) scored {blank.score}"
    assert blank.max_score == solution.max_score
