"""Who a worker runs as, and what it may use.

`Limits` are the worker's resource limits. `WorkerUser.claim()`, run as root, gives a grading a uid
and gid of its own, so its worker can neither signal nor read anything of the grader's, and `kill_all`
ends every process of that uid, detached or not. A uid is claimed only when it belongs to no one: no
account or group has it (the system's user database, whatever it draws on), no range of subordinate ids
handed to users for their own namespaces contains it, no process runs with it in any of its ids, no file
in the folders every user may write to is owned by it, and no concurrent grading holds it. When the
grading ends, what its workers left in those folders (possible only without namespaces) is removed, so
that the next grading to claim the uid finds nothing of this one's. Not run as root there is no uid to
claim: the worker has the grader's own rights.
"""

from __future__ import annotations

import os
import signal
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

WORKER_UIDS = range(40000, 60000)  # below the usual subordinate ranges (100000 and up), inside a user namespace's 65536
CLAIMS_FOLDER = Path("/run/grader-worker-uids")  # root only: one locked file per uid in use
SHARED_FOLDERS = ("/tmp", "/var/tmp", "/dev/shm")  # where any uid may create files
SUBORDINATE_IDS = ("/etc/subuid", "/etc/subgid")


WORKER_MEMORY_BYTES = 4 * 2**30  # without a container limit
CONTAINER_SHARE = 0.5  # of a container's memory, the most a worker may add: the grader and the zygote need the rest
UNLIMITED = 2**60  # cgroup v1 writes "no limit" as a number near 2**63


def container_memory_bytes() -> int | None:
    """The memory limit of this process's cgroup, v2 or v1: the smallest set on its path to the root
    (what a container such as Gradescope's gives); None where there is none."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None  # not Linux
    found = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            base, name = Path("/sys/fs/cgroup"), "memory.max"  # v2: the one unified hierarchy
        elif "memory" in controllers.split(","):
            base, name = Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes"
        else:
            continue
        folder = Path(path)
        for ancestor in (folder, *folder.parents):
            try:
                value = (base / ancestor.relative_to("/") / name).read_text().strip()
            except (OSError, ValueError):
                continue
            if value.isdigit() and int(value) < UNLIMITED:
                found.append(int(value))
    return min(found) if found else None


def worker_memory_bytes() -> int:
    """The address space a worker may add: 4 GiB, or less where the container's memory is smaller."""
    container = container_memory_bytes()
    return WORKER_MEMORY_BYTES if container is None else min(WORKER_MEMORY_BYTES, int(container * CONTAINER_SHARE))


@dataclass(frozen=True)
class Limits:
    call_timeout: float = 10.0  # seconds per call into student code (a test may ask for more)
    load_timeout: float = 30.0  # seconds to run the notebook's definitions
    memory_bytes: int = field(default_factory=worker_memory_bytes)  # address space a worker may add to torch's
    grading_memory_bytes: int = 4 * 2**30  # likewise for the trusted grading process (decoded replies, exposed models)
    file_bytes: int = 64 * 2**20  # largest file a worker may write
    output_bytes: int = 2**20  # stdout + stderr kept per worker; the rest is dropped
    processes: int = 64  # processes and threads of the worker's uid (root only)
    cpu_seconds: int = 600  # CPU time per worker: a backstop behind the per-call deadlines
    message_bytes: int = 256 * 2**20  # largest message across the boundary


def running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0  # Windows has no uids


def limit_address_space(extra_bytes: int) -> None:
    """Let this process map at most `extra_bytes` beyond what it maps now (torch's own mappings are large)."""
    import resource  # POSIX only: the plain self-check (grader/plain.py) never limits a process

    ceiling = _virtual_memory_bytes() + extra_bytes
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, ceiling))


def _virtual_memory_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass(frozen=True)
class WorkerUser:
    uid: int
    gid: int

    @classmethod
    @contextmanager
    def claim(cls):
        """A uid that belongs to no one, for as long as the `with` block; None unless root.

        The claim is an flock on a file named after the uid: the kernel drops it when the holder dies.
        """
        if not running_as_root():
            yield None
            return
        import fcntl

        claims = _root_only_folder(CLAIMS_FOLDER)
        subordinate = _subordinate_ranges()
        start = os.getpid()
        for offset in range(len(WORKER_UIDS)):
            uid = WORKER_UIDS[(start + offset) % len(WORKER_UIDS)]
            if _has_an_owner(uid, subordinate):
                continue
            fd = os.open(claims / str(uid), os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            user = cls(uid, uid)
            if user.processes() or user.files_left():  # someone uses it after all (a process, or a file of its own)
                os.close(fd)
                continue
            try:
                yield user
            finally:
                try:
                    user.kill_all()
                    user.remove_files_left()
                finally:
                    os.close(fd)
            return
        raise RuntimeError("every worker uid is in use")

    def kill_all(self) -> None:
        """SIGKILL every process of this uid, repeatedly until none is left (a fork bomb included).

        A helper takes the uid and calls kill(-1): the kernel signals every process it may signal,
        which are exactly the processes of that uid, wherever they are in the process tree.
        """
        for _ in range(100):
            if not self.processes():
                return
            helper = os.fork()
            if helper == 0:
                try:
                    os.setresuid(self.uid, self.uid, self.uid)
                    os.kill(-1, signal.SIGKILL)
                finally:
                    os._exit(0)
            os.waitpid(helper, 0)
            for _ in range(5):  # the killed take a moment to be gone (their namespaces torn down)
                time.sleep(0.002)
                if not self.processes():
                    return

    def cannot_read(self, paths) -> list[str]:
        """Those of `paths` this uid cannot read (checked by a helper that takes the uid)."""
        paths = [str(p) for p in paths]
        read_end, write_end = os.pipe()
        helper = os.fork()
        if helper == 0:
            try:
                os.setresgid(self.gid, self.gid, self.gid)
                os.setresuid(self.uid, self.uid, self.uid)
                denied = [p for p in paths if not os.access(p, os.R_OK | os.X_OK)]
                os.write(write_end, "\n".join(denied).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            denied = pipe.read().decode().splitlines()
        os.waitpid(helper, 0)
        return denied

    def processes(self) -> list[int]:
        """The live processes with this uid or gid as any of their ids (real, effective, saved, file system): a
        process whose main thread has exited while other threads run shows as a zombie in /proc/PID/status, so
        its threads (/proc/PID/task) are what counts."""
        found = []
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                status = _status(entry.path)
                if status is None:
                    continue
                ids = {int(i) for i in status["Uid"].split()} | {int(i) for i in status["Gid"].split()}
                if (self.uid in ids or self.gid in ids) and _alive(entry.path, status):
                    found.append(int(entry.name))
        return found

    def files_left(self) -> list[str]:
        """The entries of the folders every user may write to that this uid or gid owns."""
        found = []
        for folder in _shared_folders():
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if info.st_uid == self.uid or info.st_gid == self.gid:
                    found.append(entry.path)
        return found

    def remove_files_left(self) -> None:
        """Remove what this uid made in the shared folders. Called once every process of the uid is dead, so
        nothing can swap what is removed for a link meanwhile; rmtree never follows one anyway."""
        import shutil

        for path in self.files_left():
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass


def _has_an_owner(uid: int, subordinate: list[range]) -> bool:
    """Whether an account or group has this id, or a range of subordinate ids holds it."""
    import grp
    import pwd

    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(uid)
            return True
        except KeyError:
            pass
    return any(uid in ids for ids in subordinate)


def _subordinate_ranges() -> list[range]:
    """The ranges of /etc/subuid and /etc/subgid (`name:first:count` lines): ids handed to users for the files
    and processes of their own user namespaces."""
    ranges = []
    for path in SUBORDINATE_IDS:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            fields = line.strip().split(":")
            if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
                ranges.append(range(int(fields[1]), int(fields[1]) + int(fields[2])))
    return ranges


def _shared_folders() -> list[str]:
    import tempfile

    return list(dict.fromkeys([*SHARED_FOLDERS, tempfile.gettempdir()]))


def _status(proc_path: str) -> dict[str, str] | None:
    try:
        text = Path(proc_path, "status").read_text()
    except OSError:
        return None  # it just ended
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def _alive(proc_path: str, status: dict[str, str]) -> bool:
    if not status["State"].strip().startswith("Z"):
        return True
    try:
        threads = os.listdir(Path(proc_path, "task"))
    except OSError:
        return False
    for thread in threads:
        thread_status = _status(os.path.join(proc_path, "task", thread))
        if thread_status is not None and not thread_status["State"].strip().startswith("Z"):
            return True
    return False


def _root_only_folder(path: Path) -> Path:
    """`path`, a folder that root created and only root may change: made if missing, refused if anyone
    else could have made or replaced it (a link, another owner, group or other write access)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
        raise RuntimeError(f"{path} is not a folder that only root can change: remove it and grade again")
    return path
