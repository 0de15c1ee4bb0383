"""Correct implementations in other styles than the solution score full marks (tests/mutants/styles.py):
explicit loops, numpy inside, other ways to draw, helpers in other cells, functions defined out of order,
imports in a later cell, everything merged into one cell, demo code mixed in, other ways to mask attention."""

from __future__ import annotations

import re

import pytest

from mutants.harness import graded
from mutants.styles import EARLIER, STYLES

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("assignment,style", [(a, s) for a, styles in STYLES.items() for s in styles])
def test_style_scores_full_marks(assignment, style):
    result = graded(assignment)[f"style-{style}"]
    failed = [(t["name"], t["output"][:300]) for t in result.failed]
    assert result.score == result.max_score, f"{style} lost points: {failed}"


@pytest.mark.parametrize("assignment", EARLIER)
def test_an_earlier_notebook_keeps_the_points_of_the_functions_it_has(assignment):
    """A notebook written before min-p, the other penalties and the predictions loses exactly their tests."""
    result = graded(assignment)["earlier"]
    lacking = EARLIER[assignment][1]
    lost = [t["extra_data"]["test"] for t in result.failed]
    assert lost, "the earlier notebook lost nothing: the tests of what it lacks do not run"
    assert all(re.search(lacking, test) for test in lost), f"it lost points for what it has: {lost}"
