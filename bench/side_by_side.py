"""The grader before and after a change, side by side in one run: grading throughput and one correct notebook's time.

    python bench/side_by_side.py --before REV [--rounds 3] [--count 200] [--jobs 2]

REV (a commit, a branch) is checked out into a worktree under bench/out/; both trees run with this interpreter
and its environment, `PYTHONPATH` choosing the tree, in alternating rounds so that a change in the machine's load
falls on both. Each round runs, per tree, `bench/grade_throughput.py --skip-otter` (the mixed batch of the example
assignment, hostile notebooks included) and `grader grade` of the sampling assignment's solution (the one that
grades `sample_next`: a correct notebook, every test, hidden ones included). The summary gives each tree's median and the ratio after / before.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from course.assignments import grading
from course.kit import ROOT

OUT = ROOT / "bench" / "out"
SAMPLING = grading(["sample_next"]).name  # the assignment whose correct notebook is timed


def worktree(revision: str) -> Path:
    folder = OUT / f"tree-{revision.replace('/', '-')}"
    if not folder.exists():
        OUT.mkdir(exist_ok=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(folder), revision], check=True)
    return folder


def run_in(tree: Path, command: list[str], cwd: Path) -> tuple[float, str]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    started = time.monotonic()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} in {tree} failed: {done.stderr.strip()[-2000:]}")
    return elapsed, done.stdout


def throughput(tree: Path, count: int, jobs: int) -> float:
    command = [sys.executable, str(tree / "bench" / "grade_throughput.py"), "--skip-otter", "--count", str(count)]
    _, output = run_in(tree, [*command, "--jobs", str(jobs)], tree)
    return float(re.search(r"= (\d+) notebooks/minute", output).group(1))


def single_grading(tree: Path) -> tuple[float, str]:
    with tempfile.TemporaryDirectory(prefix="side-by-side-") as folder:
        notebook = Path(folder) / f"{SAMPLING}.ipynb"
        notebook.write_bytes((tree / "solutions" / f"{SAMPLING}.ipynb").read_bytes())
        command = [sys.executable, "-m", "grader.cli", "grade", str(notebook), "--assignment", SAMPLING]
        elapsed, output = run_in(tree, command, tree)
    return elapsed, re.search(r"Score: (\S+)", output).group(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the commit or branch to compare this tree with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=200, help="notebooks per throughput run")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    trees = {f"before ({args.before})": worktree(args.before), "after (this tree)": ROOT}
    rates: dict[str, list[float]] = {name: [] for name in trees}
    times: dict[str, list[float]] = {name: [] for name in trees}
    for round_number in range(1, args.rounds + 1):
        for name, tree in trees.items():
            load = os.getloadavg()[0]
            rate = throughput(tree, args.count, args.jobs)
            elapsed, score = single_grading(tree)
            rates[name].append(rate)
            times[name].append(elapsed)
            print(
                f"round {round_number} {name}: load {load:.1f}, {rate:.0f} notebooks/minute; "
                f"grader grade {SAMPLING} solution {elapsed:.2f} s, score {score}",
                flush=True,
            )
    (before, after) = trees
    rate = {name: statistics.median(values) for name, values in rates.items()}
    single = {name: statistics.median(values) for name, values in times.items()}
    print(f"\n| tree | notebooks/minute (median of {args.rounds}) | one correct 02 grading (median) |")
    print("|---|---:|---:|")
    for name in trees:
        print(f"| {name} | {rate[name]:.0f} | {single[name]:.2f} s |")
    print(
        f"\nafter / before: throughput {rate[after] / rate[before]:.2f}x, "
        f"single grading time {single[after] / single[before]:.2f}x"
    )


if __name__ == "__main__":
    main()
