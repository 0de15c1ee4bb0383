"""The trusted side of the process boundary: starting, loading, replacing and killing workers.

    zygote = Zygote()                                  # one per grading run: imports torch once
    with WorkerUser.claim() as user:                   # a uid of our own (None unless root)
        session = StudentSession(extracted, limits, zygote, user)
        session.call("greedy", (logits,), {}, timeout=10)  # the worker starts and loads on first use
        session.close()                                # kills the worker's whole process tree
        user.kill_all()                                # and every process of its uid

Run as root (as on Gradescope), every grading claims a uid and gid of its own (never a real
account's, never one that a concurrent grading holds), so a worker can neither signal nor read
anything of the grader's, and `WorkerUser.kill_all` ends every process of that uid, detached or
not, before results are written. `private` closes the tests and solutions folders to other users while
a grading runs, and gives them back their modes afterwards. Not run as root,
a worker has the grader's own rights: it runs in its own session and process group, which the
grader kills, but a process that leaves that group or a worker that signals the grader is not
stopped. The grader then still never writes a result it did not compute (see runner.py).
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from course.notebook import ExtractedCode
from grader.errors import WORKER_LOST, MissingFunction, StudentCrashed, StudentError
from grader.rpc import StudentObject, TrustedEndpoint

NAMESPACE_HANDLE = 0
WORKER_UIDS = range(40000, 60000)  # no account uses them; inside a user namespace's usual 65536
CLAIMS_FOLDER = Path(tempfile.gettempdir()) / "grader-worker-uids"  # one locked file per uid in use
FAILED_LOADS_BEFORE_GIVING_UP = 2


@dataclass(frozen=True)
class Limits:
    call_timeout: float = 10.0  # seconds per call into student code (a test may ask for more)
    load_timeout: float = 30.0  # seconds to run the notebook's definitions
    memory_bytes: int = 4 * 2**30  # address space a worker may add to what torch maps
    file_bytes: int = 64 * 2**20  # largest file a worker may write
    output_bytes: int = 2**20  # stdout + stderr kept per worker; the rest is dropped
    processes: int = 64  # processes and threads of the worker's uid (root only)
    cpu_seconds: int = 600  # CPU time per worker: a backstop behind the per-call deadlines
    message_bytes: int = 256 * 2**20  # largest message across the boundary


def running_as_root() -> bool:
    return os.geteuid() == 0


# ---------------------------------------------------------------- the worker's identity


@dataclass(frozen=True)
class WorkerUser:
    uid: int
    gid: int

    @classmethod
    @contextmanager
    def claim(cls):
        """A uid that no other grading holds, for as long as the `with` block; None unless root.

        The claim is an flock on a file named after the uid: the kernel drops it when the holder dies.
        """
        if not running_as_root():
            yield None
            return
        CLAIMS_FOLDER.mkdir(mode=0o700, exist_ok=True)
        start = os.getpid()
        for offset in range(len(WORKER_UIDS)):
            uid = WORKER_UIDS[(start + offset) % len(WORKER_UIDS)]
            fd = os.open(CLAIMS_FOLDER / str(uid), os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            user = cls(uid, uid)
            user.kill_all()  # a grading killed before it could clean up may have left processes of this uid
            if user.processes():  # still there: they could signal our workers; take another uid
                os.close(fd)
                continue
            try:
                yield user
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
            time.sleep(0.01)

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
        """The live (not zombie) processes of this uid."""
        found = []
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    status = Path(entry.path, "status").read_text()
                except OSError:
                    continue  # it just ended
                fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
                if int(fields["Uid"].split()[0]) == self.uid and not fields["State"].strip().startswith("Z"):
                    found.append(int(entry.name))
        return found


PRIVATE_STATE = Path(tempfile.gettempdir()) / "grader-private"  # root-only: which folders are closed, for whom


@contextmanager
def private(paths):
    """As root: close each existing folder (or file) of `paths` to group and others while the block
    runs, so a worker cannot read it, and give it back its own mode when the block ends (Ctrl-C too).

    Concurrent gradings share the folders: a locked state file records each path's original mode
    and who holds it closed (pid and start time); the mode comes back when the last holder leaves.
    A holder that died without leaving (SIGKILL) is dropped by the next grading that looks, so its
    folders are given back then. Not root: nothing to do (the worker has the grader's own rights).
    """
    if not running_as_root():
        yield
        return
    paths = sorted({str(Path(p).resolve()) for p in paths if Path(p).exists()})
    holder = _holder()
    with _private_state() as state:
        for path in paths:
            entry = state.setdefault(path, {"mode": stat.S_IMODE(os.stat(path).st_mode), "holders": []})
            entry["holders"].append(holder)
            os.chmod(path, entry["mode"] & 0o700)
    try:
        yield
    finally:
        with _private_state() as state:
            for path in paths:
                if path in state and holder in state[path]["holders"]:
                    state[path]["holders"].remove(holder)


def _holder() -> list:
    return [os.getpid(), _start_time(os.getpid())]


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


@contextmanager
def _private_state():
    """The state of closed folders, under an exclusive lock; saved on exit, after giving back the
    mode of every path that no live holder needs any more."""
    PRIVATE_STATE.mkdir(mode=0o700, exist_ok=True)
    with open(PRIVATE_STATE / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state_file = PRIVATE_STATE / "state.json"
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            state = {}
        try:
            yield state
        finally:
            for path in list(state):
                state[path]["holders"] = [h for h in state[path]["holders"] if h[1] is not None and _start_time(h[0]) == h[1]]
                if not state[path]["holders"]:
                    try:
                        os.chmod(path, state[path]["mode"])
                    except OSError:
                        pass  # gone meanwhile
                    del state[path]
            temporary = state_file.with_suffix(".tmp")
            temporary.write_text(json.dumps(state))
            os.replace(temporary, state_file)


# ---------------------------------------------------------------- the zygote


class Zygote:
    """A process that has imported torch and forks a fresh worker on request, in a few milliseconds."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="grader-zygote-"))  # 0700: only our user connects
        self.address = str(self.folder / "zygote.sock")
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        _warn_if_python_is_unreadable()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        if os.path.exists(self.address):
            os.unlink(self.address)
        listener.bind(self.address)
        listener.listen(64)
        with listener:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "grader.worker", str(listener.fileno())],
                pass_fds=[listener.fileno()],
                stdin=subprocess.PIPE,  # its end of file tells the zygote we are gone
                stdout=subprocess.DEVNULL,
                cwd=self.folder,
                env=_minimal_environment(),
                start_new_session=True,
            )

    def spawn(self, spec: dict) -> tuple[int, socket.socket]:
        """A new worker: its pid and our end of its connection. Restarts the zygote once if it died."""
        for attempt in range(2):
            try:
                return self._request(spec)
            except (OSError, ValueError, KeyError):
                if attempt or self.process.poll() is None and os.path.exists(self.address):
                    raise
                self.start()
        raise AssertionError("unreachable")

    def _request(self, spec: dict) -> tuple[int, socket.socket]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as connection:
            connection.settimeout(120)  # the first request waits for torch to import
            connection.connect(self.address)
            connection.send(json.dumps(spec).encode())
            message, fds, _, _ = socket.recv_fds(connection, 4096, 1)
            if len(fds) != 1:
                raise OSError("the zygote sent no connection")
            return json.loads(message)["pid"], socket.socket(fileno=fds[0])

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _warn_if_python_is_unreadable() -> None:
    """Tell the instructor when workers cannot import anything beyond what the zygote preloads."""
    import torch

    with WorkerUser.claim() as user:
        denied = user.cannot_read([os.path.dirname(os.__file__), os.path.dirname(torch.__file__)]) if user else []
    if denied:
        print(
            f"grader: warning: the unprivileged worker cannot read {denied[0]}, so student code can import only "
            "the modules the worker preloads (grader.worker.PRELOADED); make the Python installation readable to all",
            file=sys.stderr,
        )


def _minimal_environment() -> dict:
    """The zygote's environment, which every worker can read from its own memory: nothing secret."""
    keep = ("PATH", "LANG", "PYTHONPATH", "VIRTUAL_ENV")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    return env


# ---------------------------------------------------------------- one worker


class Worker:
    def __init__(self, zygote: Zygote, limits: Limits, user: WorkerUser | None):
        self.user = user
        self.workdir = Path(tempfile.mkdtemp(prefix="grader-student-"))
        if user is not None:
            os.chown(self.workdir, user.uid, user.gid)
        spec = {"workdir": str(self.workdir), "limits": asdict(limits)}
        if user is not None:
            spec.update(uid=user.uid, gid=user.gid)
        self.pid, sock = zygote.spawn(spec)
        try:  # the worker is not our child: only a pidfd tells whether its pid is still its own
            self.pidfd = os.pidfd_open(self.pid)
        except OSError:
            self.pidfd = None  # already gone
        self.endpoint = TrustedEndpoint(sock, limits.message_bytes, describe_crash=self.last_output)

    def last_output(self) -> str:
        """The last lines the worker printed, for a crash message ('MemoryError', 'Killed', ...)."""
        try:
            with open(self.workdir / "output.txt", "rb") as f:
                f.seek(max(f.seek(0, os.SEEK_END) - 400, 0))
                lines = f.read().decode("utf-8", "replace").strip().splitlines()
        except OSError:
            return ""
        return f"; its last output: {' | '.join(lines[-3:])}" if lines else ""

    def kill(self) -> None:
        """Kill the worker's process tree. Never by a pid that may have been reused: the zygote reaps a
        dead worker at once, and with a small pid_max (32768 here) another grading's new worker, a
        group leader too, can get its number; a killpg by a stale pid would kill that worker."""
        if self.user is not None:
            self.user.kill_all()  # every process of the uid: exactly this worker's tree
        elif self.pidfd is not None and not select.select([self.pidfd], [], [], 0)[0]:
            try:  # the leader is alive, so its pid is still its own, and so is its process group
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        self.endpoint.sock.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


# ---------------------------------------------------------------- a notebook's session


class StudentSession:
    """One notebook's code behind the boundary: loaded in a worker on first use, and re-loaded in a
    fresh worker after any call that timed out or killed it. A notebook that cannot be loaded twice
    in a row fails every later call at once, with the same reason."""

    def __init__(self, extracted: ExtractedCode, limits: Limits, zygote: Zygote, user: WorkerUser | None):
        self.statements = [asdict(s) for s in extracted.statements]
        self.limits = limits
        self.zygote = zygote
        self.user = user
        self.worker: Worker | None = None
        self.names: dict[str, bool] = {}  # name -> callable, as the last load reported
        self.problems: list[str] = []  # what went wrong while loading, for the report
        self.failed_loads = 0
        self.load_failure: str | None = None

    def endpoint(self) -> TrustedEndpoint:
        if self.worker is not None and self.worker.endpoint.lost is None:
            return self.worker.endpoint
        self._discard_worker()
        if self.failed_loads >= FAILED_LOADS_BEFORE_GIVING_UP:
            raise StudentCrashed(self.load_failure)
        self.worker = Worker(self.zygote, self.limits, self.user)
        try:
            report = self.worker.endpoint.call(
                "load", NAMESPACE_HANDLE, None, (self.statements,), label="loading the notebook", timeout=self.limits.load_timeout
            )
            self.names, self.problems = _check_load_report(report)
        except StudentError as error:
            self.failed_loads += 1
            self.load_failure = f"{error}, so none of its functions could be tested"
            self._discard_worker()
            raise StudentCrashed(self.load_failure) from None
        self.failed_loads = 0
        return self.worker.endpoint

    def lookup(self, name: str, timeout: float, check_arguments: bool = True):
        """What `student.NAME` gives: a callable proxy for a function or class, the data of a constant."""
        self.endpoint()
        if name not in self.names:
            raise MissingFunction(f"the notebook does not define `{name}`")
        if self.names[name]:
            return StudentFunction(self, name, timeout, check_arguments)
        return self._guarded(lambda endpoint: endpoint.call("getattr", NAMESPACE_HANDLE, name, label=name, timeout=timeout))

    def call(self, name: str, args, kwargs, timeout: float, check_arguments: bool = True):
        """Call NAME in the worker; unless `check_arguments` is False, a tensor argument modified in
        place raises StudentModifiedArgument."""
        result = self._guarded(
            lambda endpoint: endpoint.call(
                "invoke", NAMESPACE_HANDLE, name, args, kwargs, label=name, timeout=timeout, check_arguments=check_arguments
            )
        )
        if isinstance(result, StudentObject):
            result._timeout = timeout
            result._check_arguments = check_arguments
        return result

    def _guarded(self, action):
        try:
            return action(self.endpoint())
        except WORKER_LOST:
            self._discard_worker()
            raise

    def _discard_worker(self) -> None:
        if self.worker is not None:
            self.worker.kill()
            self.worker = None

    def close(self) -> None:
        self._discard_worker()


def _check_load_report(report) -> tuple[dict[str, bool], list[str]]:
    if type(report) is not dict or type(report.get("names")) is not dict or type(report.get("problems")) is not list:
        raise StudentCrashed("loading the notebook returned a malformed report")
    names = {str(k): bool(v) for k, v in report["names"].items()}
    return names, [str(p)[:300] for p in report["problems"][:100]]


class StudentFunction:
    """`student.greedy`: calls the notebook's function of that name in the current worker."""

    def __init__(self, session: StudentSession, name: str, timeout: float, check_arguments: bool = True):
        self._session = session
        self._name = name
        self._timeout = timeout
        self._check_arguments = check_arguments

    def __call__(self, *args, **kwargs):
        return self._session.call(self._name, args, kwargs, self._timeout, self._check_arguments)

    def __repr__(self) -> str:
        return f"<student function {self._name}>"
