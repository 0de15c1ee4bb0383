"""02_sampling: the solution's functions (fast, in-process), the notebook as a whole (slow: executed top to
bottom, graded, plugged into `course generate`)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import torch

from course.kit import ROOT
from course.notebook import load_notebook

SOLUTION = ROOT / "solutions" / "02_sampling.ipynb"
ASSIGNMENT = ROOT / "assignments" / "02_sampling.ipynb"
INF = float("-inf")
FILTERS = ["apply_temperature", "top_k_filter", "top_p_filter", "min_p_filter"]  # (logits, one parameter)
GRADED = ["greedy", "sample", *FILTERS, "sample_next"]
GAME_PROMPT = ("--prompt", "The game was", "--max-new-tokens", "12", "--seed", "0")  # for `course generate`


@pytest.fixture(scope="module")
def sol():
    loaded = load_notebook(SOLUTION)
    return loaded.namespace


def test_solution_defines_every_graded_function(sol):
    assert all(callable(sol.get(name)) for name in GRADED)


def test_assignment_stubs_raise_not_implemented():
    ns = load_notebook(ASSIGNMENT).namespace
    for name in GRADED:
        with pytest.raises(NotImplementedError):
            ns[name](torch.zeros(3), *([1] if name in FILTERS else []))


def test_filters_fast_checks(sol):
    x = torch.tensor([[5.0, 3.0, 3.0, 1.0], [0.0, INF, 2.0, 1.0]])
    before = x.clone()
    assert sol["top_k_filter"](x, 2).tolist() == [[5.0, 3.0, 3.0, INF], [INF, INF, 2.0, 1.0]]
    kept = torch.isfinite(sol["top_p_filter"](torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05])), 0.7))
    assert kept.tolist() == [True, True, False, False]
    assert torch.equal(sol["apply_temperature"](x, 0.5), x / 0.5)
    # probabilities [0.5, 0.3, 0.15, 0.05], min_p 0.25: the bar is 0.125
    kept = torch.isfinite(sol["min_p_filter"](torch.log(torch.tensor([0.15, 0.5, 0.05, 0.3])), 0.25))
    assert kept.tolist() == [True, True, False, True]
    assert torch.equal(sol["min_p_filter"](x, 0.0), x) and torch.equal(
        sol["min_p_filter"](x, 1.0).isfinite(), x == x.amax(-1, keepdim=True)
    )
    assert torch.equal(x, before), "inputs must not change"
    for bad in (
        lambda: sol["top_k_filter"](x, 0),
        lambda: sol["top_p_filter"](x, 0.0),
        lambda: sol["top_p_filter"](x, 1.01),
        lambda: sol["apply_temperature"](x, 0.0),
        lambda: sol["min_p_filter"](x, -0.01),
        lambda: sol["min_p_filter"](x, 1.01),
        lambda: sol["min_p_filter"](x, float("nan")),
    ):
        with pytest.raises(ValueError):
            bad()


def test_sampling_fast_checks(sol):
    logits = torch.tensor([0.0, 2.0, INF]).expand(2, 3, 3)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = sol["sample_next"](logits, temperature=0.7, top_k=2, top_p=0.9, min_p=0.1, generator=g1)
    b = sol["sample_next"](logits, temperature=0.7, top_k=2, top_p=0.9, min_p=0.1, generator=g2)
    assert a.dtype == torch.int64 and a.shape == (2, 3) and torch.equal(a, b)
    assert (a != 2).all()
    assert sol["greedy"](logits.half()).tolist() == [[1, 1, 1], [1, 1, 1]]


def test_fixture_is_small_and_loadable():
    """The distributions the notebook shows ship with the kit (course.fixtures) and stay small."""
    from course import fixtures

    assert fixtures.FIXTURE.stat().st_size < 1_000_000
    assert {"peaked", "flat"} <= set(fixtures.distributions())


def _execute(path: Path, env_checkpoint: str | None, monkeypatch) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    if env_checkpoint is None:
        monkeypatch.delenv("COURSE_CHECKPOINT", raising=False)
    else:
        monkeypatch.setenv("COURSE_CHECKPOINT", env_checkpoint)
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, resources={"metadata": {"path": str(path.parent)}}).execute()
    return notebook


def _stream_text(notebook) -> str:
    return "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []))


@pytest.mark.slow
def test_solution_notebook_runs_top_to_bottom_without_checkpoint(monkeypatch, tmp_path):
    # run from a copy in an empty folder so that no runs/ checkpoint is found
    copy = tmp_path / SOLUTION.name
    copy.write_bytes(SOLUTION.read_bytes())
    notebook = _execute(copy, None, monkeypatch)
    text = _stream_text(notebook)
    assert "No trained checkpoint found: train one first" in text
    assert "source: a model trained with the kit (" in text  # the shipped distributions, not a stand-in
    assert "is not implemented yet" not in text  # every function is written: no demo was skipped


@pytest.mark.slow
def test_course_generate_with_a_student_style(tiny_checkpoint, course_cli):
    """A correct notebook in another style than the solution's (the solution's own: the notebook's commands, run by
    tests/test_notebooks_run_all.py)."""
    from mutants.styles import STYLES

    student = Path(tiny_checkpoint).parent / "student_02.ipynb"
    nbformat.write(STYLES["02_sampling"]["loops-numpy-inverse-cdf"](), student)
    shaping = ("--top-p", "0.9", "--temperature", "0.9")
    run = course_cli("generate", str(tiny_checkpoint), *GAME_PROMPT, *shaping, "--sampler", str(student), timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("The game was") and len(run.stdout.strip()) > len("The game was")
