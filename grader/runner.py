"""Grading one notebook: pytest runs the assignment's tests in a trusted process, the notebook's code
runs in a worker (sandbox.py), and the results come from pytest's own reports.

    results = grade("alice/NN_name.ipynb", find_assignment("NN_name"), results_path=Path("results.json"))

The order of events is what makes the results trustworthy:
1. the notebook is parsed here (course.notebook.extract_code runs nothing);
2. the tests in use are copied into a private folder of this grading (only our user can read it);
   grading for marks, a probe worker set up as every worker is proves that it can open none of the
   grading's secrets (grader/isolation.py), or the grading is refused before any student code runs;
   a grading process, forked by the zygote (never by a process that has run torch), collects the
   tests before any student code runs and reports them; results.json is written at once with
   every test at 0, so a grading that dies midway still leaves a valid file that claims nothing;
3. the tests run; every call into student code goes to a worker under a deadline;
4. the grading process ends, every process of the worker's uid is killed (run as root), and only
   then is the final results.json written, atomically, by this process, from exactly one report of
   collected tests and one of outcomes.
Nothing the worker writes or sends is read as a result: it can only return values to tests.
"""

from __future__ import annotations

import inspect
import io
import json
import os
import re
import select
import shutil
import socket
import struct
import sys
import tempfile
import time
from contextlib import contextmanager, redirect_stdout
from dataclasses import asdict
from pathlib import Path

import pytest

from course.errors import UserError
from course.kit import ROOT
from course.notebook import extract_code
from grader import isolation
from grader import results as results_file
from grader.errors import GraderError, StudentError
from grader.identity import Limits, WorkerUser, limit_address_space
from grader.plain import PlainWorkers, require_sandbox, sandbox_unavailable
from grader.results import VISIBLE_FILE, ExpectedTest, Outcome, printable
from grader.sandbox import Zygote, ZygoteChannel
from grader.session import StudentSession
from grader.testing import POINTS_ATTRIBUTE, StudentView, frequency_checks_made

ASSIGNMENTS_DIR = ROOT / "grader" / "assignments"
MAX_REPORT_BYTES = 64 * 2**20  # the grading process's two reports together
CREDENTIALS = struct.Struct("3i")  # SCM_CREDENTIALS: pid, uid, gid
TASK_LENGTH = struct.Struct("!Q")  # the task's length, before the task, on the grading process's channel
HIDDEN_FILE = "test_hidden.py"
MAX_FEEDBACK_CHARS = 2000
GRADING_TIME_LIMIT = 3600.0  # seconds for a whole notebook: a backstop behind the per-call limits
# pytest's plugins that grading has no use for, each a cost on every test or every grading: output capture and
# logging (student code prints in its worker, never here; caplog and capsys would see nothing of it), the
# unraisable-exception hook (its gc.collect() calls alone cost a second), caching, doctests, XML reports
UNUSED_PYTEST_PLUGINS = (
    "cacheprovider",
    "unraisableexception",
    "logging",
    "doctest",
    "junitxml",
    "pastebin",
    "stepwise",
)


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
    """The assignment a notebook belongs to, from its file name: `NN_name.ipynb`, `NN_name-alice.ipynb`."""
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
    zygote: Zygote | PlainWorkers | None = None,
    time_limit: float = GRADING_TIME_LIMIT,
    extra_data: dict | None = None,
    refusal: str | None = None,
    hidden: tuple[Path, ...] = (),
) -> dict:
    """Grade a notebook (a path, or a list of cell sources) against the tests in `assignment`.

    Returns the results (Gradescope's format) and writes them to `results_path` if given.
    Raises GraderError only for a usage mistake; anything wrong with the notebook is in the results.
    `extra_data` goes into the results. With a `refusal` (a sentence: "no notebook was submitted")
    instead of a source, every test is listed and fails with it. No worker may read the folders in
    `hidden` (a batch's notebooks and results), any more than the tests and the solutions: grading for
    marks refuses (GraderError) where one could. Where the sandbox cannot run, or
    given `PlainWorkers` for `zygote`, the tests run in this process against spawned workers (plain.py):
    the self-check's way, not a grading for marks.
    """
    started = time.monotonic()
    test_files(Path(assignment), visible_only)  # a usage mistake stops here
    extracted, problem = None, refusal
    if refusal is None:
        try:
            extracted = extract_code(source)
        except UserError as error:  # not a notebook: every test fails with this sentence
            problem = str(error)
    spec = {
        "statements": None if extracted is None else [asdict(s) for s in extracted.statements],
        "unparsed": {} if extracted is None else extracted.unparsed,  # why names of broken cells are missing
        "session_cells": isinstance(source, list),  # the cells a notebook session has run (check()), not a file
        "problem": problem,
        "limits": asdict(limits),
        "results_path": None if results_path is None else str(results_path),
    }
    own_zygote = zygote is None
    with private_copy(Path(assignment)) as tests:
        spec["files"] = [str(f) for f in test_files(tests, visible_only)]
        if own_zygote and not visible_only:
            require_sandbox()
        if own_zygote:
            zygote = Zygote() if sandbox_unavailable() is None else PlainWorkers()
        try:
            if isinstance(zygote, PlainWorkers):
                collected, finished, stopped = _grade_here(zygote, spec)
            else:
                with WorkerUser.claim() as user:
                    if not visible_only:  # grading for marks: first prove that no worker can read a secret
                        private = isolation.secrets(assignment, tests.parent, *hidden, results_path)
                        _report_isolation(zygote, user, isolation.verify(zygote, limits, user, private))
                    spec["user"] = None if user is None else [user.uid, user.gid]
                    collected, finished, stopped = _run_grading_process(zygote, spec, user, time_limit)
        finally:
            if own_zygote:
                zygote.close()
    tests = [ExpectedTest(**t) for t in collected.get("tests", [])]
    outcomes = {key: Outcome(**value) for key, value in finished.get("outcomes", {}).items()}
    output = [problem] if problem else list(extracted.problems)
    output += collected.get("errors", []) + finished.get("problems", [])
    if stopped:
        output.append(stopped)
    checks = _frequency_checks(finished.get("frequency_checks"), {test.id for test in tests})
    results = results_file.build(tests, outcomes, "\n".join(output), time.monotonic() - started, checks)
    if extra_data:
        results["extra_data"] = extra_data
    if results_path is not None:
        results_file.write(results_path, results)
    return results


def _frequency_checks(reported, test_ids: set[str]) -> dict[str, int]:
    """Test id -> the frequency checks it made, as the grading process reported them (only collected tests, counts)."""
    if type(reported) is not dict:
        return {}
    return {test: count for test, count in reported.items() if test in test_ids and type(count) is int and count > 0}


def _report_isolation(zygote: Zygote, user: WorkerUser | None, unreadable: list[str]) -> None:
    """Tell the grader, once per process, when workers are isolated by file modes only (no namespaces), and when
    they cannot import beyond what the zygote preloads (a Python under /root, seen without namespaces)."""
    lines = []
    if not zygote.isolated:
        lines.append(
            f"grader: {isolation.setting_of(zygote, user)}: a worker was checked to open none of the grading's "
            "secret files first"
        )
    if unreadable:
        lines.append(
            f"grader: warning: the workers cannot read {unreadable[0]}, so student code can import only the modules "
            "the worker preloads (grader.worker.PRELOADED); make the Python installation readable to all"
        )
    for line in lines:
        if line not in _REPORTED:
            _REPORTED.add(line)
            print(printable(line), file=sys.stderr)


_REPORTED: set[str] = set()


@contextmanager
def private_copy(assignment: Path):
    """A copy of the assignment's tests in a new folder that only our user can read (mkdtemp's 0700):
    as root the worker's uid cannot read it, whatever the modes of the folders it was copied from."""
    with tempfile.TemporaryDirectory(prefix="grader-tests-") as folder:
        copy = Path(folder) / assignment.name
        shutil.copytree(assignment, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        yield copy


def _run_grading_process(
    zygote: Zygote, spec: dict, user: WorkerUser | None, time_limit: float
) -> tuple[dict, dict, str]:
    """Start the grading process from the zygote; its two reports (collected, finished) and why it stopped early, if it did."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # the kernel tells who sent each message
    try:
        grading = zygote.start_grading(theirs.fileno())
    finally:
        theirs.close()  # the grading process holds the only other end now
    try:
        with ours:
            task = json.dumps(spec).encode()
            ours.sendall(TASK_LENGTH.pack(len(task)) + task)  # a stream: no size limit but the loader's caps
            reports, stopped = _read_reports(ours, grading.pid, time.monotonic() + time_limit)
    finally:
        grading.kill()
        grading.wait()
    if user is not None:
        user.kill_all()  # every process the notebook started, detached or not, before results are written
    if not stopped and "finished" not in reports:
        stopped = "grading stopped: the grading process ended before it reported its results"
    return reports.get("collected", {}), reports.get("finished", {}), stopped


def _grade_here(workers: PlainWorkers, spec: dict) -> tuple[dict, dict, str]:
    """The plain self-check's grading (plain.py): the same tests, plugin and reports, run in this process,
    whose own output stays out of the way; the tests' modules are forgotten afterwards, so that the next
    grading in this process (another assignment's test_visible.py) imports its own."""
    messages = io.StringIO()
    tests_folder = Path(spec["files"][0]).parent
    with open(os.devnull, "w") as quiet, redirect_stdout(quiet):
        try:
            _grade_in_this_process(
                [Path(f) for f in spec["files"]],
                _student_session(spec, workers, user=None),
                spec["problem"],
                Limits(**spec["limits"]),
                None if spec["results_path"] is None else Path(spec["results_path"]),
                messages,
            )
        finally:
            _forget_modules_under(tests_folder)
    reports, stopped = _parse_reports(messages.getvalue().encode())
    if not stopped and "finished" not in reports:
        stopped = "grading stopped before it reported its results"
    return reports.get("collected", {}), reports.get("finished", {}), stopped


def _forget_modules_under(folder: Path) -> None:
    prefix = os.path.join(str(folder), "")
    for name, module in list(sys.modules.items()):
        location = getattr(module, "__file__", None)
        if isinstance(location, str) and location.startswith(prefix):
            del sys.modules[name]


def _read_reports(channel: socket.socket, sender: int, deadline: float) -> tuple[dict, str]:
    """Exactly one `collected` report, then one `finished` report, each sent by the process `sender`
    (the kernel's credentials, not anything the data says); anything else stops the grading."""
    buffer, stopped = b"", ""
    while True:
        ready, _, _ = select.select([channel], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            stopped = "grading stopped: the whole notebook took longer than the grading time limit"
            break
        chunk, ancillary, _, _ = channel.recvmsg(1 << 20, socket.CMSG_SPACE(CREDENTIALS.size))
        if not chunk:
            break
        if _sending_process(ancillary) != sender:
            return {}, "grading stopped: a process other than the grading process wrote to its report channel"
        buffer += chunk
        if len(buffer) > MAX_REPORT_BYTES:
            return {}, "grading stopped: the grading process sent more than its reports"
    reports, malformed = _parse_reports(buffer)
    return reports, malformed or stopped


def _parse_reports(buffer: bytes) -> tuple[dict, str]:
    """The reports in `buffer`, and why they are refused if they are."""
    lines = buffer.split(b"\n")[:-1]  # after the last newline: nothing, or a report cut off by a kill
    if len(lines) > 2:
        return {}, "grading stopped: the grading process sent more than its two reports"
    reports: dict = {}
    for expected, line in zip(("collected", "finished"), lines):
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if type(message) is not dict or list(message) != [expected] or type(message[expected]) is not dict:
            return {}, "grading stopped: the grading process sent a malformed report"
        reports.update(message)
    return reports, ""


def _sending_process(ancillary) -> int | None:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(data) >= CREDENTIALS.size:
            return CREDENTIALS.unpack_from(data)[0]
    return None


def grading_process(channel_fd: int, workers: socket.socket) -> None:
    """The grading process (forked by the zygote): it reads its task from the channel `channel_fd`, runs
    pytest on those tests and reports back the tests it collected and then their outcomes, a JSON line each;
    it asks the zygote for workers on `workers`."""
    channel = socket.socket(fileno=channel_fd)
    spec = json.loads(_receive_exactly(channel, TASK_LENGTH.unpack(_receive_exactly(channel, TASK_LENGTH.size))[0]))
    limits = Limits(**spec["limits"])
    limit_address_space(limits.grading_memory_bytes)  # what student replies can make the trusted side allocate
    user = None if spec["user"] is None else WorkerUser(*spec["user"])
    session = _student_session(spec, ZygoteChannel(workers), user)
    results_path = None if spec["results_path"] is None else Path(spec["results_path"])
    with open(os.devnull, "w") as quiet, channel, channel.makefile("w", encoding="utf-8") as messages:
        os.dup2(quiet.fileno(), 1)  # pytest's own terminal output is not the report
        sys.stdout = sys.stderr = quiet
        _grade_in_this_process(
            [Path(f) for f in spec["files"]], session, spec["problem"], limits, results_path, messages
        )


def _student_session(spec: dict, workers, user: WorkerUser | None) -> StudentSession | None:
    if spec["statements"] is None:
        return None  # nothing to grade: every test fails with spec["problem"]
    limits = Limits(**spec["limits"])
    return StudentSession(spec["statements"], limits, workers, user, spec["unparsed"], spec["session_cells"])


def _receive_exactly(channel: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = channel.recv(min(size - len(data), 1 << 20))
        if not chunk:
            raise EOFError("the grader closed the channel before sending the whole task")
        data += chunk
    return data


def _grade_in_this_process(files, session, problem, limits, results_path, messages) -> None:
    def send(kind: str, value: dict) -> None:
        messages.write(json.dumps({kind: value}) + "\n")
        messages.flush()

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
            *(item for plugin in UNUSED_PYTEST_PLUGINS for item in ("-p", f"no:{plugin}")),
            *("--capture=no", "--assert=plain", "--import-mode=importlib", "-q", "-W", "ignore"),
            "--tb=native",  # pytest's own rendering of each failure, with source, is never shown: half a blank's time
        ]
        try:
            pytest.main(arguments, plugins=[plugin])
        finally:
            if session is not None:
                session.close()
    problems = (session.problems if session else []) + plugin.internal_errors
    outcomes = {k: vars(v) for k, v in plugin.outcomes.items()}
    send("finished", {"outcomes": outcomes, "problems": problems, "frequency_checks": plugin.frequency_checks})


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
        self.frequency_checks: dict[str, int] = {}  # test id -> grader.testing.expect_frequencies checks it made
        self.on_collected = lambda tests: None

    @pytest.fixture
    def student(self):
        """The student's notebook (see grader.testing.StudentView)."""
        if self.session is None:
            raise StudentError(self.problem)
        return StudentView(self.session, self.limits.call_timeout)

    def pytest_collectreport(self, report):
        if report.failed:
            self.collection_errors.append(
                f"the tests in {report.nodeid} could not be collected: {_last_line(report.longreprtext)}"
            )

    def pytest_collection_modifyitems(self, items):
        for item in items:
            test = _expected_test(item)
            self.tests[test.id] = test

    def pytest_collection_finish(self, session):
        self.on_collected(list(self.tests.values()))

    def pytest_runtest_setup(self, item):
        if "student" not in item.fixturenames:
            pytest.fail(
                "this test does not use the `student` fixture, so it cannot earn points (a mistake in the tests)"
            )

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        before = frequency_checks_made()
        yield
        if made := frequency_checks_made() - before:
            self.frequency_checks[_test_id(item)] = made

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
