"""01_training: the solution's graded functions (fast, in-process), the notebooks as a whole (slow: the
solution executed top to bottom with a short training run; the solution and the blank as `grader batch` graded
them for the mutation suite, tests/mutants/harness.py)."""

from __future__ import annotations

import math

import nbformat
import pytest
import torch
import torch.nn.functional as F

from course.kit import ROOT
from course.notebook import load_notebook
from mutants.harness import graded

SOLUTION = ROOT / "solutions" / "01_training.ipynb"
ASSIGNMENT = ROOT / "assignments" / "01_training.ipynb"
GRADED = ["mean_nll", "perplexity", "perplexity_per_word"]
TRAIN_STEPS = 20  # two validations (every 10 steps), as in tests/test_notebooks_run_all.py


@pytest.fixture(scope="module")
def sol():
    return load_notebook(SOLUTION).namespace


def test_solution_defines_every_graded_function(sol):
    assert all(callable(sol.get(name)) for name in GRADED)


def test_assignment_stubs_raise_not_implemented():
    ns = load_notebook(ASSIGNMENT).namespace
    calls = {
        "mean_nll": (torch.zeros(2, 3), torch.zeros(2, dtype=torch.int64)),
        "perplexity": (1.0,),
        "perplexity_per_word": (1.0, 2, 1),
    }
    for name, args in calls.items():
        with pytest.raises(NotImplementedError):
            ns[name](*args)
    text = ASSIGNMENT.read_text()
    assert "BEGIN SOLUTION" not in text and "log_probs.gather" not in text


def test_solution_functions(sol):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 11, generator=g)
    targets = torch.randint(0, 11, (2, 3), generator=g)
    before = logits.clone()
    expected = F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1)).item()
    assert math.isclose(sol["mean_nll"](logits, targets), expected, rel_tol=1e-6)
    assert torch.equal(logits, before)
    assert math.isclose(sol["mean_nll"](torch.tensor([0.0, -200.0]), torch.tensor(1)), 200.0, rel_tol=1e-6)
    assert math.isclose(sol["perplexity"](torch.tensor(math.log(100))), 100.0, rel_tol=1e-6)
    assert math.isclose(sol["perplexity_per_word"](math.log(100), 4, 2), 10_000.0, rel_tol=1e-6)
    for bad in (
        lambda: sol["perplexity"](-1.0),
        lambda: sol["perplexity"](float("nan")),
        lambda: sol["perplexity_per_word"](1.0, 0, 5),
        lambda: sol["mean_nll"](torch.zeros(2, 3, 5), torch.zeros(3, 2)),
    ):
        with pytest.raises(ValueError):
            bad()


# ---------------------------------------------------------------- the notebooks (slow)


def _stream_text(notebook) -> str:
    return "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []))


@pytest.mark.slow
def test_solution_notebook_runs_top_to_bottom(tmp_path, monkeypatch, wikitext2_dir, course_cache_dir):
    from nbclient import NotebookClient

    runs = tmp_path / "runs"
    monkeypatch.setenv("COURSE_DATA_DIR", str(wikitext2_dir))
    monkeypatch.setenv("COURSE_CACHE_DIR", str(course_cache_dir))
    monkeypatch.setenv("COURSE_TRAIN_STEPS", str(TRAIN_STEPS))
    monkeypatch.setenv("COURSE_RUNS_DIR", str(runs))
    notebook = nbformat.read(SOLUTION, as_version=4)
    NotebookClient(notebook, timeout=600, resources={"metadata": {"path": str(tmp_path)}}).execute()

    text = _stream_text(notebook)
    assert "is not implemented yet" not in text  # every graded function is there: no demo was skipped
    assert f"saved {runs / 'tiny'} (step {TRAIN_STEPS}" in text
    assert "same logits as the model in memory: True" in text
    assert "--- trained, greedy:" in text and "--- trained, T = 0.8:" in text
    assert "uniform over 24,576 tokens: 10.1095" in text
    for name in ("model.safetensors", "config.json", "tokenizer.json", "train_state.pt"):
        assert (runs / "tiny" / name).is_file(), name
    assert not (tmp_path / "data").exists(), "the data cache must go to COURSE_CACHE_DIR"
    # the live figure: one image, redrawn in place after every validation
    images = [
        o
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    assert len(images) == 1
    # per-token and per-word perplexity from the notebook's functions agree with course.train's
    final = next(line for line in text.splitlines() if line.strip().startswith("per token:"))
    ours, theirs = final.split("(course.train:")
    assert float(ours.split(":")[1]) == pytest.approx(float(theirs.split(";")[0]), rel=1e-3)
    # the visible tests, run by the notebook's own check cell, all pass
    check = notebook.cells[-1].outputs
    assert any(o.get("data", {}).get("text/plain") == "01_training: 12/12 visible points" for o in check), check


@pytest.mark.slow
def test_solution_scores_full_marks():
    results = graded("01_training")["solution"].results  # the mutation suite's grading of the solution
    failed = [f"{t['name']}: {t['output']}" for t in results["tests"] if t["score"] < t["max_score"]]
    assert not failed
    assert results["score"] == sum(t["max_score"] for t in results["tests"]) == 24
    assert {t["visibility"] for t in results["tests"]} == {"visible", "after_published"}


@pytest.mark.slow
def test_blank_assignment_scores_zero():
    results = graded("01_training")["blank"].results  # the mutation suite's grading of the blank notebook
    assert results["score"] == 0 and len(results["tests"]) == 23
    assert all("not implemented yet" in t["output"] for t in results["tests"])
