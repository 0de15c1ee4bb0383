"""Students' platforms: where the sandbox cannot run (Windows, macOS), the self-check runs the visible tests
in plain spawned processes (grader/plain.py) with the same report and time limits; grading for marks says in one line
that it needs Linux. Windows is simulated on Linux by a sitecustomize that removes, from every Python process, what
Windows lacks and the sandbox uses."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course.assignments import grading, names
from course.kit import ROOT
from grader.plain import sandbox_unavailable

WITH_GREEDY = grading(["greedy"]).name  # a never-ending `greedy` goes into its solution

WITHOUT_THE_SANDBOX = Path(__file__).parent / "grader_fixtures" / "without_sandbox"  # its sitecustomize.py


@pytest.fixture(scope="module")
def windows_like() -> dict:
    """The environment of a Python without fork, setsid, setuid, setgid, killpg, send_fds, recv_fds or `resource`."""
    path = os.pathsep.join(p for p in (str(WITHOUT_THE_SANDBOX), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, PYTHONDONTWRITEBYTECODE="1")


def run_python(code: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout
    )


@pytest.mark.skipif(sys.platform != "linux", reason="the sandbox runs only on Linux")
def test_the_sandbox_runs_on_this_linux():
    assert sandbox_unavailable() is None


def test_what_the_sandbox_lacks_is_named(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert sandbox_unavailable() == "the sandbox needs Linux, and this is darwin"
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delattr(os, "fork", raising=False)
    monkeypatch.delattr(socket, "send_fds", raising=False)
    assert sandbox_unavailable() == "this Python has no os.fork, socket.send_fds"


def test_the_simulated_python_lacks_what_windows_lacks(windows_like):
    code = (
        "import importlib.util, os, socket\n"
        "print(sorted(n for n in ('fork', 'forkpty', 'setsid', 'setuid', 'setgid', 'killpg') if hasattr(os, n)),"
        " hasattr(socket, 'send_fds'), hasattr(socket, 'recv_fds'))\n"
        "try:\n    import resource\nexcept ImportError:\n    print('no resource')\n"
    )
    done = run_python(code, windows_like)
    assert done.stdout.split("\n")[:2] == ["[] False False", "no resource"], done.stderr


@pytest.mark.slow
def test_grading_for_marks_says_in_one_line_that_it_needs_linux(windows_like, tmp_path):
    notebook = ROOT / "solutions" / f"{WITH_GREEDY}.ipynb"
    code = (
        "from grader.cli import main\n"
        f"print(main(['grade', {str(notebook)!r}, '--results', {str(tmp_path / 'r.json')!r}]))\n"
        f"print(main(['batch', {str(tmp_path)!r}, '--assignment', {WITH_GREEDY!r}]))\n"
    )
    done = run_python(code, windows_like)
    assert done.stdout.split() == ["2", "2"], done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and all(
        "grading needs Linux, as on Gradescope (this Python has no os.fork" in x for x in lines
    )
    assert lines[0].startswith("grader grade: error: ") and lines[1].startswith("grader batch: error: ")
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "results").exists()


def with_an_infinite_loop(tmp_path: Path) -> Path:
    """The solution whose `greedy` never returns (a later cell redefines it, as a student's edit would)."""
    book = nbformat.read(ROOT / "solutions" / f"{WITH_GREEDY}.ipynb", as_version=4)
    book.cells.append(nbformat.v4.new_code_cell("def greedy(logits):\n    while True:\n        pass"))
    path = tmp_path / f"{WITH_GREEDY}.ipynb"
    nbformat.write(book, path)
    return path


@pytest.mark.slow
def test_check_without_the_sandbox_scores_solutions_blanks_and_times_out_a_loop(windows_like, tmp_path):
    """Every solution full visible marks, every blank notebook zero, a never-ending `greedy` its time limit:
    check() in one session of a Python that has none of what the sandbox needs."""
    looping = with_an_infinite_loop(tmp_path)
    code = (
        "import json\nfrom grader import check\nscores = {}\n"
        f"for name in {names()!r}:\n"
        "    for kind in ('solutions', 'assignments'):\n"
        "        r = check(name, f'{kind}/{name}.ipynb', show=False)\n"
        "        scores[f'{kind}/{name}'] = None if r is None else [r['score'], r['max_score']]\n"
        f"r = check({WITH_GREEDY!r}, {str(looping)!r}, timeout=2, show=False)\n"
        "scores['loop'] = {t['name']: [t['status'], t['output']] for t in r['tests']}\n"
        "print(json.dumps(scores))\n"
    )
    done = run_python(code, windows_like)
    assert done.returncode == 0, done.stderr
    scores = json.loads(done.stdout.strip().splitlines()[-1])
    for name in names():
        score, max_score = scores[f"solutions/{name}"]
        assert max_score > 0 and score == max_score, f"solution {name}: {score}/{max_score}"
        assert scores[f"assignments/{name}"] == [0, max_score], f"blank {name}"
    loop = scores.pop("loop")
    timed_out = {name: output for name, (status, output) in loop.items() if "greedy" in name.split()[0]}
    assert timed_out and all("greedy did not finish within its time limit" in out for out in timed_out.values())
    others = [status for name, (status, _) in loop.items() if name not in timed_out]
    assert others and set(others) == {"passed"}, loop


def colab_cells() -> dict[str, str]:
    """The first code cell of each solution and each student notebook."""
    cells = {}
    for path in sorted([*(ROOT / "solutions").glob("0*.ipynb"), *(ROOT / "assignments").glob("0*.ipynb")]):
        book = nbformat.read(path, as_version=4)
        cells[f"{path.parent.name}/{path.name}"] = next(c.source for c in book.cells if c.cell_type == "code")
    return cells


def run_first_cell(source: str, monkeypatch, in_colab: bool) -> list:
    """Run the cell with its effects recorded instead of done; what it did, in order."""
    done = []
    monkeypatch.setattr(subprocess, "run", lambda command, check: done.append(command[:4]))
    monkeypatch.setattr(os, "chdir", lambda folder: done.append(("chdir", folder)))
    monkeypatch.setattr(os.path, "isdir", lambda folder: False)  # a fresh runtime
    monkeypatch.setattr(sys, "path", list(sys.path))
    if in_colab:
        monkeypatch.setitem(sys.modules, "google.colab", type(sys)("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(compile(source, "first cell", "exec"), {})
    return done + ([("path", sys.path[0])] if in_colab else [])


def test_the_first_cell_installs_the_kit_on_colab_only(monkeypatch):
    cells = colab_cells()
    assert len(cells) >= 8 and len(set(cells.values())) == 1, "every notebook starts with the same install cell"
    source = next(iter(cells.values()))
    assert run_first_cell(source, monkeypatch, in_colab=False) == []
    kit = "/content/course-kit"
    assert run_first_cell(source, monkeypatch, in_colab=True) == [
        ["git", "clone", "--depth", "1"],
        [sys.executable, "-m", "pip", "install"],
        ("chdir", f"{kit}/assignments"),
        ("path", kit),
    ]
