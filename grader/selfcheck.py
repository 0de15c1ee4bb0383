"""What a student's notebook session uses from the grader: `check` and `demo`. Neither stops Run All.

`check("NN_name")` in a notebook cell runs the visible tests on the functions of this session.
It reads the session's cell history (IPython's `In`), or the notebook file it is given, through the
same loader and grading pipeline as `grader grade` (visible tests only), in a separate process so
that the notebook's kernel never forks: the session's check service, kept warm from one check to the
next (where the sandbox cannot run, on Windows or macOS, it grades with plain workers: grader/plain.py). It shows a table (HTML in Jupyter, text elsewhere), never
raises, and returns the results as a `CheckResults`, which a cell shows as one line.

`with demo():` around a demo cell's code: while a function of the notebook that it calls is still a
stub, one line names it instead of a traceback, and Run All goes on.
"""

from __future__ import annotations

import atexit
import json
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from html import escape
from pathlib import Path

from grader import results as results_file


class CheckResults(dict):
    """The results of a self-check (results.json's fields: `score`, `max_score`, `tests`, ...), shown as one line,
    so that a cell ending with `check(...)` shows the table and not the whole dictionary after it."""

    def __init__(self, assignment: str, results: dict):
        super().__init__(results)
        self.assignment = assignment

    def __repr__(self) -> str:
        return f"{self.assignment}: {self['score']:g}/{self['max_score']:g} visible points"


def check(
    assignment: str, notebook=None, *, tests_dir=None, timeout: float | None = None, show: bool = True
) -> CheckResults | None:
    """Run the visible tests of `assignment`; returns the results (None if they could not run)."""
    try:
        cells = None if notebook is not None else _session_cells()
        if notebook is None and cells is None:
            print("check: not in a notebook session; pass the notebook's path: check('NN_name', 'my.ipynb')")
            return None
        results = _run(assignment, notebook, cells, tests_dir, timeout)
    except Exception as error:  # noqa: BLE001 -- never stop Run All
        print(f"check could not run the tests: {error}")
        return None
    if show:
        _display(results, assignment)
    return CheckResults(assignment, results)


@contextmanager
def demo():
    """Run a demo cell's code; a stub of the notebook that raises NotImplementedError is named in one line.

    Only a NotImplementedError raised by a function defined in the notebook's session (`__main__`) is caught:
    any other error, such as a bug in a student's function, shows its traceback as usual."""
    figures_before = _open_figures()
    try:
        yield
    except NotImplementedError as error:
        stub = _session_function_that_raised(error)
        if stub is None:
            raise
        print(f"`{stub}` is not implemented yet: write it in its cell above, then run this cell again.")
        _close_figures_except(figures_before)  # Jupyter would show the half-drawn figure's empty axes


def _open_figures() -> set[int]:
    pyplot = sys.modules.get("matplotlib.pyplot")  # only if the notebook uses it: never import it here
    return set(pyplot.get_fignums()) if pyplot else set()


def _close_figures_except(kept: set[int]) -> None:
    pyplot = sys.modules.get("matplotlib.pyplot")
    for number in _open_figures() - kept:
        pyplot.close(number)


def _session_function_that_raised(error: BaseException) -> str | None:
    """The qualified name of the function where `error` was raised, if the notebook's session defined it."""
    frame = error.__traceback__
    while frame.tb_next is not None:
        frame = frame.tb_next
    code, namespace = frame.tb_frame.f_code, frame.tb_frame.f_globals
    if namespace.get("__name__") != "__main__" or code.co_name == "<module>":
        return None
    if hasattr(code, "co_qualname"):  # Python 3.11+
        return code.co_qualname
    owner = frame.tb_frame.f_locals.get("self")  # Python 3.10: a method's class is its `self`'s
    return code.co_name if owner is None else f"{type(owner).__name__}.{code.co_name}"


def _session_cells() -> list[str] | None:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    if shell is None or "In" not in shell.user_ns:
        return None
    return [str(cell) for cell in shell.user_ns["In"][1:]]  # In[n] is cell n; In[0] is empty


def _run(assignment: str, notebook, cells, tests_dir, timeout) -> dict:
    with tempfile.TemporaryDirectory(prefix="grader-check-") as folder:
        out = Path(folder) / "results.json"
        arguments = [assignment, "--results", str(out), "--quiet"]
        if notebook is not None:
            arguments += ["--notebook", str(Path(notebook).resolve())]
        else:
            (Path(folder) / "cells.json").write_text(json.dumps(cells))
            arguments += ["--cells", str(Path(folder) / "cells.json")]
        if timeout:
            arguments += ["--timeout", str(timeout)]
        if tests_dir:
            arguments += ["--tests-dir", str(Path(tests_dir).resolve())]
        CheckService.for_this_session().check(arguments)
        if not out.is_file():
            raise RuntimeError("the grader wrote no results")
        return json.loads(out.read_text())


class CheckService:
    """`grader check-service` (grader/cli.py), started on the session's first check and kept for the next
    ones: its workers' source (a zygote, or a spare interpreter where the sandbox cannot run) stays warm, so
    a repeated check costs a grading, not a new interpreter importing torch twice. It ends with the session
    (the end of its stdin), and is replaced if it died or a check was interrupted."""

    _current: CheckService | None = None

    @classmethod
    def for_this_session(cls) -> CheckService:
        if cls._current is None or cls._current.process.poll() is not None:
            cls._current = cls()
        return cls._current

    def __init__(self):
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 -- its stderr, for the reason if it dies; closed with it
        self.process = subprocess.Popen(
            [sys.executable, "-m", "grader.cli", "check-service"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        atexit.register(self.close)

    def check(self, arguments: list[str]) -> None:
        """Run `grader check ARGUMENTS` in the service; raises RuntimeError with the reason if it failed."""
        try:
            self.process.stdin.write(json.dumps(arguments) + "\n")
            self.process.stdin.flush()
            answer = self.process.stdout.readline()
        except BaseException:  # an interrupted check leaves its answer unread: this service cannot be trusted again
            self.close()
            raise
        if not answer:
            reason = self._last_log_line() or "the check service stopped"
            self.close()
            raise RuntimeError(reason)
        error = json.loads(answer)["error"]
        if error is not None:
            raise RuntimeError(error)

    def _last_log_line(self) -> str:
        self.log.seek(0)
        lines = self.log.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else ""

    def close(self) -> None:
        try:
            self.process.stdin.close()  # the end of its requests: it closes its workers' source and exits
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()  # its zygote sees its own stdin close and ends too
            self.process.wait()
        self.log.close()
        if CheckService._current is self:
            CheckService._current = None


def _display(results: dict, assignment: str) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import HTML, display

        in_jupyter = type(get_ipython()).__name__ == "ZMQInteractiveShell"
    except ImportError:
        in_jupyter = False
    if in_jupyter:
        display(HTML(html_table(results, assignment)))
    else:
        print(results_file.report(results, f"{assignment}: visible tests"))


def html_table(results: dict, assignment: str) -> str:
    rows = "".join(
        f"<tr><td>{'✅' if t['status'] == 'passed' else '❌'}</td><td>{t['score']:g}/{t['max_score']:g}</td>"
        f"<td>{escape(t['name'])}</td><td><pre style='margin:0'>{escape(t['output'] if t['status'] != 'passed' else '')}</pre></td></tr>"
        for t in results["tests"]
    )
    note = f"<p>{escape(results['output'])}</p>" if results.get("output") else ""
    return (
        f"<h4>{escape(assignment)}: visible tests, {results['score']:g}/{results['max_score']:g}</h4>{note}"
        f"<table><tr><th></th><th>points</th><th>test</th><th>why</th></tr>{rows}</table>"
    )
