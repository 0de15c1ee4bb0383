"""The grader's commands on the example assignment: grade, batch, gradescope, check, and usage mistakes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from course.kit import ROOT
from grader import results as results_file
from grader.batch import run_batch
from grader.cli import main
from grader.identity import Limits
from grader.results import ExpectedTest, Outcome
from grader.runner import grade
from grader.sandbox import Zygote

sys.path.insert(0, str(Path(__file__).parent / "grader_fixtures"))
from submissions import ASSIGNMENTS, MAX_SCORE, SOLUTION, TESTS, notebook  # noqa: E402

EXAMPLE = ASSIGNMENTS / "00_example"
LIMITS = Limits(call_timeout=3.0, load_timeout=10.0)
BLANK = {
    name: f"def {name}(*args, **kwargs):\n    raise NotImplementedError"
    for name in ("add_one", "pick", "count", "draw", "apply_twice")
}


# ---------------------------------------------------------------- fast: usage mistakes and the report


def test_a_missing_notebook_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["grade", str(tmp_path / "nope.ipynb"), "--tests-dir", str(ASSIGNMENTS)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no notebook at" in err


def test_an_unknown_assignment_is_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "99_unknown.ipynb"
    path.write_text("{}")
    assert main(["grade", str(path), "--tests-dir", str(ASSIGNMENTS)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown assignment '99_unknown'" in err and "00_example" in err


def test_the_assignment_must_be_named_when_the_file_name_does_not_tell(tmp_path, capsys):
    path = tmp_path / "homework.ipynb"
    path.write_text("{}")
    assert main(["grade", str(path)]) == 2
    assert "pass --assignment" in capsys.readouterr().err


def test_report_gives_every_test_its_points_and_every_lost_point_its_reason():
    tests = [ExpectedTest("a.py::t1", "t1", "first check", 2, False), ExpectedTest("b.py::t2", "t2", "", 1, True)]
    results = results_file.build(
        tests, {"a.py::t1": Outcome(True), "b.py::t2": Outcome(False, "t2 raised ValueError")}, "", 1.0
    )
    assert (results["score"], results["max_score"]) == (2, 3)
    assert [t["visibility"] for t in results["tests"]] == ["visible", "after_published"]
    text = results_file.report(results, "title")
    assert "PASS     2/2    first check" in text
    assert "FAIL     0/1    t2  (hidden)" in text and "t2 raised ValueError" in text
    assert text.endswith("Score: 2/3")


def test_results_without_an_outcome_count_as_not_run():
    results = results_file.build([ExpectedTest("a.py::t", "t", "", 1, False)], {}, "", 0.0)
    assert results["score"] == 0 and "not run" in results["tests"][0]["output"]


def test_results_are_written_atomically(tmp_path):
    path = tmp_path / "out" / "results.json"
    results_file.write(path, {"score": 1})
    results_file.write(path, {"score": 2})
    assert json.loads(path.read_text()) == {"score": 2}
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]


# ---------------------------------------------------------------- slow: real grading


@pytest.fixture(scope="module")
def zygote():
    with Zygote() as z:
        yield z


@pytest.mark.slow
def test_grade_command_scores_the_solution_fully(tmp_path, capsys):
    path = tmp_path / "00_example.ipynb"
    path.write_bytes(SOLUTION.read_bytes())
    from grader.runner import ASSIGNMENTS_DIR

    folders = [ASSIGNMENTS / "00_example", ASSIGNMENTS_DIR, ROOT / "solutions"]
    modes = [stat.S_IMODE(f.stat().st_mode) for f in folders]
    assert main(["grade", str(path), "--tests-dir", str(ASSIGNMENTS)]) == 0
    assert [stat.S_IMODE(f.stat().st_mode) for f in folders] == modes  # closed while grading only
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["score"] == results["max_score"] == MAX_SCORE
    assert len(results["tests"]) == len(TESTS) and all(t["status"] == "passed" for t in results["tests"])
    assert f"Score: {MAX_SCORE}/{MAX_SCORE}" in capsys.readouterr().out


@pytest.mark.slow
def test_blank_notebook_fails_every_test_with_a_friendly_reason(tmp_path, zygote):
    path = notebook(tmp_path / "blank.ipynb", **BLANK, Counter="class Counter:\n    pass")
    results = grade(path, EXAMPLE, limits=LIMITS, zygote=zygote)
    assert results["score"] == 0
    outputs = {t["extra_data"]["test"].split("::")[1]: t["output"] for t in results["tests"]}
    assert outputs["test_add_one"].startswith("add_one is not implemented yet")
    assert outputs["test_count"] == "count is not implemented yet (cell 4, line 2)"
    assert "Counter.add" in outputs["test_counter_handle"]


@pytest.mark.slow
def test_hidden_feedback_shows_the_message_never_the_test_code(tmp_path, zygote):
    path = notebook(
        tmp_path / "wrong.ipynb",
        count="def count(xs):\n    return len(xs) - 1",
        add_one="def add_one(t):\n    return t",
    )
    results = grade(path, EXAMPLE, limits=LIMITS, zygote=zygote)
    by_test = {t["extra_data"]["test"].split("::")[1]: t for t in results["tests"]}
    assert by_test["test_count"]["output"] == "count is wrong for a list of 7"
    assert "(at test_visible.py line" in by_test["test_add_one"]["output"]  # visible: the failing line helps
    text = json.dumps(results)
    assert "SECRET_EXPECTED_COUNT" not in text and "test_hidden.py line" not in text
    assert results["score"] == MAX_SCORE - 3


@pytest.mark.slow
def test_a_missing_function_costs_exactly_the_tests_that_need_it(tmp_path, zygote):
    results = grade(
        notebook(tmp_path / "partial.ipynb", omit=("Counter", "draw")), EXAMPLE, limits=LIMITS, zygote=zygote
    )
    failed = {t["extra_data"]["test"].split("::")[1]: t["output"] for t in results["tests"] if t["status"] == "failed"}
    assert failed == {
        "test_counter_handle": "the notebook does not define `Counter`",
        "test_draw_uses_the_generator": "the notebook does not define `draw`",
    }


@pytest.mark.slow
def test_visible_only_runs_the_visible_tests(tmp_path, zygote):
    results = grade(SOLUTION, EXAMPLE, limits=LIMITS, zygote=zygote, visible_only=True)
    assert {t["visibility"] for t in results["tests"]} == {"visible"} and results["score"] == 4


@pytest.mark.slow
def test_grading_from_a_process_that_ran_multithreaded_torch_does_not_hang(tmp_path, zygote):
    # The grading process is forked from the caller; OpenMP's thread pool does not survive a fork.
    tests = tmp_path / "00_fork"
    tests.mkdir()
    (tests / "test_visible.py").write_text(
        "import torch\n"
        "def test_a_parallel_op_on_the_trusted_side(student):\n"
        "    torch.nn.functional.layer_norm(torch.ones(64, 128, 512), (512,))\n"
        "    assert student.add_one(torch.zeros(2)).tolist() == [1.0, 1.0]\n"
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        (torch.randn(1000, 1000) @ torch.randn(1000, 1000)).sum()  # the caller's OpenMP pool is now running
        results = grade(SOLUTION, tests, limits=LIMITS, zygote=zygote, time_limit=60)
    finally:
        torch.set_num_threads(threads)
    assert results["score"] == results["max_score"] == 1, results["output"]


@pytest.mark.slow
def test_batch_grades_a_folder_writes_a_csv_and_resumes(tmp_path):
    folder = tmp_path / "class"
    folder.mkdir()
    notebook(folder / "alice.ipynb")
    notebook(folder / "bob.ipynb", count="def count(xs):\n    return 0")
    (folder / "carol.ipynb").write_text("not a notebook")
    rows = run_batch(folder, EXAMPLE, jobs=2, limits=LIMITS, progress=False).rows
    assert [(r.student, r.score) for r in rows] == [("alice", 9), ("bob", 8), ("carol", 0)]
    lines = (folder / "results" / "scores.csv").read_text().splitlines()
    assert lines[0] == "student,id,notebook,score,max_score,status,reason"
    assert lines[2].startswith('bob,,bob.ipynb,8,9,graded,"count returns')
    before = {p.name: p.stat().st_mtime_ns for p in (folder / "results").glob("*.json")}
    notebook(folder / "bob.ipynb")  # bob fixes his notebook: only bob is graded again
    rows = run_batch(folder, EXAMPLE, jobs=2, limits=LIMITS, progress=False).rows
    after = {p.name: p.stat().st_mtime_ns for p in (folder / "results").glob("*.json")}
    assert [name for name in before if before[name] != after[name]] == ["bob.json"]
    assert rows[1].score == 9


@pytest.mark.slow
def test_check_runs_the_visible_tests_on_a_list_of_cells_and_never_raises(tmp_path, capsys):
    from grader import check

    cells = [
        "import torch",
        "def add_one(t):\n    return t + 1",
        "add_one(torch.zeros(1))",
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("grader.selfcheck._session_cells", lambda: cells)
        results = check("00_example", tests_dir=ASSIGNMENTS)
        assert results["score"] == 2 and len(results["tests"]) == 3
        output = capsys.readouterr().out
        assert "no cell run in this session defines `pick`: run the cell that defines it, then check again" in output
        assert check("no_such_assignment", tests_dir=ASSIGNMENTS) is None
        assert "unknown assignment" in capsys.readouterr().out
    assert check("00_example", tests_dir=ASSIGNMENTS) is None  # outside a notebook, without a path
    assert "pass the notebook's path" in capsys.readouterr().out


@pytest.mark.slow
def test_the_worker_sees_neither_the_tests_nor_the_solutions(tmp_path, zygote):
    """The kit's folders keep their modes (readable by all here); the worker's view of the file system holds neither
    (tests/test_isolation.py tries every setting)."""
    from grader.runner import ASSIGNMENTS_DIR

    folders = [str(ROOT / "solutions"), str(ASSIGNMENTS_DIR)]
    modes = {f: stat.S_IMODE(os.stat(f).st_mode) for f in folders}
    assert all(mode & 0o005 == 0o005 for mode in modes.values()), "the test needs folders that others can read"
    path = notebook(
        tmp_path / "peek.ipynb",
        "import os\n"
        f"def peek():\n    seen = []\n    for folder in {folders!r}:\n"
        "        try:\n            seen += os.listdir(folder)\n        except OSError:\n            pass\n    return seen",
    )
    tests = tmp_path / "peek_tests"
    tests.mkdir()
    (tests / "test_visible.py").write_text(
        "def test_peek(student):\n    seen = student.peek()\n    assert seen == [], f'the worker saw {seen}'\n"
    )
    results = grade(path, tests, limits=LIMITS, zygote=zygote)
    assert results["tests"][0]["status"] == "passed", results["tests"][0]["output"]
    assert {f: stat.S_IMODE(os.stat(f).st_mode) for f in folders} == modes, "no folder's mode was changed"


def test_killing_a_dead_worker_never_kills_the_process_that_got_its_pid(tmp_path):
    """The zygote reaps a dead worker at once; its pid may go to another grading's new worker (pid_max 32768)."""
    import socket

    from grader.sandbox import Worker

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    pidfd = os.pidfd_open(dead.pid)
    dead.wait()
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        worker = Worker.__new__(Worker)  # a worker whose process died, and whose pid is now the bystander's
        worker.user, worker.pid, worker.pidfd, worker.workdir = None, bystander.pid, pidfd, tmp_path / "w"
        worker.endpoint = type("E", (), {"sock": socket.socket()})()
        worker.kill()
        assert bystander.poll() is None, "killing the dead worker killed the process that reused its pid"
    finally:
        bystander.kill()
        bystander.wait()
