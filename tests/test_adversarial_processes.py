"""The grader's boundary, by cause: processes, the report channel, files in the worker's folder, shared state.

Each test is written from a cause (issue 12), not from one attack: a process whose main thread has exited,
a report channel written by another process, a privileged open in a folder the worker owns, a worker-made
file read by the trusted side, state in a folder someone else may have made. They run as root (workers get a
uid of their own) and as an ordinary user (workers share the grader's uid), wherever a cause applies.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pytest

from grader.identity import Limits, WorkerUser, running_as_root
from grader.runner import grade
from grader.sandbox import Worker, Zygote

sys.path.insert(0, str(Path(__file__).parent / "grader_fixtures"))
from submissions import ASSIGNMENTS, MAX_SCORE, notebook  # noqa: E402

pytestmark = pytest.mark.slow

EXAMPLE = ASSIGNMENTS / "00_example"
LIMITS = Limits(call_timeout=3.0, load_timeout=10.0, memory_bytes=2**30)


@pytest.fixture
def shared_folder():
    """A folder every uid may write to (a worker's uid too), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="grader-adversarial-"))
    folder.chmod(0o777)
    yield folder
    for entry in folder.iterdir():
        entry.unlink()
    folder.rmdir()


def test_a_process_whose_main_thread_exited_is_killed_with_the_worker(tmp_path, shared_folder):
    """/proc shows such a process as a zombie while its other threads run: it must still be found and killed,
    also when it is the last worker of the grading (no live worker left whose killing takes it along)."""
    marker = shared_folder / "written-after-grading"
    survivor = (
        "import ctypes, threading, time\n"
        "def _linger():\n"
        "    time.sleep(8)  # well after the call's 3 s time limit has ended the grading\n"
        f"    open({str(marker)!r}, 'w').write('still here')\n"
        "def apply_twice(f, x):\n"  # the last function the tests call
        "    threading.Thread(target=_linger).start()\n"
        "    ctypes.CDLL(None).pthread_exit(None)  # the main thread ends; the process lives on in _linger\n"
    )
    results = grade(notebook(tmp_path / "survivor.ipynb", apply_twice=survivor), EXAMPLE, limits=LIMITS)
    assert next(t for t in results["tests"] if t["name"].startswith("apply_twice"))["status"] == "failed"
    time.sleep(9)  # the call began before grade() returned: by now _linger would have written
    assert not marker.exists(), "a thread of the worker outlived its grading and wrote a file afterwards"


FORGER = """import ctypes, json, os
def add_one(t):
    libc = ctypes.CDLL(None, use_errno=True)
    forged = (json.dumps({"collected": {"tests": [], "errors": ["FORGED"]}}) + "\\n"
              + json.dumps({"finished": {"outcomes": {}, "problems": ["FORGED"]}}) + "\\n").encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            pidfd = os.pidfd_open(int(pid))
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith(("socket:", "pipe:")):
                stolen = libc.syscall(438, pidfd, int(fd), 0)  # pidfd_getfd: a copy of another process's descriptor
                if stolen >= 0:
                    try:
                        os.write(stolen, forged)
                    except OSError:
                        pass
    return t + 1
"""


def test_reports_written_by_another_process_are_refused(tmp_path):
    """A worker that takes a copy of the grading process's report channel cannot make its report count."""
    results = grade(notebook(tmp_path / "forger.ipynb", add_one=FORGER), EXAMPLE, limits=LIMITS)
    assert "FORGED" not in json.dumps(results), "a forged report reached the results"
    assert results["score"] <= MAX_SCORE
    assert len(results["tests"]) == 7, "every expected test is listed"
    if results["score"] < MAX_SCORE:  # the forgery reached the channel: the grading says so and claims nothing
        assert "a process other than the grading process" in results["output"]
        assert results["score"] == 0


@pytest.mark.skipif(not running_as_root(), reason="only root could open a path that a worker planted")
def test_the_worker_opens_its_output_file_only_after_dropping_privileges(tmp_path):
    """A link planted as output.txt in a worker's folder must not make a privileged process open its target."""
    secret = tmp_path / "root-only.txt"
    secret.write_text("root's data\n")
    secret.chmod(0o600)
    workdir = Path(tempfile.mkdtemp(prefix="grader-student-"))
    (workdir / "output.txt").symlink_to(secret)
    with Zygote() as zygote, WorkerUser.claim() as user:
        os.chown(workdir, user.uid, user.gid)
        pid, connection = zygote.spawn(
            {"workdir": str(workdir), "limits": vars(LIMITS), "uid": user.uid, "gid": user.gid}
        )
        connection.settimeout(30)
        assert connection.recv(1) == b"", "the worker should have refused to write through the link and ended"
        connection.close()
        user.kill_all()
    assert secret.read_text() == "root's data\n", "the link's target was opened for writing"
    assert not workdir.exists(), "what the uid owned in the temporary folder went with its claim"


@pytest.mark.parametrize("planted", ["fifo", "link"])
def test_the_trusted_side_never_follows_or_blocks_on_a_worker_made_file(tmp_path, planted):
    """Worker.last_output reads output.txt: a FIFO must not block it, a link must not be followed."""
    secret = tmp_path / "hidden-tests.txt"
    secret.write_text("SECRET_EXPECTED_COUNT = 3\n")
    workdir = tmp_path / "work"
    workdir.mkdir()
    if planted == "fifo":
        os.mkfifo(workdir / "output.txt")
    else:
        (workdir / "output.txt").symlink_to(secret)
    worker = Worker.__new__(Worker)  # only its folder matters here
    worker.workdir = workdir
    started = time.monotonic()
    assert worker.last_output() == ""
    assert time.monotonic() - started < 1.0


def test_shared_state_lives_only_in_a_folder_that_only_root_can_change(tmp_path, monkeypatch):
    """A claims folder made or replaced by someone else (another owner, group-writable, a link) is refused."""
    import grader.identity as identity

    if not running_as_root():
        pytest.skip("uids are claimed only as root")
    planted = tmp_path / "claims"
    planted.mkdir()
    planted.chmod(0o777)
    monkeypatch.setattr(identity, "CLAIMS_FOLDER", planted)
    with pytest.raises(RuntimeError, match="only root can change"), WorkerUser.claim():
        pass
    link = tmp_path / "claims-link"
    link.symlink_to(tmp_path)
    monkeypatch.setattr(identity, "CLAIMS_FOLDER", link)
    with pytest.raises(RuntimeError, match="only root can change"), WorkerUser.claim():
        pass


KILLER = """import os, signal
def add_one(t):
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
    return t + 1
"""


def test_a_batch_gives_each_honest_notebook_the_score_it_gets_alone(tmp_path):
    """Hostile notebooks beside honest ones in one batch (two jobs, one zygote) change no honest score."""
    from grader.batch import run_batch

    honest = {
        "solution": {},
        "blank": {
            "count": "def count(xs):\n    raise NotImplementedError",
            "add_one": "def add_one(t):\n    raise NotImplementedError",
        },
        "off_by_one": {"count": "def count(xs):\n    return len(xs) + 1"},
    }
    alone = {}
    for name, replaced in honest.items():
        alone[name] = grade(notebook(tmp_path / f"{name}.ipynb", **replaced), EXAMPLE, limits=LIMITS)["score"]
    assert alone["solution"] == MAX_SCORE and alone["blank"] < alone["off_by_one"] < MAX_SCORE
    submissions = tmp_path / "batch"
    submissions.mkdir()
    hostile = {"forger": {"add_one": FORGER}, "killer": {"add_one": KILLER}}
    for i, (name, replaced) in enumerate([*hostile.items(), *honest.items()] * 2):
        notebook(submissions / f"{i:02d}_{name}.ipynb", **replaced)
    run_batch(submissions, EXAMPLE, jobs=2, limits=LIMITS, progress=False)
    for results_file in sorted((submissions / "results").glob("*.json")):
        name = results_file.stem.split("_", 1)[1]
        if name in honest:
            assert json.loads(results_file.read_text())["score"] == alone[name], f"{results_file.stem} in the batch"
