"""What each assignment needs in Gradescope's default container (768 MB, half a CPU): one submission graded the way
run_autograder grades it (a new `python -m grader.gradescope NAME`, so a new zygote), the solution notebook, each in a
fresh cgroup of that size; prints the wall time, the cgroup's peak memory and the score. Root, cgroup v1 or v2.

    sudo .venv/bin/python bench/gradescope_container.py [--assignments NN_name ...]   (default: every assignment)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_gradescope_container import ASSIGNMENTS, ContainerCgroups, autograder_root  # noqa: E402


def peak_memory(cgroups: ContainerCgroups) -> int:
    memory = cgroups.folders[0]
    for name in ("memory.max_usage_in_bytes", "memory.peak"):  # v1, v2
        if (memory / name).exists():
            return int((memory / name).read_text())
    raise OSError("the cgroup reports no peak memory")


def grade_in_container(name: str, folder: Path) -> dict:
    root = autograder_root(folder, name, nbformat.read(ROOT / "solutions" / f"{name}.ipynb", 4), name)
    cgroups = ContainerCgroups(f"grader-bench-{os.getpid()}-{name}")
    try:
        env = dict(os.environ, PYTHONPATH=str(root / "source"), GRADER_AUTOGRADER_ROOT=str(root))
        started = time.perf_counter()
        done = subprocess.run(
            cgroups.command([sys.executable, "-m", "grader.gradescope", name]), capture_output=True, text=True, env=env
        )
        wall = time.perf_counter() - started
        peak = peak_memory(cgroups)
    finally:
        cgroups.remove()
    if done.returncode != 0:
        raise SystemExit(f"{name}: {done.stderr.strip().splitlines()[-1:]}")
    results = json.loads((root / "results" / "results.json").read_text())
    return {"wall": wall, "peak": peak, "score": results["score"], "max": sum(t["max_score"] for t in results["tests"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assignments", nargs="+", default=list(ASSIGNMENTS))
    args = parser.parse_args()
    print(f"load average at start {os.getloadavg()[0]:.1f} (2-core machine shared with other engineers' jobs)")
    print("| assignment | wall, 768 MB and half a CPU | peak memory of the container | score |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.assignments:
            run = grade_in_container(name, Path(folder))
            print(f"| {name} | {run['wall']:.1f} s | {run['peak'] / 2**20:.0f} MB | {run['score']:g}/{run['max']:g} |")


if __name__ == "__main__":
    main()
