"""Grading one notebook: pytest runs the assignment's tests in a trusted process, the notebook's code
runs in a worker (sandbox.py), and the results come from pytest's own reports.

    results = grade("alice/02_sampling.ipynb", find_assignment("02_sampling"), results_path=Path("results.json"))

The order of events is what makes the results trustworthy:
1. the notebook is parsed here (course.notebook.extract_code runs nothing);
2. a forked grading process collects the tests (before any student code runs) and reports them,
   and results.json is written at once with every test at 0, so a grading that dies midway
   still leaves a valid file that claims nothing;
3. the tests run; every call into student code goes to a worker under a deadline;
4. the grading process ends, every process of the worker's uid is killed (run as root), and only
   then is the final results.json written, atomically, by this process.
Nothing the worker writes or sends is read as a result: it can only return values to tests.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import select
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from course.errors import UserError
from course.notebook import extract_code
from grader import results as results_file
from grader.errors import GraderError, StudentError
from grader.results import VISIBLE_FILE, ExpectedTest, Outcome
from grader.sandbox import Limits, StudentSession, WorkerUser, Zygote, private
from grader.testing import POINTS_ATTRIBUTE, StudentView

ASSIGNMENTS_DIR = Path(__file__).resolve().parent / "assignments"
SOLUTIONS_DIR = Path(__file__).resolve().parents[1] / "solutions"
HIDDEN_FILE = "test_hidden.py"
MAX_FEEDBACK_CHARS = 2000
GRADING_TIME_LIMIT = 3600.0  # seconds for a whole notebook: a backstop behind the per-call limits


# ---------------------------------------------------------------- finding the tests


def find_assignment(name: str, tests_dir: str | os.PathLike | None = None) -> Path:
    """The folder of assignment `name`: in the kit, or under `tests_dir` (which may also be that folder itself)."""
    base = Path(tests_dir) if tests_dir is not None else ASSIGNMENTS_DIR
    if (base / name / VISIBLE_FILE).is_file() or (base / name / HIDDEN_FILE).is_file():
        return base / name
    if tests_dir is not None and ((base / VISIBLE_FILE).is_file() or (base / HIDDEN_FILE).is_file()):
        return base
    known = ", ".join(known_assignments(base)) or "none"
    raise GraderError(f"unknown assignment {name!r}: no tests in {base / name} (assignments there: {known})")


def known_assignments(base: Path = ASSIGNMENTS_DIR) -> list[str]:
    return sorted(p.name for p in base.glob("*") if (p / VISIBLE_FILE).is_file() or (p / HIDDEN_FILE).is_file())


def infer_assignment(notebook: Path, tests_dir=None) -> str:
    """The assignment a notebook belongs to, from its file name: `02_sampling.ipynb`, `02_sampling-alice.ipynb`."""
    base = Path(tests_dir) if tests_dir is not None else ASSIGNMENTS_DIR
    matches = [name for name in known_assignments(base) if notebook.stem.startswith(name)]
    if matches:
        return max(matches, key=len)
    match = re.match(r"\d\d_[A-Za-z]+", notebook.stem)
    if match:
        return match.group(0)
    raise GraderError(f"cannot tell the assignment from the file name {notebook.name}; pass --assignment NAME")


def test_files(folder: Path, visible_only: bool = False) -> list[Path]:
    files = sorted(folder.glob("test_*.py"), key=lambda p: (p.name != VISIBLE_FILE, p.name))
    if visible_only:
        files = [f for f in files if f.name == VISIBLE_FILE]
    if not files:
        raise GraderError(f"no {'visible ' if visible_only else ''}tests in {folder}")
    return files


# ---------------------------------------------------------------- grading


def grade(
    source,
    assignment: Path,
    *,
    results_path: Path | None = None,
    limits: Limits = Limits(),
    visible_only: bool = False,
    zygote: Zygote | None = None,
    time_limit: float = GRADING_TIME_LIMIT,
    extra_data: dict | None = None,
    refusal: str | None = None,
) -> dict:
    """Grade a notebook (a path, or a list of cell sources) against the tests in `assignment`.

    Returns the results (Gradescope's format) and writes them to `results_path` if given.
    Raises GraderError only for a usage mistake; anything wrong with the notebook is in the results.
    `extra_data` goes into the results. With a `refusal` (a sentence: "no notebook was submitted")
    instead of a source, every test is listed and fails with it.
    """
    started = time.monotonic()
    files = test_files(Path(assignment), visible_only)
    extracted, problem = None, refusal
    if refusal is None:
        try:
            extracted = extract_code(source)
        except UserError as error:  # not a notebook: every test fails with this sentence
            problem = str(error)
    own_zygote = zygote is None and extracted is not None
    with private([assignment, ASSIGNMENTS_DIR, SOLUTIONS_DIR]):  # closed to the worker's uid, then given back
        if own_zygote:
            zygote = Zygote()
        try:
            with WorkerUser.claim() as user:
                collected, finished, stopped = _run_grading_process(
                    files, extracted, problem, limits, zygote, user, results_path, time_limit
                )
        finally:
            if own_zygote:
                zygote.close()
    tests = [ExpectedTest(**t) for t in collected.get("tests", [])]
    outcomes = {key: Outcome(**value) for key, value in finished.get("outcomes", {}).items()}
    output = [problem] if problem else []
    output += collected.get("errors", []) + finished.get("problems", [])
    if stopped:
        output.append(stopped)
    results = results_file.build(tests, outcomes, "\n".join(output), time.monotonic() - started)
    if extra_data:
        results["extra_data"] = extra_data
    if results_path is not None:
        results_file.write(results_path, results)
    return results


def _run_grading_process(files, extracted, problem, limits, zygote, user, results_path, time_limit) -> tuple[dict, dict, str]:
    """Run pytest in a forked process; its two messages (collected, finished) and why it stopped early, if it did."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        status = 1
        try:
            # OpenMP's thread pool does not survive fork: a child of a process that has run a multi-threaded
            # torch op hangs in its first parallel region. One thread never enters one.
            torch.set_num_threads(1)
            os.close(read_end)
            quiet = open(os.devnull, "w")  # pytest's own terminal output is not the report
            os.dup2(quiet.fileno(), 1)
            sys.stdout = sys.stderr = quiet
            # Run inside another pytest (the project's tests), the test modules must not be rewritten by its
            # assertion hook: rewritten asserts put their expressions, hidden values included, in messages.
            sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "AssertionRewritingHook"]
            with os.fdopen(write_end, "w") as messages:
                _grade_in_this_process(files, extracted, problem, limits, zygote, user, results_path, messages)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    messages, stopped = _read_messages(read_end, child, time.monotonic() + time_limit)
    _, status = os.waitpid(child, 0)
    if user is not None:
        user.kill_all()  # every process the notebook started, detached or not, before results are written
    if not stopped and "finished" not in messages:
        stopped = f"grading stopped: the grading process ended with status {os.waitstatus_to_exitcode(status)}"
    return messages.get("collected", {}), messages.get("finished", {}), stopped


def _read_messages(fd: int, child: int, deadline: float) -> tuple[dict, str]:
    messages, buffer, stopped = {}, b"", ""
    with os.fdopen(fd, "rb") as pipe:
        while True:
            ready, _, _ = select.select([pipe], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                os.kill(child, signal.SIGKILL)
                stopped = "grading stopped: the whole notebook took longer than the grading time limit"
                break
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            buffer += chunk
    for line in buffer.splitlines():
        messages.update(json.loads(line))
    return messages, stopped


def _grade_in_this_process(files, extracted, problem, limits, zygote, user, results_path, messages) -> None:
    def send(kind: str, value: dict) -> None:
        messages.write(json.dumps({kind: value}) + "\n")
        messages.flush()

    session = None if extracted is None else StudentSession(extracted, limits, zygote, user)
    plugin = GraderPlugin(session, problem, limits)

    def collected(tests: list[ExpectedTest]) -> None:
        if results_path is not None:
            results_file.write(results_path, results_file.build(tests, {}, "grading did not finish", 0.0))
        send("collected", {"tests": [vars(t) for t in tests], "errors": plugin.collection_errors})

    plugin.on_collected = collected
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    with tempfile.TemporaryDirectory() as config_dir:
        config = Path(config_dir) / "pytest.ini"
        config.write_text("[pytest]\n")
        arguments = [
            *map(str, files),
            *("-c", str(config), "--rootdir", str(files[0].parent), "--confcutdir", str(files[0].parent)),
            *("-p", "no:cacheprovider", "--assert=plain", "--import-mode=importlib", "-q", "-W", "ignore"),
        ]
        try:
            pytest.main(arguments, plugins=[plugin])
        finally:
            if session is not None:
                session.close()
    problems = (session.problems if session else []) + plugin.internal_errors
    send("finished", {"outcomes": {k: vars(v) for k, v in plugin.outcomes.items()}, "problems": problems})


# ---------------------------------------------------------------- the pytest plugin


class GraderPlugin:
    """Provides the `student` fixture; records the expected tests and each test's outcome from pytest's reports."""

    def __init__(self, session: StudentSession | None, problem: str | None, limits: Limits):
        self.session = session
        self.problem = problem
        self.limits = limits
        self.tests: dict[str, ExpectedTest] = {}
        self.outcomes: dict[str, Outcome] = {}
        self.collection_errors: list[str] = []
        self.internal_errors: list[str] = []
        self.on_collected = lambda tests: None

    @pytest.fixture
    def student(self):
        """The student's notebook (see grader.testing.StudentView)."""
        if self.session is None:
            raise StudentError(self.problem)
        return StudentView(self.session, self.limits.call_timeout)

    def pytest_collectreport(self, report):
        if report.failed:
            self.collection_errors.append(f"the tests in {report.nodeid} could not be collected: {_last_line(report.longreprtext)}")

    def pytest_collection_modifyitems(self, items):
        for item in items:
            test = _expected_test(item)
            self.tests[test.id] = test

    def pytest_collection_finish(self, session):
        self.on_collected(list(self.tests.values()))

    def pytest_runtest_setup(self, item):
        if "student" not in item.fixturenames:
            pytest.fail("this test does not use the `student` fixture, so it cannot earn points (a mistake in the tests)")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        report = (yield).get_result()
        test = self.tests.get(_test_id(item))
        if test is None or (test.id in self.outcomes and not self.outcomes[test.id].passed):
            return  # the first failing phase explains the failure
        if report.passed:
            if report.when == "call" or test.id not in self.outcomes:
                self.outcomes[test.id] = Outcome(True)
        elif report.skipped:
            reason = call.excinfo.value.msg if call.excinfo is not None else "skipped"
            self.outcomes[test.id] = Outcome(False, f"skipped: {reason}")
        else:
            self.outcomes[test.id] = Outcome(False, _feedback(item, call.excinfo, test.hidden))

    def pytest_internalerror(self, excrepr):
        self.internal_errors.append(f"grading failed: {_last_line(str(excrepr))}")


def _test_id(item) -> str:
    return f"{item.path.name}::{item.name}"


def _expected_test(item) -> ExpectedTest:
    function = getattr(item, "function", None)
    doc = inspect.getdoc(function) or ""
    description = doc.strip().splitlines()[0] if doc.strip() else ""
    callspec = getattr(item, "callspec", None)
    if description and callspec is not None:
        description += f" [{callspec.id}]"
    return ExpectedTest(
        id=_test_id(item),
        function=item.name,
        description=description,
        points=getattr(function, POINTS_ATTRIBUTE, 1),
        hidden=item.path.name != VISIBLE_FILE,
    )


def _feedback(item, excinfo, hidden: bool) -> str:
    """Why a test failed, in words a student can act on. Hidden tests: the message only, never their code."""
    if excinfo is None:
        return "failed"
    error = excinfo.value
    if isinstance(error, StudentError):
        message = str(error)
    elif isinstance(error, AssertionError):
        message = _without_introspection(str(error)) if hidden else str(error)
        message = message or "the result is not what the test expects"
    elif isinstance(error, pytest.fail.Exception):
        message = error.msg
    else:
        message = f"{type(error).__name__}: {error}"
    if not hidden:
        message += _failing_line(item, excinfo)
    return message if len(message) <= MAX_FEEDBACK_CHARS else message[: MAX_FEEDBACK_CHARS - 3] + "..."


def _without_introspection(message: str) -> str:
    """The assertion's own message, without an explanation pytest's assert rewriting may have added."""
    lines = message.splitlines()
    cut = next((i for i, line in enumerate(lines) if line.startswith("assert ")), len(lines))
    return "\n".join(lines[:cut]).strip()


def _failing_line(item, excinfo) -> str:
    for entry in reversed(excinfo.traceback):
        if Path(entry.path) == item.path:
            statement = str(entry.statement).strip().splitlines()
            return f"\n(at {item.path.name} line {entry.lineno + 1}: {statement[0].strip() if statement else ''})"
    return ""


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "unknown error"
