"""The grader's boundary in each setting it may run in, tried from inside a worker.

Four settings: root or an ordinary user, with namespaces or without them (`without_namespaces.py` refuses them
with a seccomp filter, as Docker's default profile does). In each, `grader grade` runs a notebook whose `explore()`
walks every file system it can see, opens whatever looks like a secret (hidden tests, solutions, mutants, the kit's
history, the grader's private copies) and every path it is told of, and connects to every named socket it can find
(the Unix ones in /proc/net/unix and in the file system, abstract ones included, and the TCP ones listening). The
grading process (trusted) checks that it opened nothing and reached none of the grader's sockets.

What each setting must do with the kit's own checkout, whose folders every user may read:
- with namespaces (root or not): grade, and the worker sees none of it;
- root without namespaces: refuse, naming a secret the worker could open (the checkout is not closed);
- an ordinary user without namespaces: refuse (the worker would have the grader's own uid).
And Gradescope's flow, without namespaces: the zip installed into a virtual environment as setup.sh does, its
run_autograder closing source/, and the notebook graded with nothing to find.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import nbformat
import pytest

from course.assignments import assignments
from course.kit import ROOT
from grader import isolation
from grader.errors import GraderError
from grader.gradescope import build_zip
from grader.identity import Limits, WorkerUser, running_as_root
from grader.sandbox import Zygote

pytestmark = pytest.mark.slow

FIXTURES = ROOT / "tests" / "grader_fixtures"
ASSIGNMENT = FIXTURES / "assignments" / "00_isolation"
WITHOUT_NAMESPACES = [sys.executable, str(FIXTURES / "without_namespaces.py")]
ORDINARY_UID = 39998  # outside the workers' range (40000-59999); not test_adversarial_as_user's 39999
WALK_SECONDS = 6.0

EXPLORER = '''
import os, socket, stat, time

SECRET_NAMES = ("test_hidden.py",)
SECRET_FOLDERS = (".git", "solutions", "mutants")
PRIVATE_PREFIXES = ("grader-tests-", "grader-zygote-", "grader-worker-uids")
SOCKET_TYPES = {"0001": socket.SOCK_STREAM, "0002": socket.SOCK_DGRAM, "0005": socket.SOCK_SEQPACKET}


def _is_secret(path):
    parts = path.split("/")
    return (
        parts[-1] in SECRET_NAMES
        or any(part in SECRET_FOLDERS or part.startswith(PRIVATE_PREFIXES) for part in parts)
        or path in KNOWN_SECRETS
    )


def _opens(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            os.listdir(fd)
        else:
            os.read(fd, 1)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _walk(deadline):
    walked, found, socket_files = 0, [], []
    pending = list(WALK_ROOTS)
    while pending and time.monotonic() < deadline:
        path = pending.pop()
        try:
            info = os.lstat(path)
        except OSError:
            continue
        walked += 1
        if stat.S_ISSOCK(info.st_mode):
            socket_files.append(path)
        if _is_secret(path) and _opens(path):
            found.append(path)
        if stat.S_ISDIR(info.st_mode) and path not in ("/proc", "/sys"):
            try:
                pending += [os.path.join(path, name) for name in os.listdir(path)]
            except OSError:
                pass
    return walked, found, socket_files


def _unix_sockets(socket_files):
    """(address, type, inode) of every named Unix socket: /proc/net/unix's, then the socket files found."""
    listed = []
    try:
        lines = open("/proc/net/unix").read().splitlines()[1:]
    except OSError:
        lines = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 8:
            name = fields[7]
            address = "\\0" + name[1:] if name.startswith("@") else name
            listed.append((address, SOCKET_TYPES.get(fields[4], socket.SOCK_STREAM), int(fields[6])))
    known = {address for address, _, _ in listed}
    for path in socket_files:
        if path not in known:
            listed += [(path, kind, None) for kind in SOCKET_TYPES.values()]
    return listed


def _tcp_listeners():
    found = []
    for table, family, loopback in (("/proc/net/tcp", socket.AF_INET, "127.0.0.1"), ("/proc/net/tcp6", socket.AF_INET6, "::1")):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A":  # LISTEN
                found.append((family, loopback, int(fields[1].split(":")[1], 16), int(fields[9])))
    return found


def _connects(family, kind, address):
    connection = socket.socket(family, kind)
    connection.settimeout(0.5)
    try:
        connection.connect(address)
        return True
    except OSError:
        return False
    finally:
        connection.close()


def explore():
    walked, found, socket_files = _walk(time.monotonic() + WALK_SECONDS)
    found += [path for path in KNOWN_SECRETS if path not in found and _opens(path)]
    reached = []
    for address, kind, inode in _unix_sockets(socket_files)[:500]:
        if _connects(socket.AF_UNIX, kind, address):
            reached.append({"address": address.replace("\\0", "@"), "inode": inode})
    for family, host, port, inode in _tcp_listeners()[:200]:
        if _connects(family, socket.SOCK_STREAM, (host, port)):
            reached.append({"address": f"{host}:{port}", "inode": inode})
    return {"secrets": found, "sockets": reached, "walked": walked}
'''


def explorer(path: Path, walk_roots: list[str], known_secrets: list[str]) -> Path:
    constants = f"WALK_ROOTS = {walk_roots!r}\nKNOWN_SECRETS = {known_secrets!r}\nWALK_SECONDS = {WALK_SECONDS!r}\n"
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(constants), nbformat.v4.new_code_cell(EXPLORER)]
    nbformat.write(notebook, path)
    return path


def kit_secrets() -> list[str]:
    """A file of each kind of the checkout's secrets, for the explorer to try by name."""
    first = assignments()[0]
    candidates = [
        first.folder / "test_hidden.py",
        first.solution,
        first.folder / "mutants.toml",
        ROOT / ".git" / "HEAD",
        ASSIGNMENT / "test_hidden.py",
    ]
    return [str(path) for path in candidates if path.exists()]


def grade_as(setting: str, folder: Path) -> tuple[subprocess.CompletedProcess, Path]:
    """`grader grade` of the explorer in `folder`, in `setting` ('root', 'root-no-ns', 'user', 'user-no-ns')."""
    notebook = explorer(folder / "explorer.ipynb", ["/"], kit_secrets())
    results = folder / "results.json"
    command = [sys.executable, "-m", "grader.cli", "grade", str(notebook), "--tests-dir", str(ASSIGNMENT.parent)]
    command += ["--assignment", ASSIGNMENT.name, "--results", str(results), "--timeout", "60"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    if setting.startswith("user"):
        os.chown(folder, ORDINARY_UID, ORDINARY_UID)
        os.chown(notebook, ORDINARY_UID, ORDINARY_UID)
        env.update(HOME=str(folder), TMPDIR=str(folder))
        command = ["setpriv", f"--reuid={ORDINARY_UID}", f"--regid={ORDINARY_UID}", "--clear-groups", *command]
    if setting.endswith("no-ns"):
        command = [*WITHOUT_NAMESPACES, *command]
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    return done, results


@pytest.fixture
def folder():
    path = Path(tempfile.mkdtemp(prefix="grader-isolation-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _readable_by(uid: int, path: Path) -> bool:
    return (
        subprocess.run(
            ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "test", "-r", str(path)]
        ).returncode
        == 0
    )


def _requires(setting: str) -> None:
    if setting.startswith("root") and not running_as_root():
        pytest.skip("this setting needs root")
    if setting.startswith("user"):
        if not running_as_root() or shutil.which("setpriv") is None:
            pytest.skip("an ordinary user's setting is started by root with setpriv")
        if not _readable_by(ORDINARY_UID, Path(sys.executable).resolve()) or not _readable_by(
            ORDINARY_UID, ROOT / "course"
        ):
            pytest.skip(
                "an ordinary user cannot read this Python or checkout: build the environment from a Python others may read"
            )


def test_the_explorer_finds_the_checkouts_secrets_where_nothing_isolates_it():
    """The explorer itself, run here (no worker, no namespace): it must find what the worker must not, or its
    silence inside a worker would prove nothing."""
    namespace = {}
    exec(f"WALK_ROOTS = {[str(ROOT / 'tests' / 'grader_fixtures')]!r}\nKNOWN_SECRETS = {kit_secrets()!r}\n", namespace)
    exec(f"WALK_SECONDS = {WALK_SECONDS!r}\n{EXPLORER}", namespace)
    found = namespace["explore"]()
    assert str(ASSIGNMENT / "test_hidden.py") in found["secrets"]  # by its name, in the walk
    assert set(kit_secrets()) <= set(found["secrets"])  # by the paths it is told of
    assert found["walked"] > 10


def test_the_probe_tries_every_path_of_a_large_checkout():
    """A checkout's history can hold tens of thousands of files: the probe is sent more paths than one request to
    the zygote holds (64 KiB), and still tries the last one (a file every worker may read, so the grading is
    refused, naming it)."""
    _requires("root")
    readable = os.path.realpath(os.__file__)
    paths = [f"/no-such-folder/{i:05d}-{'x' * 60}" for i in range(4000)] + [readable]
    assert len(json.dumps(paths)) > 4 * 65536
    refused = pytest.raises(GraderError, match=f"a worker could open {readable} ")
    with Zygote() as zygote, WorkerUser.claim() as user, refused:
        isolation.verify(zygote, Limits(), user, paths)


@pytest.mark.parametrize("setting", ["root", "user"])
def test_with_namespaces_a_worker_finds_nothing_to_read_and_no_socket_to_reach(setting, folder):
    _requires(setting)
    done, results_path = grade_as(setting, folder)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(results_path.read_text())
    [test] = results["tests"]
    assert test["status"] == "passed", test["output"]
    assert results["score"] == results["max_score"] == 1


@pytest.mark.parametrize("setting", ["root-no-ns", "user-no-ns"])
def test_without_namespaces_an_open_checkout_is_refused_before_any_student_code_runs(setting, folder):
    _requires(setting)
    done, results_path = grade_as(setting, folder)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    [line] = done.stderr.strip().splitlines()[-1:]
    assert line.startswith("grader grade: error: refusing to grade: a worker could open "), line
    assert "without namespaces" in line
    if setting == "user-no-ns":
        assert "needs root" in line  # what would make it possible
    assert not results_path.exists(), "a refused grading writes no results"


def test_gradescopes_flow_without_namespaces_leaves_nothing_for_a_worker_to_read(folder):
    """setup.sh's install of the kit (`pip install --no-deps .`) into the zip's virtual environment, then its
    run_autograder, as root, where namespaces are refused: the worker finds no test in the environment, nothing of
    source/ (which run_autograder closes), and grading goes on."""
    _requires("root-no-ns")
    root = folder / "autograder"  # in a folder every user may enter, as Gradescope's /autograder
    with zipfile.ZipFile(build_zip(ASSIGNMENT.name, folder / "autograder.zip", ASSIGNMENT.parent)) as archive:
        archive.extractall(root / "source")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site_packages = next(venv.glob("lib/python3*/site-packages"))
    # the grading packages setup.sh downloads stand in for by this environment's (no network here)
    (site_packages / "dependencies.pth").write_text(
        "\n".join(p for p in sys.path if p.endswith("site-packages")) + "\n"
    )
    install = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "."]
    done = subprocess.run(install, cwd=root / "source", capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    installed = [str(p) for p in site_packages.rglob("test_*.py")] + [str(p) for p in site_packages.rglob("*.ipynb")]
    assert installed == [], "setup.sh's install copied tests into the environment"
    (root / "submission").mkdir()
    temporary = folder / "tmp"  # the container's /tmp, where the grader keeps its private copies: this machine's
    temporary.mkdir()  # own /tmp holds other checkouts that every user may read, which a container would not
    temporary.chmod(0o1777)
    known = [str(p) for p in (root / "source").rglob("*") if p.is_file()][:200]
    explorer(root / "submission" / f"{ASSIGNMENT.name}.ipynb", [str(root), str(temporary)], known)
    run_autograder = root / "run_autograder"  # where Gradescope puts it
    run_autograder.write_bytes((root / "source" / "run_autograder").read_bytes())
    run_autograder.chmod(0o755)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GRADER_AUTOGRADER_ROOT": str(root),
        "TMPDIR": str(temporary),
    }
    done = subprocess.run(
        [*WITHOUT_NAMESPACES, str(run_autograder)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((root / "results" / "results.json").read_text())
    [test] = results["tests"]
    assert test["status"] == "passed", test["output"]
    assert "without namespaces" in done.stderr  # the grader says which setting it graded in
