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
FIXTURE = ROOT / "course" / "fixtures" / "next_token_logits.pt"
INF = float("-inf")
GRADED = ["greedy", "sample", "apply_temperature", "top_k_filter", "top_p_filter", "sample_next"]
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
            ns[name](torch.zeros(3), *([1] if name in ("apply_temperature", "top_k_filter", "top_p_filter") else []))


def test_filters_fast_checks(sol):
    x = torch.tensor([[5.0, 3.0, 3.0, 1.0], [0.0, INF, 2.0, 1.0]])
    before = x.clone()
    assert sol["top_k_filter"](x, 2).tolist() == [[5.0, 3.0, 3.0, INF], [INF, INF, 2.0, 1.0]]
    kept = torch.isfinite(sol["top_p_filter"](torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05])), 0.7))
    assert kept.tolist() == [True, True, False, False]
    assert torch.equal(sol["apply_temperature"](x, 0.5), x / 0.5)
    assert torch.equal(x, before), "inputs must not change"
    for bad in (
        lambda: sol["top_k_filter"](x, 0),
        lambda: sol["top_p_filter"](x, 0.0),
        lambda: sol["top_p_filter"](x, 1.01),
        lambda: sol["apply_temperature"](x, 0.0),
    ):
        with pytest.raises(ValueError):
            bad()


def test_sampling_fast_checks(sol):
    logits = torch.tensor([0.0, 2.0, INF]).expand(2, 3, 3)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = sol["sample_next"](logits, temperature=0.7, top_k=2, top_p=0.9, generator=g1)
    b = sol["sample_next"](logits, temperature=0.7, top_k=2, top_p=0.9, generator=g2)
    assert a.dtype == torch.int64 and a.shape == (2, 3) and torch.equal(a, b)
    assert (a != 2).all()
    assert sol["greedy"](logits.half()).tolist() == [[1, 1, 1], [1, 1, 1]]


def test_fixture_is_small_and_loadable():
    assert FIXTURE.stat().st_size < 1_000_000
    saved = torch.load(FIXTURE, weights_only=True)
    assert saved["names"] == ["peaked", "flat"]
    assert saved["logits"].shape == (2, len(saved["vocab"]))
    peaked, flat = torch.softmax(saved["logits"], -1).max(-1).values
    assert peaked > 5 * flat


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
    assert "run 01_training first" in text
    assert "next_token_logits.pt is missing" not in text
    assert "is not implemented yet" not in text  # every function is written: no demo was skipped


@pytest.mark.slow
def test_course_generate_with_solution_and_student_style(tiny_checkpoint, course_cli):
    from mutants.styles import STYLES

    student = Path(tiny_checkpoint).parent / "student_02.ipynb"
    nbformat.write(STYLES["02_sampling"]["loops-numpy-inverse-cdf"](), student)
    for sampler in (SOLUTION, student):
        shaping = ("--top-p", "0.9", "--temperature", "0.9")
        run = course_cli(
            "generate", str(tiny_checkpoint), *GAME_PROMPT, *shaping, "--sampler", str(sampler), timeout=300
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.startswith("The game was") and len(run.stdout.strip()) > len("The game was")
