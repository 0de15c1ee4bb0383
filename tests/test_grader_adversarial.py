"""Hostile and broken submissions: each must leave the grader running, give a valid results file that
lists every test, and earn no point it did not compute.

All submissions are graded in one `grader batch` run (2 jobs, 2 s per call), then checked one by one.
Each is the example solution with one definition replaced, so the tests that need that definition
must fail and every other test must still pass: a hostile function costs only itself.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path

import pytest

from grader import isolation, namespaces
from grader.batch import run_batch
from grader.identity import Limits, running_as_root
from grader.runner import grade

sys.path.insert(0, str(Path(__file__).parent / "grader_fixtures"))
from submissions import ASSIGNMENTS, MAX_SCORE, TESTS, needing, notebook  # noqa: E402

pytestmark = pytest.mark.slow

LIMITS = Limits(call_timeout=2.0, load_timeout=5.0, memory_bytes=2**30, file_bytes=2**20, output_bytes=64 * 1024)
ALL = set(TESTS)
SECRET = "SECRET_EXPECTED_COUNT"  # a name in the hidden tests' source


def _cases(tests_dir: Path, results_dir: Path) -> dict[str, tuple[dict, set[str], set[str]]]:
    """name -> (notebook arguments, tests that must fail, tests that may pass or fail); the rest must pass."""
    hidden_tests = tests_dir / "00_example" / "test_hidden.py"
    return {
        "sys_exit_in_function": (
            {"add_one": "import sys\ndef add_one(t):\n    sys.exit(0)"},
            needing("add_one"),
            set(),
        ),
        "os_exit_in_function": ({"add_one": "import os\ndef add_one(t):\n    os._exit(0)"}, needing("add_one"), set()),
        "raise_systemexit_in_function": ({"count": "def count(xs):\n    raise SystemExit(1)"}, needing("count"), set()),
        "sys_exit_in_default_argument": (
            {"add_one": "import sys\ndef add_one(t, x=sys.exit(3)):\n    return t + 1"},
            ALL,
            set(),
        ),
        "os_exit_in_decorator": (
            {"pick": "import os\ndef _exit(f):\n    os._exit(0)\n@_exit\ndef pick(logits):\n    pass"},
            ALL,
            set(),
        ),
        "systemexit_in_class_body": ({"Counter": "class Counter:\n    raise SystemExit"}, ALL, set()),
        "infinite_loop": ({"add_one": "def add_one(t):\n    while True:\n        pass"}, needing("add_one"), set()),
        "long_sleep": ({"count": "import time\ndef count(xs):\n    time.sleep(1000)"}, needing("count"), set()),
        "fork_bomb": (
            {
                "add_one": "import os\ndef add_one(t):\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass"
            },
            needing("add_one"),
            set(),
        ),
        "memory_bomb": (
            {"add_one": "def add_one(t):\n    blocks = []\n    while True:\n        blocks.append(bytearray(2**26))"},
            needing("add_one"),
            set(),
        ),
        "tensor_memory_bomb": (
            {"count": "import torch\ndef count(xs):\n    return torch.ones(2**34).sum()"},
            needing("count"),
            set(),
        ),
        "gigabyte_of_prints": (
            {
                "add_one": "def add_one(t):\n    line = 'x' * 2**20\n    for _ in range(1024):\n        print(line)\n    return t + 1"
            },
            set(),
            needing("add_one"),  # correct after printing: may pass, if the printing fits in 2 s
        ),
        "fake_results_file": (
            {
                "add_one": "import json\ndef add_one(t):\n    try:\n"
                f"        open({str(results_dir / 'fake_results_file.json')!r}, 'w').write(json.dumps({{'score': 1000, 'tests': []}}))\n"
                "    except OSError:\n        pass\n    return t - 1"
            },
            needing("add_one"),
            set(),
        ),
        "reads_the_hidden_tests": (
            {"count": f"def count(xs):\n    raise ValueError(open({str(hidden_tests)!r}).read())"},
            needing("count"),
            set(),
        ),
        "lists_the_tests_folder": (
            {"count": f"import os\ndef count(xs):\n    raise ValueError(str(os.listdir({str(tests_dir)!r})))"},
            needing("count"),
            set(),
        ),
        "kills_every_process_it_can": (
            {
                "add_one": "import os, signal\ndef add_one(t):\n    for pid in os.listdir('/proc'):\n        if pid.isdigit() and int(pid) != os.getpid():\n"
                "            try:\n                os.kill(int(pid), signal.SIGKILL)\n            except OSError:\n                pass\n    return t + 1"
            },
            set(),
            set(),  # it computes the right value: killing nothing it may not kill costs it nothing
        ),
        "kills_its_process_group": (
            {"add_one": "import os, signal\ndef add_one(t):\n    os.killpg(0, signal.SIGKILL)"},
            needing("add_one"),
            set(),
        ),
        "monkeypatches_torch_and_pytest": (
            {
                "add_one": "def _patch(f):\n    import sys, torch\n    torch.equal = lambda *a: True\n    sys.modules['pytest'] = None\n"
                "    return f\n@_patch\ndef add_one(t):\n    return t"
            },
            needing("add_one"),
            set(),
        ),
        "monkeypatches_builtins": (  # breaks the worker's own code too: it may cost every test, earns nothing
            {
                "add_one": "def _patch(f):\n    import builtins\n    builtins.isinstance = lambda *a: True\n    builtins.len = lambda x: 2\n"
                "    return f\n@_patch\ndef add_one(t):\n    return t"
            },
            needing("add_one"),
            ALL,
        ),
        "tensor_subclass": (
            {
                "add_one": "import torch\nclass MyTensor(torch.Tensor):\n    def __eq__(self, other):\n        return True\n"
                "def add_one(t):\n    return (t + 1).as_subclass(MyTensor)"
            },
            needing("add_one"),
            set(),
        ),
        "always_equal_object": (
            {
                "pick": "class Anything:\n    def __eq__(self, other):\n        return True\n    def item(self):\n        return 1\n"
                "def pick(logits):\n    return Anything()"
            },
            needing("pick"),
            set(),
        ),
        "returns_nan": (
            {"add_one": "import torch\ndef add_one(t):\n    return torch.full_like(t, float('nan'))"},
            needing("add_one"),
            set(),
        ),
        "wrong_dtype": (
            {
                "pick": "import torch\ndef pick(logits):\n    if logits.numel() == 0:\n        raise ValueError\n    return logits.argmax().int()"
            },
            {"test_pick"},
            set(),
        ),
        "wrong_shape": (
            {
                "pick": "import torch\ndef pick(logits):\n    if logits.numel() == 0:\n        raise ValueError\n    return logits.argmax().reshape(1)"
            },
            {"test_pick"},
            set(),
        ),
        "ignores_sigterm": (
            {
                "add_one": "import signal, time\ndef add_one(t):\n    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n    while True:\n        time.sleep(1)"
            },
            needing("add_one"),
            set(),
        ),
        "thread_left_running": (
            {
                "add_one": "import threading\ndef _spin():\n    while True:\n        pass\n"
                "def add_one(t):\n    threading.Thread(target=_spin, daemon=True).start()\n    return t + 1"
            },
            set(),
            set(),
        ),
        "reads_stdin": ({"count": "def count(xs):\n    return int(input())"}, needing("count"), set()),
        "unbounded_recursion": ({"count": "def count(xs):\n    return count(xs) + 1"}, needing("count"), set()),
        "imports_a_missing_module": (
            {
                "add_one": "import not_a_module_anyone_installed\ndef add_one(t):\n    return not_a_module_anyone_installed.add(t, 1)"
            },
            needing("add_one"),
            set(),
        ),
        "huge_return_value": (
            {"add_one": "import torch\ndef add_one(t):\n    return torch.zeros(80 * 2**20)"},
            needing("add_one"),
            set(),
        ),
        "garbage_on_the_grader_connection": (
            {"count": "import os\ndef count(xs):\n    os.write(3, b'\\xff' * 64)\n    return len(xs)"},
            needing("count"),
            set(),
        ),
        "missing_function": ({"omit": ("draw",)}, needing("draw"), set()),
        "stub_not_implemented": ({"pick": "def pick(logits):\n    raise NotImplementedError"}, needing("pick"), set()),
    }


BROKEN_FILES = {
    "bad_json": b'{"cells": [',
    "wrong_nbformat_version": json.dumps({"nbformat": 3, "nbformat_minor": 0, "worksheets": []}).encode(),
    "empty_file": b"",
    "binary_file": bytes(range(256)) * 4,
    "no_code": json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": "# nothing here"}]}).encode(),
}  # fmt: skip


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Every submission graded in one batch; returns (results by case, cases, tests folder)."""
    root = tmp_path_factory.mktemp("adversarial")
    tests_dir = root / "tests"
    shutil.copytree(ASSIGNMENTS, tests_dir)
    submissions, results_dir = root / "submissions", root / "submissions" / "results"
    submissions.mkdir()
    cases = _cases(tests_dir, results_dir)
    for name, (arguments, _, _) in cases.items():
        notebook(submissions / f"{name}.ipynb", **arguments)
    for name, content in BROKEN_FILES.items():
        (submissions / f"{name}.ipynb").write_bytes(content)
    with open(submissions / "huge_notebook.ipynb", "wb") as f:  # 100 MB, made here, never committed
        f.write(b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [], "padding": "')
        f.write(b"x" * 100 * 2**20 + b'"}')
    rows = run_batch(submissions, tests_dir / "00_example", jobs=2, limits=LIMITS, progress=False).rows
    assert len(rows) == len(cases) + len(BROKEN_FILES) + 1
    results = {p.stem: json.loads(p.read_text()) for p in results_dir.glob("*.json")}
    return results, cases, tests_dir


def _check_valid(results: dict) -> dict[str, dict]:
    by_test = {t["extra_data"]["test"].split("::")[1]: t for t in results["tests"]}
    assert set(by_test) == set(TESTS), "every expected test is listed"
    for test in results["tests"]:
        assert test["status"] in ("passed", "failed")
        assert test["score"] == (test["max_score"] if test["status"] == "passed" else 0)
    assert results["score"] == sum(t["score"] for t in results["tests"]) <= MAX_SCORE
    return by_test


CASE_NAMES = list(_cases(Path("/t"), Path("/r")))


@pytest.mark.parametrize("case", CASE_NAMES)
def test_hostile_submission(graded, case):
    results, cases, tests_dir = graded
    _, must_fail, may_fail = cases[case]
    by_test = _check_valid(results[case])
    for name, test in by_test.items():
        if name in must_fail:
            assert test["status"] == "failed", f"{case}: {name} passed"
            assert test["output"], f"{case}: {name} failed without a reason"
        elif name not in may_fail:
            assert test["status"] == "passed", f"{case}: {name} should pass: {test['output']}"
    text = json.dumps(results[case])
    assert SECRET not in text and "SECRET" not in text, "the hidden tests' source leaked into the feedback"


def test_definition_time_exit_fails_every_test_with_one_reason(graded):
    results, _, _ = graded
    for case in ("sys_exit_in_default_argument", "os_exit_in_decorator", "systemexit_in_class_body"):
        outputs = {t["output"].splitlines()[0] for t in results[case]["tests"]}
        assert len(outputs) == 1 and "loading the notebook" in outputs.pop(), case


def test_feedback_names_what_happened(graded):
    results, _, _ = graded

    def output(case, test):
        return next(t["output"] for t in results[case]["tests"] if t["extra_data"]["test"].endswith("::" + test))

    assert "time limit" in output("infinite_loop", "test_add_one")
    assert "MyTensor" in output("tensor_subclass", "test_add_one")
    assert "Anything" in output("always_equal_object", "test_pick")
    assert "int32" in output("wrong_dtype", "test_pick")
    assert "(1,)" in output("wrong_shape", "test_pick")
    assert "`draw`" in output("missing_function", "test_draw_uses_the_generator")
    assert "pick is not implemented yet" in output("stub_not_implemented", "test_pick")
    assert "too large" in output("huge_return_value", "test_add_one")
    assert "not_a_module_anyone_installed" in results["imports_a_missing_module"]["output"]


@pytest.mark.parametrize("case", [*BROKEN_FILES, "huge_notebook"])
def test_broken_file_scores_zero_with_one_sentence(graded, case):
    results, _, _ = graded
    _check_valid(results[case])
    if case == "no_code":  # a valid notebook without code: every function is missing
        assert all("does not define" in t["output"] for t in results[case]["tests"])
    else:
        assert "is not a Jupyter notebook" in results[case]["output"] and "\n" not in results[case]["output"]
    assert results[case]["score"] == 0


def _namespaces_refused() -> str | None:
    with tempfile.TemporaryDirectory() as folder:
        return namespaces.unavailable(isolation.worker_view(folder))


@pytest.mark.skipif(
    not running_as_root() and _namespaces_refused() is not None,
    reason="not root and without namespaces, grading for marks is refused (tests/test_isolation.py)",
)
def test_detached_writer_cannot_replace_the_results(tmp_path):
    """A process that leaves the worker's session and writes a fake results file seconds later."""
    folder = tmp_path / "open_folder"
    folder.mkdir()
    folder.chmod(0o777)  # even a folder the worker could write to
    results_path = folder / "results.json"
    writer = (
        "import os, time, json\n"
        "def _detach(f):\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        if os.fork() == 0:\n"
        "            for _ in range(40):\n"
        "                time.sleep(0.1)\n"
        "                try:\n"
        f"                    open({str(results_path)!r} + '.fake', 'w').write(json.dumps({{'score': 1000}}))\n"
        f"                    os.replace({str(results_path)!r} + '.fake', {str(results_path)!r})\n"
        "                except OSError:\n"
        "                    pass\n"
        "        os._exit(0)\n"
        "    return f\n"
        "@_detach\n"
        "def add_one(t):\n"
        "    return t + 1\n"
    )
    path = notebook(folder / "00_example.ipynb", add_one=writer)
    grade(path, ASSIGNMENTS / "00_example", results_path=results_path, limits=LIMITS)
    written = results_path.read_bytes()
    time.sleep(4.5)  # longer than the detached writer would wait
    assert results_path.read_bytes() == written, "something replaced the results file after grading"
    results = json.loads(written)
    _check_valid(results)
    assert results["score"] == MAX_SCORE  # the decorator detached a writer, but every function is right
    assert stat.S_IMODE(os.stat(results_path).st_mode) == 0o644
