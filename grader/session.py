"""One notebook's code behind the boundary, as the tests see it.

    session = StudentSession(statements, limits, zygote_channel, user)  # or plain.PlainWorkers()
    session.call("greedy", (logits,), {}, timeout=10)  # the worker starts and loads on first use
    session.close()                                     # kills the worker's whole process tree

A call that times out, crashes the worker or breaks the protocol fails alone: the next call starts a
fresh worker and loads the notebook again.
"""

from __future__ import annotations

from course.notebook import ExtractedCode, Statement, missing_reasons
from grader.errors import WORKER_LOST, MissingFunction, StudentCrashed, StudentError
from grader.identity import Limits, WorkerUser
from grader.rpc import StudentObject, TrustedEndpoint

NAMESPACE_HANDLE = 0
FAILED_LOADS_BEFORE_GIVING_UP = 2


class StudentSession:
    """One notebook's code behind the boundary: loaded in a worker on first use, and re-loaded in a
    fresh worker after any call that timed out or killed it. A notebook that cannot be loaded twice
    in a row fails every later call at once, with the same reason."""

    def __init__(
        self,
        statements: list[dict],
        limits: Limits,
        workers,
        user: WorkerUser | None,
        unparsed: dict[str, str] | None = None,
        session_cells: bool = False,
    ):
        self.statements = statements
        self.unparsed = unparsed or {}  # names of cells that could not be parsed -> why (ExtractedCode.unparsed)
        self.session_cells = session_cells  # the statements come from the cells a notebook session ran, not a file
        self.limits = limits
        self.workers = workers  # where workers come from: a zygote (sandbox.ZygoteChannel) or plain.PlainWorkers
        self.user = user
        self.worker = None  # a sandbox.Worker or a plain.PlainWorker: an `endpoint` and `kill()`
        self.names: dict[str, bool] = {}  # name -> callable, as the last load reported
        self.problems: list[str] = []  # what went wrong while loading, for the report
        self.failed_loads = 0
        self.load_failure: str | None = None

    def endpoint(self) -> TrustedEndpoint:
        if self.worker is not None and self.worker.endpoint.lost is None:
            return self.worker.endpoint
        self._discard_worker()
        if self.failed_loads >= FAILED_LOADS_BEFORE_GIVING_UP:
            raise StudentCrashed(self.load_failure)
        self.worker = self.workers.new_worker(self.limits, self.user)
        try:
            report = self.worker.endpoint.call(
                "load",
                NAMESPACE_HANDLE,
                None,
                (self.statements,),
                label="loading the notebook",
                timeout=self.limits.load_timeout,
            )
            self.names, self.problems = _check_load_report(report)
        except StudentError as error:
            self.failed_loads += 1
            self.load_failure = f"{error}, so none of its functions could be tested"
            self._discard_worker()
            raise StudentCrashed(self.load_failure) from None
        self.failed_loads = 0
        return self.worker.endpoint

    def lookup(self, name: str, timeout: float, check_arguments: bool = True):
        """What `student.NAME` gives: a callable proxy for a function or class, the data of a constant."""
        self.endpoint()
        if name not in self.names:
            extracted = ExtractedCode([Statement(**s) for s in self.statements], unparsed=self.unparsed)
            reason = missing_reasons(extracted, self.names).get(name)
            if reason is None and self.session_cells:
                raise MissingFunction(
                    f"no cell run in this session defines `{name}`: run the cell that defines it, then check again"
                )
            raise MissingFunction(f"the notebook does not define `{name}`" + (f": {reason}" if reason else ""))
        if self.names[name]:
            return StudentFunction(self, name, timeout, check_arguments)
        return self._guarded(
            lambda endpoint: endpoint.call("getattr", NAMESPACE_HANDLE, name, label=name, timeout=timeout)
        )

    def call(self, name: str, args, kwargs, timeout: float, check_arguments: bool = True):
        """Call NAME in the worker; unless `check_arguments` is False, a tensor argument modified in
        place raises StudentModifiedArgument."""
        result = self._guarded(
            lambda endpoint: endpoint.call(
                "invoke",
                NAMESPACE_HANDLE,
                name,
                args,
                kwargs,
                label=name,
                timeout=timeout,
                check_arguments=check_arguments,
            )
        )
        if isinstance(result, StudentObject):
            result.set_rules(timeout, check_arguments)
        return result

    def _guarded(self, action):
        try:
            return action(self.endpoint())
        except WORKER_LOST:
            self._discard_worker()
            raise

    def _discard_worker(self) -> None:
        if self.worker is not None:
            self.worker.kill()
            self.worker = None

    def close(self) -> None:
        self._discard_worker()


def _check_load_report(report) -> tuple[dict[str, bool], list[str]]:
    if type(report) is not dict or type(report.get("names")) is not dict or type(report.get("problems")) is not list:
        raise StudentCrashed("loading the notebook returned a malformed report")
    names = {str(k): bool(v) for k, v in report["names"].items()}
    return names, [str(p)[:300] for p in report["problems"][:100]]


class StudentFunction:
    """`student.greedy`: calls the notebook's function of that name in the current worker."""

    def __init__(self, session: StudentSession, name: str, timeout: float, check_arguments: bool = True):
        self._session = session
        self._name = name
        self._timeout = timeout
        self._check_arguments = check_arguments

    def __call__(self, *args, **kwargs):
        return self._session.call(self._name, args, kwargs, self._timeout, self._check_arguments)

    def __repr__(self) -> str:
        return f"<student function {self._name}>"
