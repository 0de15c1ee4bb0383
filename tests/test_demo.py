"""`make demo` at reduced scale: every step of course.demo on real WikiText-2, with a short training run, its output
read as a newcomer reads it when it is not on a terminal (CI, a log file)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from course import demo
from course.assignments import names
from course.kit import ROOT

HERE = names()[0]  # the one assignment this test grades
MOST_LINES = 150  # of the whole demo, every assignment graded
LONGEST_SILENCE = 30  # seconds between two lines without a terminal


def run_demo(args, env) -> tuple[list[str], list[float], int]:
    """The demo's lines, the time each arrived (seconds from the start) and its exit code, stdout and stderr piped."""
    child = subprocess.Popen(
        [sys.executable, "-m", "course.demo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env=env,
    )
    started, lines, arrivals = time.monotonic(), [], []
    for line in child.stdout:
        lines.append(line.rstrip("\n"))
        arrivals.append(time.monotonic() - started)
    return lines, arrivals, child.wait(timeout=900)


@pytest.mark.slow
def test_demo_runs_every_step_briefly_and_never_goes_quiet(tmp_path, wikitext2_dir, course_cache_dir):
    out = tmp_path / "runs"
    env = dict(os.environ, COURSE_CACHE_DIR=str(course_cache_dir))
    args = ["--out", str(out), "--data-dir", str(wikitext2_dir), "--max-steps", "30", "--assignments", HERE]
    lines, arrivals, code = run_demo(args, env)
    text = "\n".join(lines)
    assert code == 0, text[-3000:]

    gaps = [later - earlier for earlier, later in zip([0.0, *arrivals], arrivals)]
    assert max(gaps) <= LONGEST_SILENCE, f"{max(gaps):.0f} s without a line"
    assert "1. Prepare WikiText-2" in text and "2. Train the tiny model" in text
    assert (out / "tiny" / "model.safetensors").is_file()
    assert sum(line.startswith("  train ") for line in lines) == 1  # the corpus summary, once
    assert text.count("already prepared") <= 1  # said by prepare (when the cache exists), never again by train
    assert "3. One prompt, three ways to choose the next token" in text
    header = next(line for line in lines if line.startswith("greedy "))
    assert "top-p 0.9" in header and "top-p 0.9 + penalties 1.2" in header
    assert demo.CONTINUATIONS_SAY in text  # greedy's loop and <unk> explained
    assert "4. Build the student notebooks from the solutions" in text and "$ course build" in text

    # each notebook graded in one line, its whole report in a file beside its results.json
    solution = json.loads((out / "demo-results" / f"solution-{HERE}.json").read_text())
    blank = json.loads((out / "demo-results" / f"assignment-{HERE}.json").read_text())
    full = sum(t["max_score"] for t in solution["tests"])
    assert full > 0 and solution["score"] == full
    assert blank["score"] == 0 and len(blank["tests"]) == len(solution["tests"])
    assert f"  solutions/{HERE}.ipynb: {full:g}/{full:g}" in lines
    assert f"  assignments/{HERE}.ipynb: 0/{full:g}" in lines
    assert "Score:" in (out / "demo-results" / f"solution-{HERE}.txt").read_text()
    assert "Score:" not in text

    next_steps = demo.NEXT_STEPS.format(checkpoint=(out / "tiny"), first=names()[0], example=HERE).splitlines()
    assert next_steps[0] in text and lines[-1] == next_steps[-1]
    assert all(role in demo.NEXT_STEPS for role in ("students:", "instructors:", "assistants:"))
    # four lines an assignment (two commands, two scores): with all of them graded the demo stays within MOST_LINES
    per_assignment = sum(1 for line in lines if f"{HERE}." in line and ("$ grader grade" in line or ": " in line))
    assert per_assignment == 4
    assert len(lines) + per_assignment * (len(names()) - 1) < MOST_LINES


def test_the_demo_grades_every_assignment():
    assert demo.make_parser().parse_args([]).assignments == names()
