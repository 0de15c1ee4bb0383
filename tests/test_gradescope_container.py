"""Gradescope's default container: 768 MB of memory for everything and half a CPU. Each assignment's
autograder zip grades its solution there to full marks, and a student function that hoards memory (in several
processes, past the container's limit) costs only its own tests: the workers carry the highest OOM score, so the
kernel kills student code, never the grader, and results.json stays valid.

Built as root from a memory and a cpu cgroup (v1 or v2) under the test's own. To stay in the test budget, the zips'
flow runs in one Python process in the cgroup: each zip is unzipped into a root of its own and graded by
`grader.gradescope.run` (what run_autograder runs), with one zygote kept for all of them instead of one per
submission."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from course.assignments import assignments, grading
from grader.gradescope import build_zip
from grader.identity import worker_memory_bytes

ASSIGNMENTS = {one.name: one for one in assignments()}  # every one
HOARDED = grading(["greedy"])  # a hoarding `greedy` goes into this assignment's solution
MEMORY_BYTES = 768 * 2**20
CPU_QUOTA = (50_000, 100_000)  # microseconds of CPU per period: half a CPU

HOARDER = """
import os, time, torch

def greedy(logits):
    for _ in range(3):  # children that each hold 256 MB: together past the container's limit
        if os.fork() == 0:
            hoard = torch.ones(2**26)
            time.sleep(60)
            os._exit(0)
    hoard = []
    while True:
        hoard.append(torch.ones(2**24))
"""


def own_cgroup(controller: str | None) -> Path | None:
    """This process's cgroup folder for `controller` (v1), or its v2 folder for None; None if not mounted."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if (controller is None and controllers == "") or (controller and controller in controllers.split(",")):
            base = Path("/sys/fs/cgroup") / (controller or "")
            folder = base / path.lstrip("/")
            return folder if folder.is_dir() else None
    return None


class ContainerCgroups:
    """A 768 MB, half-CPU cgroup (v1: one in the memory and one in the cpu hierarchy; v2: one folder)."""

    def __init__(self, name: str):
        memory, cpu = own_cgroup("memory"), own_cgroup("cpu")
        self.folders: list[Path] = []
        if memory is not None and cpu is not None and (memory / "memory.limit_in_bytes").exists():
            self.folders = [memory / name, cpu / name]
            for folder in self.folders:
                folder.mkdir()
            (self.folders[0] / "memory.limit_in_bytes").write_text(str(MEMORY_BYTES))
            (self.folders[1] / "cpu.cfs_period_us").write_text(str(CPU_QUOTA[1]))
            (self.folders[1] / "cpu.cfs_quota_us").write_text(str(CPU_QUOTA[0]))
            return
        unified = own_cgroup(None)
        if unified is None or not {"memory", "cpu"} <= set((unified / "cgroup.controllers").read_text().split()):
            raise OSError("no memory and cpu cgroup controllers to use")
        (unified / "cgroup.subtree_control").write_text("+memory +cpu")
        self.folders = [unified / name]
        self.folders[0].mkdir()
        (self.folders[0] / "memory.max").write_text(str(MEMORY_BYTES))
        (self.folders[0] / "cpu.max").write_text(f"{CPU_QUOTA[0]} {CPU_QUOTA[1]}")

    def command(self, argv: list[str]) -> list[str]:
        """`argv`, run by a shell that first moves itself into the cgroups."""
        joins = "; ".join(f"echo $$ > {folder / 'cgroup.procs'}" for folder in self.folders)
        return ["sh", "-c", f'{joins}; exec "$@"', "sh", *argv]

    def remove(self) -> None:
        for folder in self.folders:
            if folder.exists():
                folder.rmdir()


@pytest.fixture
def container(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("making a cgroup needs root")
    try:
        cgroups = ContainerCgroups(f"grader-test-{os.getpid()}")
    except OSError as error:
        pytest.skip(f"no cgroup to make here: {error}")
    yield cgroups
    cgroups.remove()


def autograder_root(tmp_path: Path, name: str, notebook: nbformat.NotebookNode, label: str) -> Path:
    """The zip for `name` unzipped where Gradescope puts it (ROOT/source), with `notebook` submitted."""
    root = tmp_path / label
    with zipfile.ZipFile(build_zip(name, tmp_path / f"{label}.zip")) as archive:
        archive.extractall(root / "source")
    (root / "submission").mkdir()
    nbformat.write(notebook, root / "submission" / f"{name}.ipynb")
    return root


def test_the_worker_memory_limit_follows_the_container(monkeypatch):
    monkeypatch.setattr("grader.identity.container_memory_bytes", lambda: MEMORY_BYTES)
    assert worker_memory_bytes() == MEMORY_BYTES // 2
    monkeypatch.setattr("grader.identity.container_memory_bytes", lambda: 64 * 2**30)
    assert worker_memory_bytes() == 4 * 2**30  # a large container: the fixed limit
    monkeypatch.setattr("grader.identity.container_memory_bytes", lambda: None)
    assert worker_memory_bytes() == 4 * 2**30


@pytest.mark.slow
def test_each_zip_grades_in_gradescopes_default_container(container, tmp_path):
    roots = {
        name: autograder_root(tmp_path, name, nbformat.read(one.solution, 4), name) for name, one in ASSIGNMENTS.items()
    }
    hoarding = nbformat.read(HOARDED.solution, 4)
    hoarding.cells.append(nbformat.v4.new_code_cell(HOARDER))
    roots["hoarder"] = autograder_root(tmp_path, HOARDED.name, hoarding, "hoarder")
    script = (
        "import json, sys\nfrom pathlib import Path\nfrom grader import gradescope\n"
        "from grader.identity import container_memory_bytes\nfrom grader.sandbox import Zygote\n"
        "print(json.dumps({'container': container_memory_bytes()}), flush=True)\n"
        "with Zygote() as zygote:\n"
        "    for name, root in json.loads(sys.argv[1]):\n"
        "        gradescope.run(name, Path(root), zygote=zygote)\n"
    )
    plan = [[(HOARDED.name if label == "hoarder" else label), str(root)] for label, root in roots.items()]
    env = dict(os.environ, PYTHONPATH=str(roots[HOARDED.name] / "source"))  # the kit as the zip ships it
    done = subprocess.run(
        container.command([sys.executable, "-c", script, json.dumps(plan)]),
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[0]) == {"container": MEMORY_BYTES}, "the grader sees the limit"
    for name in ASSIGNMENTS:
        results = json.loads((roots[name] / "results" / "results.json").read_text())
        failed = [t["name"] + ": " + t["output"] for t in results["tests"] if t["score"] < t["max_score"]]
        assert results["score"] == sum(t["max_score"] for t in results["tests"]) > 0, failed
    results = json.loads((roots["hoarder"] / "results" / "results.json").read_text())
    failed = [t for t in results["tests"] if t["score"] < t["max_score"]]
    assert failed and all("greedy" in t["name"] and t["score"] == 0 and t["output"] for t in failed), failed
    assert len(failed) < len(results["tests"]) and results["score"] > 0, "the other tests were scored"
    shutil.rmtree(tmp_path, ignore_errors=True)  # the unzipped kits
