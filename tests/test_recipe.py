"""CONTRIBUTING.md's "Add an assignment", followed literally in a copy of the kit: its commands scaffold a throwaway
assignment, build it and grade its solution to full marks and its blank notebook to 0; then the release, the
Gradescope zip, the demo, a batch's answers and the docs pick it up, and nothing else was edited by hand."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from course.generated import BEGIN
from course.kit import ROOT

NUMBER, WORD, TITLE = 99, "recipe", "A throwaway assignment"
NAME = f"{NUMBER}_{WORD}"  # composed, so that in the copy no file outside the new assignment's own names it
RECIPE = re.compile(r"^## Add an assignment\n.*?^```\n(?P<commands>.*?)^```$", re.MULTILINE | re.DOTALL)
GENERATED_DOCUMENTS = ("README.md", "docs/assignments.md")


def recipe_commands() -> list[list[str]]:
    """The commands of the recipe's first code block, NN_name and "Title" replaced by the throwaway's."""
    block = RECIPE.search((ROOT / "CONTRIBUTING.md").read_text()).group("commands")
    lines = [line.split("#")[0].strip() for line in block.splitlines()]
    return [shlex.split(line.replace("NN_name", NAME).replace('"Title"', shlex.quote(TITLE))) for line in lines if line]


def test_the_recipe_is_the_four_commands_the_test_runs():
    assert [command[:2] for command in recipe_commands()] == [
        ["course", "new-assignment"],
        ["course", "build"],
        ["grader", "grade"],
        ["grader", "grade"],
    ]


def kit_copy(folder: Path) -> Path:
    """The kit's files (tracked, and new ones git does not ignore) in `folder`, committed to a repository of its own."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True
    )
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout: {listed.stderr.strip()}")
    for name in listed.stdout.splitlines():
        if (ROOT / name).is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, folder / name)
    for command in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "kit"],
    ):
        subprocess.run(["git", *command], cwd=folder, check=True, capture_output=True)
    return folder


def in_copy(kit: Path, *command: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`course ...`, `grader ...` or `python ...` as its user types it in the copy, with the copy's own packages."""
    program, *args = command
    module = {"course": ["-m", "course.cli"], "grader": ["-m", "grader.cli"], "python": []}[program]
    env = {**os.environ, "PYTHONPATH": str(kit)}
    return subprocess.run(
        [sys.executable, *module, *args], cwd=kit, env=env, capture_output=True, text=True, timeout=timeout
    )


def without_generated_sections(text: str) -> str:
    return re.sub(re.escape(BEGIN.format(name="X")).replace("X", "[a-z-]+") + r".*?<!-- END [a-z-]+ -->", "", text,
                  flags=re.DOTALL)  # fmt: skip


@pytest.mark.slow
def test_following_the_recipe_adds_an_assignment_and_touches_nothing_else(tmp_path):
    kit = kit_copy(tmp_path / "kit")
    scores = []
    for command in recipe_commands():
        done = in_copy(kit, *command)
        assert done.returncode == 0, f"{shlex.join(command)}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        scores += re.findall(r"^Score: (\S+)/(\S+)$", done.stdout, flags=re.MULTILINE)
    (solution_score, solution_max), (blank_score, blank_max) = scores
    assert solution_score == solution_max == blank_max and float(solution_max) > 0 and blank_score == "0"

    # what changed: the assignment's own files, the built notebook, and what `course build` writes
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=kit, capture_output=True,
                            text=True, check=True).stdout  # fmt: skip
    changed = sorted(line[3:] for line in status.splitlines())
    folder = f"grader/assignments/{NAME}/"
    own = [f"assignments/{NAME}.ipynb", f"solutions/{NAME}.ipynb"]
    assert [path for path in changed if not path.startswith(folder) and path not in own] == [
        "README.md",
        "assignments/.build.json",
        "docs/assignments.md",
    ]
    for document in GENERATED_DOCUMENTS:  # edited inside their generated sections only
        before = subprocess.run(["git", "show", f"HEAD:{document}"], cwd=kit, capture_output=True, text=True).stdout
        after = (kit / document).read_text()
        assert without_generated_sections(after) == without_generated_sections(before), document
        assert NAME in after and TITLE in after, document
    assert in_copy(kit, "course", "build", "--check").returncode == 0

    # the kit's own checks of an assignment, on this one: its manifest against its notebook, the common cells, the
    # names, the documents, and its mutant
    checks = in_copy(kit, "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_assignments.py",
                     "tests/test_build.py", "tests/test_mutants.py", "-k", "not slow and not enough_mutants")  # fmt: skip
    assert checks.returncode == 0, checks.stdout[-3000:]

    # the release, the Gradescope zip, the demo and a batch pick it up
    assert in_copy(kit, "course", "release", str(tmp_path / "release")).returncode == 0
    shipped = tmp_path / "release" / "grader" / "assignments" / NAME
    assert sorted(p.name for p in shipped.iterdir()) == ["assignment.toml", "test_visible.py"]
    assert (tmp_path / "release" / "assignments" / f"{NAME}.ipynb").is_file()
    assert f"`{NAME}.ipynb` ({TITLE})" in (tmp_path / "release" / "README.md").read_text()
    zipped = in_copy(kit, "grader", "gradescope", NAME, "-o", str(tmp_path / "autograder.zip"))
    assert zipped.returncode == 0 and "example-question (2 points)" in zipped.stdout, zipped.stdout
    with zipfile.ZipFile(tmp_path / "autograder.zip") as archive:
        assert f"{folder}test_hidden.py" in archive.namelist() and f"{folder}mutants.toml" not in archive.namelist()
    demo = in_copy(kit, "python", "-c", "from course import demo; print(demo.make_parser().parse_args([]).assignments)")
    assert NAME in json.loads(demo.stdout.replace("'", '"'))
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    shutil.copy(kit / "solutions" / f"{NAME}.ipynb", submissions / "ann.ipynb")
    assert in_copy(kit, "grader", "batch", str(submissions), "--assignment", NAME, "--quiet").returncode == 0
    with (submissions / "results" / "answers.csv").open(newline="") as answers:
        assert next(csv.reader(answers)) == ["student", "id", "example-question (2 points)"]
