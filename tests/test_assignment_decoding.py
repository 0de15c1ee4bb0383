"""05_decoding: the solution's functions in-process on the notebook's worked examples (fast), the stubs of the
student notebook, the notebook's table model against the grader's, and the notebook executed top to bottom (slow).
The grading of the solution, the blank notebook, the mutants and another style is in tests/test_mutants.py
and tests/test_styles.py (one batch per assignment, tests/mutants/harness.py)."""

from __future__ import annotations

import math

import nbformat
import pytest
import torch

from course.kit import ROOT
from course.notebook import load_notebook
from grader.testing import helper_module

SOLUTION = ROOT / "solutions" / "05_decoding.ipynb"
ASSIGNMENT = ROOT / "assignments" / "05_decoding.ipynb"
SUPPORT = ROOT / "grader" / "assignments" / "05_decoding" / "test_visible.py"
GRADED = ["beam_search", "distinct_n", "zipf_coefficient", "repetition", "perplexity"]


@pytest.fixture(scope="module")
def sol():
    return load_notebook(SOLUTION).namespace


def test_assignment_stubs_raise_not_implemented():
    ns = load_notebook(ASSIGNMENT).namespace
    table = ns["TableModel"]()
    calls = {
        "beam_search": (table, torch.tensor([[0]]), 2, 3),
        "distinct_n": ([[1, 2]], 1),
        "zipf_coefficient": ([[1, 1, 2]],),
        "repetition": ([[1, 2]],),
        "perplexity": (table, [[0]], [[1]]),
    }
    for name in GRADED:
        with pytest.raises(NotImplementedError):
            ns[name](*calls[name])


def test_notebook_table_is_the_graders(sol):
    """The worked example the notebook prints is the model the visible tests grade with."""
    support = helper_module(str(SUPPORT), "decoding_support.py")
    reference = helper_module(str(SUPPORT.with_name("decoding_reference.py")), "decoding_reference.py")
    notebook_model, grader_model = sol["TableModel"](), support.worked_example()
    for prefix in [(0,), (0, 0), (0, 1), (0, 2), (0, 1, 0), (0, 2, 2), (0, 0, 1), (0, 1, 0, 2)]:
        ids = torch.tensor([prefix])
        ours = torch.log_softmax(notebook_model(ids)[0, -1].double(), -1)
        theirs = reference.log_probs(grader_model, prefix)
        assert torch.allclose(ours, theirs, atol=1e-6), prefix


def test_beam_search_worked_example_and_eos(sol):
    table, prompt = sol["TableModel"](), torch.tensor([[0]])
    assert [sol["beam_search"](table, prompt, w, 3)[0, 1:].tolist() for w in (1, 2, 3)] == [
        [0, 0, 0],
        [1, 0, 1],
        [2, 2, 2],
    ]
    # token C (2) as eos: C alone (0.20) beats every finished or full sequence that does not start with it
    assert sol["beam_search"](table, prompt, 27, 3, eos_id=2).tolist() == [[0, 2]]
    assert sol["beam_search"](table, prompt, 2, 0).tolist() == [[0]]
    with pytest.raises(ValueError):
        sol["beam_search"](table, prompt, 0, 3)


def test_metrics_worked_examples(sol):
    assert sol["distinct_n"]([[1, 2, 3, 1, 2], [1, 2, 4]], 2) == pytest.approx(4 / 6)
    assert sol["distinct_n"]([[1]], 2) == 0.0
    assert sol["zipf_coefficient"]([[1] * 12 + [2] * 6, [3] * 4 + [4] * 3]) == pytest.approx(1.0)
    assert sol["zipf_coefficient"]([[5] * 8 + [6] * 2]) == pytest.approx(2.0)
    worked = [[7, 1, 2, 3, 1, 2, 3], [1, 2, 1, 2, 1, 2], [7] + [4] * 6, [9] + [4] * 60, [1, 2, 3, 4, 5]]
    assert [sol["repetition"]([w]) for w in worked] == [1.0, 0.0, 0.0, 1.0, 0.0]
    expected = (0.45 * 0.30 * 0.20) ** (-1 / 3)
    assert sol["perplexity"](sol["TableModel"](), [[0], [0]], [[0, 1], [2]]) == pytest.approx(expected, rel=1e-5)
    assert math.isclose(expected, 3.3333, rel_tol=1e-4)  # the number the notebook's markdown states


@pytest.mark.slow
def test_solution_notebook_runs_top_to_bottom_without_checkpoint(monkeypatch, tmp_path):
    from nbclient import NotebookClient

    monkeypatch.delenv("COURSE_CHECKPOINT", raising=False)
    copy = tmp_path / SOLUTION.name  # an empty folder: no runs/ checkpoint is found
    copy.write_bytes(SOLUTION.read_bytes())
    notebook = nbformat.read(copy, as_version=4)
    NotebookClient(notebook, timeout=600, resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "No trained checkpoint found: train one first" in text
    assert "is not implemented yet" not in text  # every function is written: no demo was skipped
    assert "beam width 3: C C C" in text and "repetition of the worked examples: 0.333" in text
