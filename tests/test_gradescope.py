"""The Gradescope autograder zip: what setup.sh installs (only what grading needs, into a virtual environment),
and the zip's run_autograder grading a submission in a simulated /autograder."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from course.assignments import assignments
from grader.cli import main
from grader.gradescope import GRADING_PACKAGES, KIT_DISTRIBUTION, build_zip

sys.path.insert(0, str(Path(__file__).parent / "grader_fixtures"))
from submissions import ASSIGNMENTS, TESTS, notebook  # noqa: E402

NOT_FOR_GRADING = ("datasets", "pyarrow", "nbconvert", "nbclient", "ipykernel", "jupyterlab", "transformers")


def unzipped(tmp_path: Path) -> Path:
    """The zip for the example assignment, unzipped where Gradescope puts it: ROOT/source."""
    root = tmp_path / "autograder"
    with zipfile.ZipFile(build_zip("00_example", tmp_path / "autograder.zip", ASSIGNMENTS)) as archive:
        archive.extractall(root / "source")
    return root


def pip_installs(setup_sh: str) -> list[str]:
    return [line for line in setup_sh.splitlines() if " -m pip install " in line]


def test_setup_creates_a_virtual_environment_and_installs_torch_for_the_cpu_first(tmp_path):
    root = unzipped(tmp_path)
    setup_sh = (root / "source" / "setup.sh").read_text()
    assert 'python3 -m venv --clear "$root/venv"' in setup_sh
    assert "apt-get install -y python3-venv" in setup_sh  # Debian and Ubuntu without venv's pip bootstrap
    installs = pip_installs(setup_sh)
    assert all(line.startswith('"$python" -m pip install') for line in installs)  # never the system Python's pip
    assert installs[1] == "\"$python\" -m pip install 'torch>=2.4' --index-url https://download.pytorch.org/whl/cpu"
    assert installs[-1] == '"$python" -m pip install --no-deps .'
    for script in ("setup.sh", "run_autograder"):
        assert subprocess.run(["bash", "-n", str(root / "source" / script)]).returncode == 0, f"{script} is not bash"
    run_autograder = (root / "source" / "run_autograder").read_text()
    assert 'exec "$root/venv/bin/python" -m grader.gradescope 00_example' in run_autograder


def test_setup_installs_only_what_grading_needs_with_the_kits_version_bounds(tmp_path):
    setup_sh = (unzipped(tmp_path) / "source" / "setup.sh").read_text()
    declared = [r for r in metadata.requires(KIT_DISTRIBUTION) if "extra ==" not in r]
    needed = [r for r in declared if r.split(">")[0] in GRADING_PACKAGES]
    assert len(needed) == len(GRADING_PACKAGES)
    # a requirement with a marker keeps it: 'tomli>=1.1; python_version < "3.11"'
    assert set(shlex.split(pip_installs(setup_sh)[2])[4:]) == set(needed)
    assert not [name for name in NOT_FOR_GRADING if name in setup_sh]


def test_each_assignments_zip_holds_its_folder_but_its_mutants(tmp_path):
    """The zip of every assignment of the manifests: its folder (manifest, tests, helpers, contract) under
    grader/assignments/, without mutants.toml (solution fragments grading has no use for), and no other's."""
    for one in assignments():
        with zipfile.ZipFile(build_zip(one.name, tmp_path / f"{one.name}.zip")) as archive:
            names = archive.namelist()
        prefix = f"grader/assignments/{one.name}/"
        inside = sorted(name.removeprefix(prefix) for name in names if name.startswith(prefix))
        folder = [p for p in one.folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        assert inside == sorted(p.relative_to(one.folder).as_posix() for p in folder if p.name != "mutants.toml")
        assert "assignment.toml" in inside and "test_hidden.py" in inside
        assert not [name for name in names if name.startswith("grader/assignments/") and not name.startswith(prefix)]


@pytest.fixture
def blocked_packages(tmp_path) -> Path:
    """A folder whose packages shadow what grading must not need: importing one fails, as in the zip's venv."""
    folder = tmp_path / "blocked"
    for name in NOT_FOR_GRADING:
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(f"raise ImportError('{name} is not installed for grading')\n")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize(
    "submitted, expected",
    [(["00_example.ipynb"], "score 9/9"), ([], "no notebook"), (["a.ipynb", "b.ipynb"], "several notebooks")],
)
def test_the_zips_run_autograder_grades_a_submission_without_the_data_or_jupyter_packages(
    tmp_path, blocked_packages, submitted, expected
):
    root = unzipped(tmp_path)
    shipped = [str(p) for p in (root / "source").rglob("*")]
    assert not [one.name for one in assignments() if any(one.name in path for path in shipped)]  # the example's only
    # setup.sh's venv, stood in for by this interpreter, with the zip's kit first and the blocked packages next
    venv_python = root / "venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text(f'#!/bin/sh\nPYTHONPATH={root / "source"}:{blocked_packages} exec {sys.executable} "$@"\n')
    venv_python.chmod(0o755)
    (root / "submission").mkdir()
    for name in submitted:
        notebook(root / "submission" / name)
    run_autograder = root / "run_autograder"  # where Gradescope puts it
    run_autograder.write_bytes((root / "source" / "run_autograder").read_bytes())
    run_autograder.chmod(0o755)
    env = dict(os.environ, GRADER_AUTOGRADER_ROOT=str(root))
    done = subprocess.run([str(run_autograder)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results = json.loads((root / "results" / "results.json").read_text())
    assert len(results["tests"]) == len(TESTS)
    assert expected in (done.stdout if submitted == ["00_example.ipynb"] else results["output"])


def test_a_kit_that_is_not_installed_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "requires", not_installed)
    argv = ["gradescope", "00_example", "-o", str(tmp_path / "a.zip"), "--tests-dir", str(ASSIGNMENTS)]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "grader gradescope: error: the installed kit declares no torch, numpy, nbformat, ipython, pytest, tqdm, "
        "matplotlib, tokenizers, safetensors, tomli: install it (pip install -e .) and build the zip again"
    ]
    assert list(tmp_path.iterdir()) == []  # no zip, not even part of one
