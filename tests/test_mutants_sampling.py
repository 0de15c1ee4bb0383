"""The mutation suite: plausible wrong implementations of 02_sampling and 03_penalties must lose points.

Every mutant (tests/mutants/<assignment>/<name>.py) is the solution notebook plus one cell that redefines
a graded function wrongly. All are graded in one `grader batch` run per assignment (tests/mutants/harness.py).
A failed hidden test must explain itself without showing the test's code. The table of points each mutant
lost is printed after the results.
"""

from __future__ import annotations

import re

import pytest

from mutants.harness import ASSIGNMENTS, graded, mutants, symptom

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_every_mutant_loses_points(assignment, mutant_table):
    results = graded(assignment)
    table = mutant_table(f"{assignment}: points each mutant lost", "mutant", "lost", "failing tests", "what it does")
    escaped = []
    for name, (description, _) in mutants(assignment).items():
        g = results[f"mutant-{name}"]
        table.append((name, f"{g.max_score - g.score:g}/{g.max_score:g}", str(len(g.failed)), description))
        if g.score >= g.max_score:
            escaped.append(name)
    assert not escaped, f"mutants of {assignment} that scored full marks: {escaped}"
    assert len(mutants(assignment)) >= 10


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


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_feedback_names_the_mistake(assignment):
    """A mutant with a `# symptom: REGEX` line: the feedback of one of its failed tests matches REGEX."""
    unexplained = {}
    for name, (_, code) in mutants(assignment).items():
        pattern = symptom(code)
        if pattern is None:
            continue
        outputs = [test.get("output", "") for test in graded(assignment)[f"mutant-{name}"].failed]
        if not any(re.search(pattern, output) for output in outputs):
            unexplained[name] = (pattern, [output[:200] for output in outputs])
    assert not unexplained, f"feedback that does not name the mistake: {unexplained}"


def test_solution_full_marks_blank_zero():
    for assignment in ASSIGNMENTS:
        results = graded(assignment)
        solution, blank = results["solution"], results["blank"]
        assert solution.max_score > 0
        assert solution.score == solution.max_score, (
            f"solutions/{assignment}.ipynb lost points: {[t['name'] for t in solution.failed]}"
        )
        assert blank.score == 0, f"assignments/{assignment}.ipynb (blank) scored {blank.score}"
        assert blank.max_score == solution.max_score
