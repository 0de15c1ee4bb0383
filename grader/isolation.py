"""What a worker may see, what it must never read, and the proof, before grading for marks, that it cannot.

    view = worker_view(folder)            # in the zygote: the allow-list, and the skeleton of a worker's root folder
    names = secrets(assignment, copy, ...)   # the files and folders of one grading a worker must not open
    verify(zygote, limits, user, names)   # a real worker, set up as every worker is, tries to open each of them:
                                          # a GraderError naming the first it could open, else None

The allow-list: the Python installation (its prefixes, the folders on sys.path) and the system's libraries,
read-only; of the kit, only its importable modules (course/, and grader/'s own modules without its assignments);
a few device files. Never the kit's tests, solutions or history, nor the temporary folder, nor /run, nor a home
folder. A folder on the list that holds a secret is mounted piecewise around it.

Where namespaces are refused (a default Docker container), the worker sees the machine as its uid may: then only
file modes keep secrets from it, which `verify` checks the way an attacker would, by opening them as that worker.
Not root there, the worker has the grader's own uid, so the tests it runs are open to it, and `verify` refuses.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import sys
import sysconfig
import time
from collections import deque
from pathlib import Path

from course.kit import ROOT
from grader.errors import GraderError
from grader.namespaces import DEVICE_LINKS, DEVICES, SCRATCH, View

SYSTEM_FOLDERS = ("/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin")
SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime")
KIT_SECRET_FOLDERS = ("grader/assignments", "solutions", "tests", ".git")
MAX_PROBED = 20_000  # files and folders tried per grading; the walk of a secret folder stops there
PROBE_TIMEOUT = 60.0  # seconds for the probe worker to start, open everything and answer


# ---------------------------------------------------------------- the allow-list


def worker_view(root: str) -> View:
    """The view of every worker this zygote forks, built from this interpreter's installation and the kit.

    `root` (an empty folder of the zygote's) becomes the skeleton of the workers' root folder, made here once: its
    folders, the mount points of what is mounted, copies of the kit's modules and of a few small system files, the
    symbolic links on the way. Each worker then only mounts `View.mounted` into it (namespaces.py)."""
    python = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    python |= {path for path in sysconfig.get_paths().values()}
    python |= {entry for entry in sys.path if entry and os.path.isabs(entry)}
    python |= set(SYSTEM_FOLDERS)
    python.discard(os.getcwd())  # the zygote's own folder: where `-m grader.worker` put sys.path[0]
    python.discard(str(ROOT))  # the kit's folder is on sys.path when run from a checkout: only its modules are seen
    links: dict[str, str] = {}
    resolved = {real for path in python if (real := _resolve(path, links)) is not None}
    hidden = [os.path.realpath(secret) for secret in kit_secret_folders()]
    mounted = _around(_outermost(resolved), hidden)
    for path in [*mounted, *DEVICES]:  # mount points
        if os.path.isdir(path):
            os.makedirs(root + path, 0o755, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(root + path), 0o755, exist_ok=True)
            open(root + path, "a").close()
    for path in SYSTEM_FILES:
        _copy(path, root, links)
    for package in _kit_packages():
        if not any(_inside(package, m) for m in mounted):  # installed in a folder already mounted: seen there
            _copy(package, root, links)
    for path, target in {**links, **DEVICE_LINKS}.items():
        if not any(_inside(path, m) for m in mounted) and not os.path.lexists(root + path):
            os.makedirs(os.path.dirname(root + path), 0o755, exist_ok=True)
            os.symlink(target, root + path)
    for folder in ("/proc", SCRATCH):
        os.makedirs(root + folder, 0o755, exist_ok=True)
    os.chmod(root, 0o755)
    return View(root, tuple(mounted))


def _kit_packages() -> list[str]:
    """The kit's importable modules: the course library, and the grader's own modules (never its assignments)."""
    import course
    import grader

    grader_folder = os.path.dirname(grader.__file__)
    modules = [os.path.join(grader_folder, name) for name in sorted(os.listdir(grader_folder)) if name.endswith(".py")]
    return [os.path.dirname(course.__file__), *modules]


def _copy(path: str, root: str, links: dict[str, str]) -> None:
    """A copy of `path` (a file or a folder, without Python's caches) at the same place in `root`."""
    real = _resolve(path, links)
    if real is None:
        return
    os.makedirs(os.path.dirname(root + real), 0o755, exist_ok=True)
    if os.path.isdir(real):
        shutil.copytree(real, root + real, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    else:
        shutil.copyfile(real, root + real)
    for copied in (root + real, *(str(p) for p in Path(root + real).rglob("*"))):
        os.chmod(copied, 0o755 if os.path.isdir(copied) else 0o644)


def kit_secret_folders() -> list[Path]:
    """The kit's folders no worker may see: its tests (every assignment's, and the project's own with its mutants),
    its solutions and its history, wherever the kit lies (a checkout, or installed beside site-packages)."""
    import grader

    found = [ROOT / name for name in KIT_SECRET_FOLDERS]
    found.append(Path(grader.__file__).parent / "assignments")
    found += [Path(entry, "grader", "assignments") for entry in sys.path if entry and os.path.isabs(entry)]
    return [path for path in dict.fromkeys(found) if os.path.lexists(path)]


def _resolve(path: str, links: dict[str, str]) -> str | None:
    """`path` with every symbolic link on the way resolved (each one recorded in `links`), or None if it is missing."""
    resolved = "/"
    for part in Path(os.path.abspath(path)).parts[1:]:
        candidate = os.path.join(resolved, part)
        for _ in range(40):  # as the kernel's own limit on links followed
            if not os.path.islink(candidate):
                break
            target = os.readlink(candidate)
            links[candidate] = target
            candidate = os.path.normpath(os.path.join(os.path.dirname(candidate), target))
        resolved = os.path.realpath(candidate)
    return resolved if os.path.exists(resolved) else None


def _outermost(paths: set[str]) -> list[str]:
    """The paths that no other path of the set contains."""
    kept: list[str] = []
    for path in sorted(paths):
        if not any(_inside(path, k) for k in kept):
            kept.append(path)
    return kept


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _around(paths: list[str], hidden: list[str]) -> list[str]:
    """`paths`, each folder that holds a hidden one replaced by its entries, recursively, but the hidden one."""
    kept = []
    for path in paths:
        inside = [h for h in hidden if _inside(h, path)]
        if not inside:
            kept.append(path)
        elif path not in inside and os.path.isdir(path) and not os.path.islink(path):
            kept += _around(sorted(os.path.join(path, name) for name in os.listdir(path)), inside)
    return kept


# ---------------------------------------------------------------- the secrets of one grading


def secrets(*roots: str | os.PathLike | None) -> list[str]:
    """Every file and folder under `roots` and the kit's secret folders (links not followed), breadth first so that
    every root is among them, at most MAX_PROBED."""
    found: dict[str, None] = {}
    pending = deque(os.path.abspath(root) for root in (*roots, *kit_secret_folders()) if root is not None)
    while pending and len(found) < MAX_PROBED:
        path = pending.popleft()
        if path in found or not os.path.lexists(path):
            continue
        found[path] = None
        if os.path.isdir(path) and not os.path.islink(path):
            try:
                pending += sorted(entry.path for entry in os.scandir(path))
            except OSError:
                pass  # the trusted side cannot list it either: the probe still tries the folder itself
    return list(found)


def needed_by_workers() -> list[str]:
    """Files a worker must be able to read to import beyond what the zygote preloads."""
    import torch

    import course

    return [os.__file__, torch.__file__, course.__file__]


def verify(zygote, limits, user, secret_paths: list[str]) -> list[str]:
    """Start a worker set up exactly as a grading's workers are, have it open every path, and refuse to grade
    (GraderError, one line) if it opened a secret. Returns what a worker would need but cannot read (a Python
    under /root, seen without namespaces), for the grader to warn about."""
    from grader.sandbox import Worker

    paths = [*secret_paths, *needed_by_workers()]
    probe = Worker(zygote, limits, user, probe=True)
    opened = None
    try:
        probe.endpoint.sock.settimeout(PROBE_TIMEOUT)
        probe.endpoint.sock.sendall(json.dumps(paths).encode() + b"\n")  # more than a request to the zygote holds
        opened = _read_probe_report(probe.endpoint.sock, len(paths))
    except OSError:
        pass  # it ended or stalled before it had read them all: unproven, as below
    finally:
        if opened is None:
            probe.kill()
        else:  # having answered, it is ending on its own (it never runs student code): no need to wait for it
            probe.release()
    if opened is None:
        raise GraderError(
            "refusing to grade: the isolation probe gave no answer, so the workers' isolation is unproven"
        )
    leaked = [secret_paths[i] for i in opened if i < len(secret_paths)]
    if leaked:
        raise GraderError(
            f"refusing to grade: a worker could open {_printable(leaked[0])}"
            + (f" and {len(leaked) - 1} other secret files" if len(leaked) > 1 else "")
            + f" ({setting_of(zygote, user)}); {_how_to_close(zygote, user)}"
        )
    return [path for i, path in enumerate(paths) if i >= len(secret_paths) and i not in opened]


def _read_probe_report(sock, count: int) -> list[int] | None:
    """The indices the probe opened: one JSON line, at most as long as `count` indices can make it."""
    limit = 16 * (count + 1)
    data = b""
    deadline = time.monotonic() + PROBE_TIMEOUT
    while not data.endswith(b"\n") and len(data) <= limit:
        ready, _, _ = select.select([sock], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            return None
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    try:
        indices = json.loads(data)
    except ValueError:
        return None
    if type(indices) is not list or not all(type(i) is int and 0 <= i < count for i in indices):
        return None
    return indices


def probe(paths: list[str]) -> list[int]:
    """In the probe worker: the indices of `paths` it can open for reading (folders: for listing)."""
    opened = []
    for index, path in enumerate(paths):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            if os.path.isdir(path):
                os.listdir(fd)
            opened.append(index)
        except OSError:
            pass
        finally:
            os.close(fd)
    return opened


def setting_of(zygote, user) -> str:
    """The setting grading runs in, in words: who the workers are and what they see."""
    who = f"workers run as uid {user.uid}" if user is not None else "workers run as your own user"
    if zygote.isolated:
        return f"{who}, each in namespaces of its own"
    return f"{who}, without namespaces ({zygote.namespaces_refused})"


def _how_to_close(zygote, user) -> str:
    if user is None and not zygote.isolated:
        return (
            "without namespaces, grading for marks needs root (workers then get a uid of their own); "
            "`grader check` runs the visible tests here"
        )
    return "make the kit's tests, solutions and the graded folders unreadable to other users (chmod -R go-rwx)"


def _printable(path: str) -> str:
    from grader.results import printable

    return printable(path)
