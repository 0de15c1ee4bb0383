"""Grading throughput: 200 submissions of the example assignment through `grader batch --jobs 2`.

The mix: 50% correct, 20% blank (stubs), 20% wrong in one function, 10% hostile (infinite loop,
sys.exit, os._exit at definition time, fork bomb, memory bomb), graded with every limit on and
2 seconds per call. Prints notebooks per minute (target: at least 60 on 2 cores).

Then correct, blank and wrong notebooks of an equivalent otter assignment (the same checks as OK-format
doctests), graded with otter-grader's `otter run`, as many at a time as the batch's jobs, in a venv of
its own under bench/out/; if otter cannot be installed or run, the output says why. (Otter has no
per-call time limit: a hostile notebook with an infinite loop would hang it, so none is given to it.)

    python bench/grade_throughput.py [--count 200] [--jobs 2] [--otter-count 20] [--skip-otter]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from course.kit import ROOT

OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT / "tests" / "grader_fixtures"))
from submissions import ASSIGNMENTS, notebook  # noqa: E402

KINDS = {
    "correct": {},
    "blank": {
        **{
            name: f"def {name}(*args, **kwargs):\n    raise NotImplementedError"
            for name in ("add_one", "pick", "count", "draw", "apply_twice")
        },
        "Counter": "class Counter:\n    pass",
    },
    "wrong": {"count": "def count(xs):\n    return len(xs) + 1"},
    "infinite_loop": {"add_one": "def add_one(t):\n    while True:\n        pass"},
    "exit": {"count": "import sys\ndef count(xs):\n    sys.exit(1)"},
    "exit_at_load": {"pick": "import os\ndef _exit(f):\n    os._exit(0)\n@_exit\ndef pick(logits):\n    pass"},
    "fork_bomb": {
        "add_one": "import os\ndef add_one(t):\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass"
    },
    "memory_bomb": {
        "add_one": "def add_one(t):\n    blocks = []\n    while True:\n        blocks.append(bytearray(2**26))"
    },
}
HOSTILE = ["infinite_loop", "exit", "exit_at_load", "fork_bomb", "memory_bomb"]


def kind_of(i: int) -> str:
    """In every 20 notebooks: 10 correct, 4 blank, 4 wrong, 2 hostile (taking turns)."""
    slot = i % 20
    if slot < 18:
        return "correct" if slot < 10 else "blank" if slot < 14 else "wrong"
    return HOSTILE[(2 * (i // 20) + slot - 18) % len(HOSTILE)]


def make_submissions(folder: Path, count: int) -> list[str]:
    kinds = [kind_of(i) for i in range(count)]
    for i, kind in enumerate(kinds):
        notebook(folder / f"student_{i:03d}.ipynb", **KINDS[kind])
    return kinds


def bench_grader(count: int, jobs: int) -> float:
    with tempfile.TemporaryDirectory(prefix="grade-bench-") as folder:
        folder = Path(folder)
        kinds = make_submissions(folder, count)
        started, cpu_before = time.monotonic(), os.times()
        done = subprocess.run(
            [sys.executable, "-m", "grader.cli", "batch", str(folder), "--assignment", "00_example", "--tests-dir",
             str(ASSIGNMENTS), "--jobs", str(jobs), "--timeout", "2", "--quiet"],
            capture_output=True, text=True,
        )  # fmt: skip
        elapsed, cpu_after = time.monotonic() - started, os.times()
        cpu = sum(getattr(cpu_after, f) - getattr(cpu_before, f) for f in ("children_user", "children_system"))
        if done.returncode != 0:
            raise SystemExit(f"grader batch failed: {done.stderr.strip()}")
        scores = {}
        for i, kind in enumerate(kinds):
            results = json.loads((folder / "results" / f"student_{i:03d}.json").read_text())
            scores.setdefault(kind, set()).add(results["score"])
    rate = count / elapsed * 60
    mix = ", ".join(f"{kinds.count(k)} {k}" for k in KINDS if kinds.count(k))
    print(f"grader batch --jobs {jobs}: {count} notebooks ({mix}) in {elapsed:.1f} s = {rate:.0f} notebooks/minute")
    print("  scores by kind: " + ", ".join(f"{k} {sorted(v)}" for k, v in scores.items()))
    print(f"  CPU time of the grading processes (workers not included): {cpu:.1f} s, {cpu / count:.2f} s per notebook")
    return rate


# ---------------------------------------------------------------- otter-grader, for comparison

OTTER_TESTS = {
    "add_one": ("add_one(torch.tensor([1.0, 2.5])).tolist()", "[2.0, 3.5]", 2),
    "pick": ("pick(torch.tensor([0.1, 3.0, 2.0])).item()", "1", 1),
    "count": ("count(list(range(7)))", "7", 1),
    "draw": ("g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)\n>>> "
             "bool(torch.equal(draw(torch.tensor([.1, .2, .3, .4]), generator=g1), torch.multinomial(torch.tensor([.1, .2, .3, .4]), 1, generator=g2)))",
             "True", 2),
    "counter": ("c = Counter(); c.add(2); c.add(5)\n>>> (len(c), c.total())", "(2, 7)", 1),
    "apply_twice": ("apply_twice(lambda t: t * 2, torch.tensor([1.5])).item()", "6.0", 1),
}  # fmt: skip


def otter_tests(folder: Path) -> None:
    folder.mkdir(parents=True)
    for name, (code, expected, points) in OTTER_TESTS.items():
        case = {"code": f">>> import torch\n>>> {code}\n{expected}", "hidden": False, "locked": False}
        test = {
            "name": name,
            "points": points,
            "suites": [{"cases": [case], "scored": True, "setup": "", "teardown": "", "type": "doctest"}],
        }
        (folder / f"{name}.py").write_text(f"OK_FORMAT = True\n\ntest = {test!r}\n")


def _otter_run(venv: Path, work: Path, nb: Path) -> str | None:
    out = work / "out" / nb.stem
    out.mkdir(parents=True)
    done = subprocess.run([str(venv / "bin" / "otter"), "run", "-a", str(work / "autograder.zip"), "-o", str(out), str(nb)],
                          cwd=work, capture_output=True, text=True)  # fmt: skip
    return None if done.returncode == 0 else f"{nb.name}: {(done.stderr.strip().splitlines() or ['no message'])[-1]}"


def bench_otter(count: int, jobs: int) -> float | None:
    venv = OUT / "otter-venv"
    python = venv / "bin" / "python"
    try:
        if not (venv / "bin" / "otter").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", "otter-grader"], check=True, capture_output=True, text=True
            )
        # otter's notebooks import torch: reuse the project's CPU torch rather than download another one
        site = next((venv / "lib").glob("python*/site-packages"))
        (site / "zz_project_packages.pth").write_text(
            str(next((ROOT / ".venv" / "lib").glob("python*/site-packages"))) + "\n"
        )
    except subprocess.CalledProcessError as error:
        print(f"otter: could not be installed ({(error.stderr or '').strip().splitlines()[-1:] or error})")
        return None
    work = Path(tempfile.mkdtemp(prefix="otter-bench-"))
    try:
        otter_tests(work / "tests")
        done = subprocess.run(
            [str(venv / "bin" / "otter"), "generate", "-t", "tests", "-o", "autograder.zip"],
            cwd=work,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            print(f"otter: `otter generate` failed: {done.stderr.strip().splitlines()[-1:]}")
            return None
        submissions = work / "submissions"
        submissions.mkdir()
        kinds = make_submissions(submissions, count * 3)
        # otter has no per-call time limit: an infinite loop would hang it, so no hostile notebooks here
        picked = [i for i, kind in enumerate(kinds) if kind not in HOSTILE][::2][:count]
        notebooks = [submissions / f"student_{i:03d}.ipynb" for i in picked]
        started = time.monotonic()
        with ThreadPoolExecutor(jobs) as pool:  # as many notebooks at once as grader batch's jobs
            failures = [f for f in pool.map(lambda nb: _otter_run(venv, work, nb), notebooks) if f]
        if failures:
            print(f"otter: `otter run` failed: {failures[0]}")
            return None
        elapsed = time.monotonic() - started
        scores = [
            sum(t.get("score") or 0 for t in json.loads((work / "out" / nb.stem / "results.json").read_text())["tests"])
            for nb in notebooks
        ]
        rate = len(notebooks) / elapsed * 60
        mix = ", ".join(f"{[kinds[i] for i in picked].count(k)} {k}" for k in ("correct", "blank", "wrong"))
        print(
            f"otter run, {jobs} at a time: {len(notebooks)} notebooks ({mix}; no hostile ones) in {elapsed:.1f} s "
            f"= {rate:.1f} notebooks/minute; scores {sorted(set(scores))}"
        )
        return rate
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--otter-count", type=int, default=20)
    parser.add_argument("--skip-otter", action="store_true")
    parser.add_argument("--skip-grader", action="store_true")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    ours = None if args.skip_grader else bench_grader(args.count, args.jobs)
    theirs = None if args.skip_otter else bench_otter(args.otter_count, args.jobs)
    if ours and theirs:
        print(f"ratio: grader batch is {ours / theirs:.1f}x otter run")


if __name__ == "__main__":
    main()
