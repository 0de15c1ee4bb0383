"""The blank notebooks as a student meets them: Run All reaches the end, every demo that calls a stub says so in one
line, the self-check cells show the table and one line, and every command the notebooks show works from the folder
they name.

The demo helper (`grader.demo`) and the self-check's return value (`grader.selfcheck.CheckResults`) are tested fast,
in-process; executing the notebooks and running the commands is slow (a tiny checkpoint is trained once per session).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course.kit import ROOT
from grader import demo
from grader.selfcheck import CheckResults

ASSIGNMENTS = ROOT / "assignments"
NOTEBOOKS = sorted(path.name for path in ASSIGNMENTS.glob("*.ipynb"))
TRAIN_STEPS = 20  # the training notebook's COURSE_TRAIN_STEPS: enough to save a checkpoint, a few seconds on a CPU
STUB_SAYS = "is not implemented yet: write it in its cell above, then run this cell again."
FOLDERS = {"kit's folder": Path("."), "this notebook's folder": Path("assignments")}  # relative to the kit
# Shown in the training notebook for a GPU (the course preset) or WikiText-103, which a test on a CPU, offline, cannot run.
NEEDS_A_GPU_OR_WIKITEXT_103 = ("--preset course", "wikitext-103", "torchrun ")
SHORTER = {
    "generate": ["--max-new-tokens", "5"],
    "eval": ["--split", "valid"],
    "bakeoff": ["--samples", "2", "--length", "6"],
}  # added to the command, for time


def session_code(source: str) -> dict:
    """The namespace of `source` run as a notebook's cell runs: in `__main__`."""
    namespace = {"__name__": "__main__"}
    exec(compile(source, "<cell>", "exec"), namespace)
    return namespace


# ---------------------------------------------------------------- demo and CheckResults (fast)


def test_demo_names_the_stub_that_raised_and_goes_on(capsys):
    cell = session_code(
        "def greedy(logits):\n    raise NotImplementedError('use argmax')\n\n"
        "def pipeline(logits):\n    return greedy(logits) + 1\n\n"
        "class KVCache:\n    def __init__(self):\n        raise NotImplementedError('start empty')\n"
    )
    with demo():
        cell["pipeline"](0)  # the stub is named, not the function that called it
    with demo():
        cell["KVCache"]()
    assert capsys.readouterr().out.splitlines() == [f"`greedy` {STUB_SAYS}", f"`KVCache.__init__` {STUB_SAYS}"]


def test_demo_lets_every_other_error_through():
    cell = session_code("def top_k_filter(logits, k):\n    return logits[k]\n")
    with pytest.raises(IndexError), demo():  # a student's bug keeps its traceback
        cell["top_k_filter"]([1.0], 3)
    library = {"__name__": "somewhere.in.a.library"}
    exec("def not_there():\n    raise NotImplementedError('not on this device')\n", library)
    with pytest.raises(NotImplementedError), demo():  # only a stub of the notebook is a stub
        library["not_there"]()
    with pytest.raises(NotImplementedError), demo():  # raised by the cell itself, not by a function
        session_code("raise NotImplementedError")


def test_demo_closes_the_figure_a_stub_left_half_drawn(capsys):
    pyplot = pytest.importorskip("matplotlib.pyplot")
    cell = session_code("def apply_temperature(logits, t):\n    raise NotImplementedError\n")
    kept = pyplot.figure()
    with demo():
        pyplot.subplots(1, 2)
        cell["apply_temperature"]([1.0], 0.5)
    assert pyplot.get_fignums() == [kept.number]
    pyplot.close(kept)


def test_check_results_show_as_one_line_and_keep_the_results():
    results = CheckResults("07_example", {"score": 12.0, "max_score": 53.0, "tests": [{"name": "t"}] * 20})
    assert repr(results) == "07_example: 12/53 visible points"
    assert results["score"] == 12 and len(results["tests"]) == 20
    from IPython.lib.pretty import pretty  # what a notebook cell shows for its last expression

    assert pretty(results) == "07_example: 12/53 visible points"


# ---------------------------------------------------------------- the notebooks, executed (slow)


def _outputs(cell) -> list:
    return cell.get("outputs", []) if cell.cell_type == "code" else []


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_blank_notebook_runs_top_to_bottom(
    name, tiny_checkpoint, wikitext2_dir, course_cache_dir, tmp_path, monkeypatch
):
    """Run All in assignments/, as Jupyter runs it: no error, each stub met named in one line, tables shown."""
    from nbclient import NotebookClient

    monkeypatch.setenv("COURSE_CHECKPOINT", str(tiny_checkpoint))  # 02-04 show generated text
    monkeypatch.setenv("COURSE_DATA_DIR", str(wikitext2_dir))  # 01 prepares the data (cached) and trains
    monkeypatch.setenv("COURSE_CACHE_DIR", str(course_cache_dir))
    monkeypatch.setenv("COURSE_TRAIN_STEPS", str(TRAIN_STEPS))
    monkeypatch.setenv("COURSE_RUNS_DIR", str(tmp_path / "runs"))  # 01's checkpoint, kept out of assignments/
    notebook = nbformat.read(ASSIGNMENTS / name, as_version=4)
    NotebookClient(notebook, timeout=600, resources={"metadata": {"path": str(ASSIGNMENTS)}}).execute()

    outputs = [output for cell in notebook.cells for output in _outputs(cell)]
    assert not [o for o in outputs if o.output_type == "error"]  # nbclient raises first; this says it again
    stubs = [cell for cell in notebook.cells if cell.cell_type == "code" and "raise NotImplementedError" in cell.source]
    said = "".join(o.get("text", "") for o in outputs)
    assert len(stubs) > 0 and STUB_SAYS in said
    assert "Traceback" not in said
    checks = [cell for cell in notebook.cells if cell.cell_type == "code" and re.search(r"\bcheck\(", cell.source)]
    assert checks, f"{name} has no self-check cell"
    for cell in checks:
        kinds = [(o.output_type, sorted(o.get("data", {}))) for o in cell.outputs]
        assert kinds == [("display_data", ["text/html", "text/plain"]), ("execute_result", ["text/plain"])], kinds
        assert "<table>" in cell.outputs[0].data["text/html"]
        summary = cell.outputs[1].data["text/plain"]
        assert re.fullmatch(rf"{name[:-6]}: 0/\d+ visible points", summary), summary


def _shown_commands(notebook) -> list[tuple[Path, str]]:
    """(folder relative to the kit, command) for every command in the markdown: an indented line that starts
    with `course` or `torchrun`, run from the folder that the cell's text last named before it."""
    commands = []
    for cell in notebook.cells:
        if cell.cell_type != "markdown":
            continue
        text_before = ""  # the cell's prose so far, its lines joined: a phrase may be cut by a line break
        for line in cell.source.splitlines():
            if not line.startswith("    "):
                text_before += " " + line.lower()
            elif line.split()[0] in ("course", "torchrun"):
                named = [
                    (text_before.rfind(phrase), folder) for phrase, folder in FOLDERS.items() if phrase in text_before
                ]
                assert named, f"no folder named before `{line.strip()}`"
                commands.append((max(named)[1], line.strip()))
    return commands


@pytest.mark.slow
def test_every_command_shown_works_from_the_folder_it_names(tiny_checkpoint, wikitext2_dir, course_cache_dir, tmp_path):
    """The kit as a student has it: finished notebooks in assignments/, and runs/tiny where `course train`
    (the kit's folder) or the training notebook (assignments/) saved it. Each command runs there as written, with the
    options of SHORTER added."""
    kit = tmp_path / "kit"
    for runs in (kit / "runs", kit / "assignments" / "runs"):
        shutil.copytree(tiny_checkpoint, runs / "tiny")
    for name in NOTEBOOKS:
        shutil.copy(ROOT / "solutions" / name, kit / "assignments" / name)
    env = {key: value for key, value in os.environ.items() if key != "COURSE_CHECKPOINT"}
    env |= {"COURSE_DATA_DIR": str(wikitext2_dir), "COURSE_CACHE_DIR": str(course_cache_dir)}

    ran = []
    for name in NOTEBOOKS:
        for folder, command in _shown_commands(nbformat.read(ASSIGNMENTS / name, as_version=4)):
            if any(needs in command for needs in NEEDS_A_GPU_OR_WIKITEXT_103):
                continue
            program, *args = shlex.split(command, comments=True)
            assert program == "course", command
            args += SHORTER.get(args[0], [])
            done = subprocess.run(
                [sys.executable, "-m", "course.cli", *args],
                cwd=kit / folder,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert done.returncode == 0, f"{name}: from {folder}/: {command}\n{done.stderr[-2000:]}"
            if args[0] == "generate":  # the prompt, then text generated after it
                prompt = args[args.index("--prompt") + 1]
                assert done.stdout.startswith(prompt) and done.stdout.strip() != prompt, done.stdout
            ran.append(command)
    generated = [command for command in ran if command.startswith("course generate")]
    assert len(generated) == 5 and any(command.startswith("course eval") for command in ran), ran
