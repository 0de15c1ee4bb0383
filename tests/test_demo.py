"""`make demo` at reduced scale: every step of course.demo on real WikiText-2, with a short training run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from course.kit import ROOT


@pytest.mark.slow
def test_demo_runs_every_step(tmp_path, wikitext2_dir, course_cache_dir):
    out = tmp_path / "runs"
    env = dict(os.environ, COURSE_CACHE_DIR=str(course_cache_dir))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "course.demo",
            "--out",
            str(out),
            "--data-dir",
            str(wikitext2_dir),
            "--max-steps",
            "30",
            "--assignments",
            "02_sampling",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        env=env,
    )
    text = run.stdout
    assert run.returncode == 0, text[-3000:] + run.stderr[-3000:]

    assert "1. Prepare WikiText-2" in text and "2. Train the tiny model" in text
    assert (out / "tiny" / "model.safetensors").is_file()
    # the three continuations, side by side under their headers
    assert "3. One prompt, three ways to choose the next token" in text
    header = next(line for line in text.splitlines() if line.startswith("greedy "))
    assert "top-p 0.9" in header and "top-p 0.9 + penalties 1.2" in header
    assert "4. Build the student notebooks from the solutions" in text and "$ course build" in text
    # both grading reports, and their results files: the solution at full marks, the blank at 0
    assert "5. Grade the solution solutions/02_sampling.ipynb" in text
    assert "5. Grade the blank assignment assignments/02_sampling.ipynb" in text
    solution = json.loads((out / "demo-results" / "solution-02_sampling.json").read_text())
    blank = json.loads((out / "demo-results" / "assignment-02_sampling.json").read_text())
    full = sum(t["max_score"] for t in solution["tests"])
    assert full > 0 and solution["score"] == full
    assert blank["score"] == 0 and len(blank["tests"]) == len(solution["tests"])
    assert text.count(f"Score: {full}/{full}") == 1 and text.count(f"Score: 0/{full}") == 1
    assert "Done in" in text and "next: course generate" in text
