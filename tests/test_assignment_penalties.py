"""03_penalties: the solution's functions (fast, in-process: the lecture's worked example), the notebook
as a whole (slow: executed top to bottom). The solution plugged into `course generate` with both penalties: the
notebook's own commands, run by tests/test_notebooks_run_all.py."""

from __future__ import annotations

import nbformat
import pytest
import torch

from course.kit import ROOT
from course.notebook import load_notebook

SOLUTION = ROOT / "solutions" / "03_penalties.ipynb"
ASSIGNMENT = ROOT / "assignments" / "03_penalties.ipynb"
INF = float("-inf")
HISTORY = [0, 1, 0, 2, 0, 0]
SAMPLING_02 = ("greedy", "sample", "apply_temperature", "top_k_filter", "top_p_filter", "min_p_filter", "sample_next")


@pytest.fixture(scope="module")
def sol():
    return load_notebook(SOLUTION).namespace


def test_worked_example(sol):
    k = sol["penalty_scales"](HISTORY, 4, 1.1, 1.2)
    torch.testing.assert_close(k, torch.tensor([1.6, 1.3, 1.3, 1.0]), rtol=0, atol=1e-6)
    logits = torch.tensor([0.8, 0.9, 0.1, 0.4])
    out = sol["apply_penalties"](logits, HISTORY, 1.1, 1.2)
    torch.testing.assert_close(out, torch.tensor([0.5, 0.6923, 0.0769, 0.4]), rtol=0, atol=1e-4)
    torch.testing.assert_close(
        torch.softmax(out, -1), torch.tensor([0.2651, 0.3213, 0.1737, 0.2399]), rtol=0, atol=2e-4
    )
    torch.testing.assert_close(
        torch.softmax(logits, -1), torch.tensor([0.3056, 0.3378, 0.1518, 0.2049]), rtol=0, atol=2e-4
    )
    assert torch.equal(logits, torch.tensor([0.8, 0.9, 0.1, 0.4])), "the input must not change"


def test_shift_and_inf(sol):
    out = sol["apply_penalties"](torch.tensor([INF, -1.0, 1.0, -2.0]), [1, 2], 2.0)
    assert out[0].item() == INF and not torch.isnan(out).any()
    torch.testing.assert_close(out[1:], torch.tensor([0.5, 1.5, 0.0]))
    with pytest.raises(ValueError):
        sol["penalty_scales"]([0, 0], 2, 0.5)


def test_other_definitions(sol):
    logits = torch.tensor([[0.8, 0.9, 0.1, 0.4], [-1.0, 2.0, INF, 0.0]])
    history = torch.tensor([[0, 1, 0, 2, 0, 0], [0, 0, 1, 1, 1, 3]])
    ctrl = sol["repetition_penalty"](logits, history, 2.0)
    assert ctrl[0].tolist() == pytest.approx([0.4, 0.45, 0.05, 0.4])
    assert ctrl[1].tolist() == [-2.0, 1.0, INF, 0.0]  # negative multiplied, -inf and 0 stay
    additive = sol["additive_penalties"](logits, history, frequency_penalty=0.1, presence_penalty=0.2)
    torch.testing.assert_close(additive[0], torch.tensor([0.2, 0.6, -0.2, 0.4]))
    torch.testing.assert_close(additive[1], torch.tensor([-1.4, 1.5, INF, -0.3]))
    assert torch.equal(logits[0], torch.tensor([0.8, 0.9, 0.1, 0.4])), "the input must not change"
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError):
            sol["repetition_penalty"](logits, history, bad)


def test_pasted_02_functions_are_the_02_solution_and_students_get_none():
    def code_cells(path):
        return ["".join(c["source"]) for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]

    def without_markers(source):
        return "\n".join(line for line in source.splitlines() if "SOLUTION" not in line)

    pasted = without_markers(next(c for c in code_cells(SOLUTION) if "def sample_next(" in c))
    for name in SAMPLING_02:
        source = next(c for c in code_cells(ROOT / "solutions" / "02_sampling.ipynb") if c.startswith(f"def {name}("))
        source = source.split("\n\n\ndef ")[0]  # the function, not what its cell defines after it
        assert without_markers(source) in pasted, f"03's solution pastes a {name} unlike 02's solution: paste it again"
    # the student's notebook holds none of 02's answers: stubs, into which they paste their own
    student = load_notebook(ASSIGNMENT).namespace
    for name in SAMPLING_02:
        with pytest.raises(NotImplementedError, match=f"paste the body of your {name}"):
            student[name](
                torch.zeros(3),
                *([1] if name in ("apply_temperature", "top_k_filter", "top_p_filter", "min_p_filter") else []),
            )
    with pytest.raises(NotImplementedError):
        student["penalty_scales"]([0], 2)


@pytest.mark.slow
def test_solution_notebook_runs_top_to_bottom_without_checkpoint(monkeypatch, tmp_path):
    from nbclient import NotebookClient

    monkeypatch.delenv("COURSE_CHECKPOINT", raising=False)
    copy = tmp_path / SOLUTION.name
    copy.write_bytes(SOLUTION.read_bytes())
    notebook = nbformat.read(copy, as_version=4)
    NotebookClient(notebook, timeout=600, resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "No trained checkpoint found: train one first" in text
    assert "I do the leg press and then" in text  # the penalties break the toy model's loop
    assert "is not implemented yet" not in text  # every function is written: no demo was skipped
