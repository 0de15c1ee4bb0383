"""Gradescope: `grader gradescope NAME -o ZIP` builds the autograder zip; inside it, `run_autograder`
runs `python -m grader.gradescope NAME` from the zip's virtual environment, which grades the submitted notebook.

The zip holds setup.sh, run_autograder and the kit (course/, grader/ with this assignment's folder: its manifest,
visible and hidden tests and their helpers, not its mutants.toml, which grading has no use for; pyproject.toml,
README.md). Gradescope unzips it into /autograder/source, where
setup.sh creates a virtual environment, /autograder/venv, and installs into it the CPU build of torch,
the packages grading needs (GRADING_PACKAGES) and the kit without its other dependencies (and without its
tests: the package never installs grader/assignments/). Gradescope copies run_autograder to
/autograder/run_autograder, which grades with that environment's Python, and runs it as root, so the worker
runs as a uid of its own; run_autograder first closes source/ and results/ to other users, so that where the
container refuses namespaces the grader's probe finds nothing a worker could open (grader/isolation.py).
GRADER_AUTOGRADER_ROOT replaces /autograder (for testing the zip outside Gradescope).

Written questions (grader/answers.py) are not auto-graded: each is a manually graded question of the
assignment's outline (`grader gradescope` lists them), and the results show each student the answer received.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import zipfile
from importlib import metadata
from pathlib import Path

from course import kit
from course.assignments import MUTANTS_FILE
from course.notebook import NotebookError, read_notebook
from grader import results as results_file
from grader.answers import Question, WrittenAnswer, questions, read_answers
from grader.errors import GraderError
from grader.runner import ASSIGNMENTS_DIR, find_assignment, grade

ROOT_VARIABLE = "GRADER_AUTOGRADER_ROOT"

# What grading imports, installed into the autograder's environment besides torch: the notebook loader
# (nbformat, IPython's syntax cleaner), the test runner (pytest), what a worker preloads (numpy, tqdm,
# matplotlib), what the kit's modules that notebooks import need (tokenizers, safetensors) and the reader of
# the assignment's manifest on Pythons before 3.11 (tomli). Not the data pipeline (datasets, pyarrow) nor
# Jupyter: grading never runs them.
GRADING_PACKAGES = (
    "numpy", "nbformat", "ipython", "pytest", "tqdm", "matplotlib", "tokenizers", "safetensors", "tomli",
)  # fmt: skip
KIT_DISTRIBUTION = "sampling-course-kit"

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, when the autograder image is built. Everything goes into a virtual
# environment of its own, so a system Python that refuses `pip install` (PEP 668) is left alone.
set -euo pipefail
root="${{{variable}:-/autograder}}"
cd "$root/source"
if ! python3 -m venv --clear "$root/venv"; then
    # Debian and Ubuntu ship venv's pip bootstrap as a package of its own
    apt-get update && apt-get install -y python3-venv
    python3 -m venv --clear "$root/venv"
fi
python="$root/venv/bin/python"
"$python" -m pip install --upgrade pip
# The CPU build of PyTorch: the default one would download gigabytes of CUDA libraries.
"$python" -m pip install {torch} --index-url https://download.pytorch.org/whl/cpu
"$python" -m pip install {packages}
"$python" -m pip install --no-deps .
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this as root for every submission; it writes results/results.json.
set -uo pipefail
root="${{{variable}:-/autograder}}"
# source/ holds the hidden tests: closed to every other user, the workers' uid among them
chmod -R go-rwx "$root/source" 2>/dev/null
mkdir -p "$root/results" && chmod 700 "$root/results"
cd "$root"  # python -m puts the current folder first on sys.path: the kit comes from the environment only
exec "$root/venv/bin/python" -m grader.gradescope {name}
"""

KIT_FILES = ("pyproject.toml", "README.md")
KIT_PACKAGES = ("course", "grader")


def build_zip(name: str, output: Path, tests_dir: Path | None = None) -> Path:
    """Write the autograder zip for assignment `name`, from the kit's tests or those under `tests_dir`."""
    assignment = find_assignment(name, tests_dir)
    setup = setup_script()
    output = Path(output)
    with kit.atomic_path(output) as partial, zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        _add_script(archive, "setup.sh", setup)
        _add_script(archive, "run_autograder", RUN_AUTOGRADER.format(variable=ROOT_VARIABLE, name=name))
        for filename in KIT_FILES:
            archive.write(kit.ROOT / filename, filename)
        for package in KIT_PACKAGES:
            for path in sorted((kit.ROOT / package).rglob("*")):
                if _belongs_in_zip(path):
                    archive.write(path, str(path.relative_to(kit.ROOT)))
        for path in sorted(assignment.rglob("*")):
            if _belongs_in_zip(path, tests=True) and path.name != MUTANTS_FILE:
                archive.write(path, f"grader/assignments/{name}/{path.relative_to(assignment)}")
    return output


def setup_script() -> str:
    """setup.sh, with the kit's own version bounds on torch and on each package grading needs."""
    try:
        requirements = metadata.requires(KIT_DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        requirements = []
    declared = {_requirement_name(r): r for r in requirements if "extra ==" not in r}  # markers kept: pip reads them
    missing = [name for name in ("torch", *GRADING_PACKAGES) if name not in declared]
    if missing:
        raise GraderError(
            f"the installed kit declares no {', '.join(missing)}: install it (pip install -e .) and build the zip again"
        )
    return SETUP_SH.format(
        variable=ROOT_VARIABLE,
        torch=shlex.quote(declared["torch"]),
        packages=" ".join(shlex.quote(declared[name]) for name in GRADING_PACKAGES),
    )


def _requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ]", requirement, maxsplit=1)[0].lower()


def _add_script(archive: zipfile.ZipFile, name: str, text: str) -> None:
    info = zipfile.ZipInfo(name)
    info.external_attr = 0o755 << 16
    archive.writestr(info, text)


def _belongs_in_zip(path: Path, tests: bool = False) -> bool:
    """Source files only; the kit's assignment tests only as the one assignment's (added separately)."""
    if not path.is_file() or "__pycache__" in path.parts or path.suffix == ".pyc":
        return False
    return tests or ASSIGNMENTS_DIR not in path.parents


def run(name: str, root: Path, zygote=None) -> dict:
    """Grade the one notebook in root/submission into root/results/results.json (with `zygote`, one kept
    for several gradings, as a test does; run_autograder starts one per submission)."""
    results_path = root / "results" / "results.json"
    assignment = find_assignment(name, root / "source" / "grader" / "assignments")  # the tests that came in the zip
    notebooks = sorted(p for p in (root / "submission").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    named = [p for p in notebooks if p.name.startswith(name)]
    if len(notebooks) == 1 or len(named) == 1:
        notebook = (named or notebooks)[0]
        results = grade(notebook, assignment, results_path=results_path, zygote=zygote)
        asked = questions(assignment)
        if asked:
            try:
                answers = read_answers(read_notebook(notebook), asked)
            except NotebookError:
                answers = None
            results["tests"] += written_answer_entries(asked, answers)
            results_file.write(results_path, results)
        return results
    if notebooks:
        listed = ", ".join(p.name for p in notebooks)
        refusal = f"your submission holds several notebooks ({listed}): submit only {name}.ipynb"
    else:
        refusal = f"your submission holds no notebook: submit {name}.ipynb"
    return grade(None, assignment, results_path=results_path, refusal=refusal, zygote=zygote)


def written_answer_entries(asked: list[Question], answers: dict[str, WrittenAnswer] | None) -> list[dict]:
    """One results entry per written question, worth 0 autograder points: the answer as the student sees it
    received (escaped as every student text), or why there is none. Its points are a manual question of the
    assignment's outline (`manual_questions` lists them)."""
    unread = WrittenAnswer("", "the notebook could not be read")
    return [
        {
            "name": f"written answer {question.name}: graded by hand ({question.points:g} points)",
            "score": 0,
            "max_score": 0,
            "output": results_file.printable((answers or {}).get(question.name, unread).shown()),
            "visibility": "visible",
        }
        for question in asked
    ]


def manual_questions(name: str, tests_dir: Path | None = None) -> str:
    """What the instructor adds to the Gradescope assignment's outline as manually graded questions, or ''."""
    asked = questions(find_assignment(name, tests_dir))
    if not asked:
        return ""
    listed = "\n".join(f"  {q.name} ({q.points:g} points): {q.question}" for q in asked)
    return f"Add these written questions to the assignment's outline as manually graded questions:\n{listed}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = Path(os.environ.get(ROOT_VARIABLE, "/autograder"))
    try:
        results = run(argv[0], root)
    except GraderError as error:
        print(f"grader: error: {error}", file=sys.stderr)
        return 2
    print(f"score {results['score']:g}/{results['max_score']:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
