"""The tiny preset's training on an idle machine and beside another CPU-bound process, side by side.

    python bench/busy_cpu.py [--steps 200] [--rounds 2]   # COURSE_DATA_DIR: a local WikiText-2

Two ways to choose torch's threads: the default (course.device.CpuThreads: as many as the cores the machine's other
work leaves free, looked at again every few seconds) and `--cpu-threads 2` (the old default: both cores, whatever
else runs). Each is timed idle and beside one busy-looping process, in alternating rounds; the training time comes
from `course train`'s own "N s of training" line. The claim it checks: beside another CPU-bound process, training is
no slower than twice its idle time.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BUSY = "while True:\n    pass\n"


def train_seconds(steps: int, extra: list[str], cache: Path, busy: bool) -> float:
    env = dict(os.environ, COURSE_CACHE_DIR=str(cache))
    spinner = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
    try:
        with tempfile.TemporaryDirectory(prefix="busy-cpu-") as out:
            command = [sys.executable, "-m", "course.cli", "train", "--preset", "tiny", "--max-steps", str(steps)]
            command += ["--eval-every", str(steps), "--out", str(Path(out) / "tiny"), *extra]
            done = subprocess.run(command, env=env, capture_output=True, text=True)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    if done.returncode != 0:
        raise SystemExit(f"course train failed: {done.stderr.strip()[-2000:]}")
    return float(re.search(r"\(step \d+, (\d+(?:\.\d+)?) s of training\)", done.stdout + done.stderr).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    arms = {"threads follow the machine (default)": [], "--cpu-threads 2 (fixed)": ["--cpu-threads", "2"]}
    with tempfile.TemporaryDirectory(prefix="busy-cpu-cache-") as cache:
        subprocess.run([sys.executable, "-m", "course.cli", "prepare"], env=dict(os.environ, COURSE_CACHE_DIR=cache),
                       check=True, capture_output=True)  # fmt: skip
        times: dict[tuple[str, bool], list[float]] = {}
        for round_number in range(1, args.rounds + 1):
            for name, extra in arms.items():
                for busy in (False, True):
                    seconds = train_seconds(args.steps, extra, Path(cache), busy)
                    times.setdefault((name, busy), []).append(seconds)
                    place = "beside a busy process" if busy else "idle"
                    print(f"round {round_number}: {name}, {place}: {seconds:.0f} s for {args.steps} steps", flush=True)
    print("\n| threads | idle (median) | beside a busy process (median) | busy / idle |\n|---|---:|---:|---:|")
    for name in arms:
        idle, busy = statistics.median(times[name, False]), statistics.median(times[name, True])
        print(f"| {name} | {idle:.0f} s | {busy:.0f} s | {busy / idle:.2f}x |")


if __name__ == "__main__":
    main()
