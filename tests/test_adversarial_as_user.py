"""The adversarial suites again, run by an ordinary user: where the grader cannot give its workers a uid
of their own, they share the grader's, and the boundary must hold all the same.

Run as root, this starts pytest on those suites under an unprivileged uid (setpriv). That user must be able
to read this Python installation and the checkout; a Python under /root is not (`.ci/run` builds its
environment from the system's Python for this reason), and then this test says so and is skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from course.kit import ROOT
from grader.identity import WorkerUser, running_as_root

pytestmark = pytest.mark.slow

ORDINARY_UID = 39999  # outside the workers' range (40000-59999): no grading ever claims it
SUITES = [
    "tests/test_grader_adversarial.py",
    "tests/test_adversarial_processes.py",
    "tests/test_adversarial_loader.py",
    "tests/test_adversarial_output.py",
]


def _unreadable_for(uid: int) -> list[str]:
    needed = [Path(sys.prefix), Path(sys.base_prefix) / "lib", Path(sys.executable).resolve().parent, ROOT]
    return WorkerUser(uid, uid).cannot_read(needed)


@pytest.mark.skipif(not running_as_root(), reason="only root can start a process as another user")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed")
def test_the_adversarial_suites_pass_as_an_ordinary_user():
    denied = _unreadable_for(ORDINARY_UID)
    if denied:
        pytest.skip(f"an ordinary user cannot read {denied[0]}: build the environment from a Python others may read")
    home = Path(tempfile.mkdtemp(prefix="grader-ordinary-user-"))
    os.chown(home, ORDINARY_UID, ORDINARY_UID)
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "PYTHONPATH": str(ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    command = ["setpriv", f"--reuid={ORDINARY_UID}", f"--regid={ORDINARY_UID}", "--clear-groups", sys.executable]
    command += ["-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={home / 'tmp'}", *SUITES]
    try:
        done = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=1800)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    summary = done.stdout.strip().splitlines()[-1:] or ["no output"]
    assert done.returncode == 0, f"as uid {ORDINARY_UID}: {summary[0]}\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
    assert " passed" in summary[0] and " failed" not in summary[0], summary[0]
