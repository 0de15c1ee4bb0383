"""The notebook's check() loop: one check service per session, kept warm between checks (grader/selfcheck.py), which
always grades the code of the call at hand, and is replaced when it has died."""

from __future__ import annotations

from pathlib import Path

import pytest

from grader import check
from grader.selfcheck import CheckService

ASSIGNMENTS = Path(__file__).parent / "grader_fixtures" / "assignments"
PICK = "import torch\ndef pick(logits):\n    if logits.numel() == 0:\n        raise ValueError('empty')\n    return logits.argmax()"


@pytest.mark.slow
def test_each_check_grades_its_own_code_in_the_sessions_service(monkeypatch):
    """add_one wrong, then right, then wrong again: each check scores the code it was given, never a worker's
    earlier code; the service stays the same process, and a dead one is replaced."""
    cells: list[str] = []
    monkeypatch.setattr("grader.selfcheck._session_cells", lambda: list(cells))

    def score_with(add_one: str) -> float:
        cells[:] = [PICK, f"def add_one(t):\n    return {add_one}"]
        return check("00_example", tests_dir=ASSIGNMENTS, show=False)["score"]

    try:
        assert score_with("t + 2") == 2  # pick's two tests
        service = CheckService.for_this_session().process.pid
        assert score_with("t + 1") == 4
        assert score_with("t + 2") == 2
        assert CheckService.for_this_session().process.pid == service, "one service for the session"
        CheckService.for_this_session().process.kill()
        CheckService.for_this_session().process.wait()
        assert score_with("t + 1") == 4
        assert CheckService.for_this_session().process.pid != service
    finally:
        CheckService.for_this_session().close()
