"""The lecture notebooks: committed without outputs, run top to bottom on the tiny checkpoint, export to slides."""

from __future__ import annotations

import os

import nbformat
import pytest

from course import lectures
from course.kit import ROOT

LECTURES = sorted((ROOT / "lectures").glob("*.ipynb"))


def test_there_are_lectures():
    names = [path.name for path in LECTURES]
    assert names == ["01_sampling.ipynb", "02_kv_cache.ipynb", "03_inside_the_model.ipynb"]


@pytest.mark.parametrize("path", LECTURES, ids=lambda p: p.name)
def test_outputs_are_stripped(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i} has outputs: clear them before committing"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"


def test_without_a_checkpoint_the_lecture_says_how_to_make_one(tmp_path, monkeypatch):
    monkeypatch.delenv("COURSE_CHECKPOINT", raising=False)
    monkeypatch.setattr(lectures, "ROOT", tmp_path)
    with pytest.raises(lectures.LectureStop) as stop:
        lectures.find_checkpoints()
    message = "\n".join(stop.value._render_traceback_())
    assert "course train --preset tiny --out runs/tiny" in message
    monkeypatch.setenv("COURSE_CHECKPOINT", str(tmp_path / "nowhere"))
    with pytest.raises(lectures.LectureStop, match="not a checkpoint folder"):
        lectures.find_checkpoints()


def test_checkpoints_are_preferred_largest_first(tmp_path, monkeypatch):
    monkeypatch.delenv("COURSE_CHECKPOINT", raising=False)
    monkeypatch.setattr(lectures, "ROOT", tmp_path)
    for name in ("tiny", "laptop", "course"):
        folder = tmp_path / "runs" / name
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        (folder / "model.safetensors").write_bytes(b"")
    assert list(lectures.find_checkpoints()) == ["course", "laptop", "tiny"]
    monkeypatch.setenv("COURSE_CHECKPOINT", str(tmp_path / "runs" / "tiny"))
    assert list(lectures.find_checkpoints()) == ["env", "course", "laptop"]


def test_repeated_ngram_fraction():
    assert lectures.repeated_ngram_fraction([1, 2, 3, 4, 5, 6]) == 0
    assert lectures.repeated_ngram_fraction([1, 2] * 10, n=2) == pytest.approx(17 / 19)


@pytest.mark.slow
@pytest.mark.parametrize("path", LECTURES, ids=lambda p: p.name)
def test_lecture_runs_and_exports_to_slides(path, tiny_checkpoint, wikitext2_dir, monkeypatch):
    from nbclient import NotebookClient
    from nbconvert import SlidesExporter

    monkeypatch.setenv("COURSE_CHECKPOINT", str(tiny_checkpoint))
    monkeypatch.setenv("COURSE_DATA_DIR", str(wikitext2_dir))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # On a shared 2-core machine, torch's thread pool spinning against other processes costs far more than it gains.
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error

    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    figures = [out for out in outputs if "image/png" in out.get("data", {})]
    assert figures, f"{path.name} drew no figure"

    body, _ = SlidesExporter().from_notebook_node(nb)
    assert "reveal" in body.lower() and len(body) > 10_000
