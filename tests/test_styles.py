"""Correct implementations in other styles than the solution score full marks (tests/mutants/styles.py):
explicit loops, numpy inside, other ways to draw, helpers in other cells, functions defined out of order,
imports in a later cell, everything merged into one cell, demo code mixed in."""

from __future__ import annotations

import pytest

from mutants.harness import graded
from mutants.styles import STYLES

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("assignment,style", [(a, s) for a, styles in STYLES.items() for s in styles])
def test_style_scores_full_marks(assignment, style):
    result = graded(assignment)[f"style-{style}"]
    failed = [(t["name"], t["output"][:300]) for t in result.failed]
    assert result.score == result.max_score, f"{style} lost points: {failed}"
