"""What a student waits for a self-check: the first `check(...)` of a notebook session and the repeated ones.

Before, every check started `python -m grader.cli check`: a new interpreter importing torch and pytest, a new zygote
importing torch again, a grading process importing what `torch.testing.assert_close` pulls in, then a worker. After,
the session's first check starts `grader check-service`, which keeps the zygote (or, without the sandbox, one spare
interpreter) warm; each later check costs a grading and a fresh worker. "Before" is a commit's grader and course
packages (`git archive`, read only), "after" this tree; each session is its own Python process, run one after the
other, alternating, so both see the same machine load.

    python bench/check_loop.py [--before HEAD] [--assignment NN_name] [--repeats 4] [--rounds 2] [--pause 2]

--assignment defaults to the sampling assignment (the one that grades `sample_next`).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from course.assignments import grading

ROOT = Path(__file__).resolve().parents[1]
WITHOUT_SANDBOX = ROOT / "tests" / "grader_fixtures" / "without_sandbox"  # its sitecustomize removes fork & co.

SESSION = """
import json, sys, time
from grader import check
name, notebook, repeats, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
times, scores = [], []
for i in range(1 + repeats):
    if i:
        time.sleep(pause)  # the student reads the table and edits a function
    started = time.perf_counter()
    results = check(name, notebook, show=False)
    times.append(time.perf_counter() - started)
    scores.append(None if results is None else results["score"])
print(json.dumps({"times": times, "scores": scores}))
"""


def old_tree(commit: str, folder: Path) -> Path:
    """The grader and course packages and the solutions of `commit`, extracted under `folder` (git state untouched):
    each tree checks its own solution notebook, from its own folder (a grader finds its kit from where it runs)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit, "grader", "course", "solutions"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder)  # our own repository's archive: nothing to filter
    return folder


def session(pythonpath: Path | str, args, extra_path: str = "") -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (extra_path, str(pythonpath)) if p))
    notebook = Path(pythonpath) / "solutions" / f"{args.assignment}.ipynb"
    done = subprocess.run(
        [sys.executable, "-c", SESSION, args.assignment, str(notebook), str(args.repeats), str(args.pause)],
        capture_output=True,
        text=True,
        env=env,
        cwd=pythonpath,
    )
    if done.returncode != 0:
        raise SystemExit(f"a session failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="HEAD", help="the commit whose check() is 'before' (default HEAD)")
    parser.add_argument("--assignment", default=grading(["sample_next"]).name)
    parser.add_argument("--repeats", type=int, default=4, help="checks after the first, per session")
    parser.add_argument("--rounds", type=int, default=2, help="sessions of each kind, alternating")
    parser.add_argument("--pause", type=float, default=2.0, help="seconds between a session's checks")
    args = parser.parse_args()
    kinds = {"before": [], "after": [], "after, no sandbox": []}
    with tempfile.TemporaryDirectory() as folder:
        before = old_tree(args.before, Path(folder))
        print(
            f"{args.assignment}, solution notebook, {args.repeats} repeated checks per session, {args.pause:g} s apart;"
        )
        print(f"2-core machine shared with other engineers' jobs; load average at start {load()}")
        for round_ in range(args.rounds):
            for kind, runs in kinds.items():
                started_load = load()
                if kind == "before":
                    result = session(before, args)
                else:
                    result = session(ROOT, args, str(WITHOUT_SANDBOX) if kind == "after, no sandbox" else "")
                result["load"] = started_load
                runs.append(result)
                print(
                    f"  round {round_ + 1} {kind:18} load {started_load:>4}: "
                    + " ".join(f"{t:.2f}" for t in result["times"])
                )
    print()
    print("| check() | first check | repeated check, median | repeated, max | scores |")
    print("|---|---|---|---|---|")
    for kind, runs in kinds.items():
        first = statistics.median(r["times"][0] for r in runs)
        repeated = [t for r in runs for t in r["times"][1:]]
        scores = sorted({s for r in runs for s in r["scores"]}, key=str)
        print(
            f"| {kind} | {first:.2f} s | **{statistics.median(repeated):.2f} s** | {max(repeated):.2f} s | {scores} |"
        )


if __name__ == "__main__":
    main()
