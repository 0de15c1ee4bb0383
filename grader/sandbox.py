"""The trusted side of the process boundary: starting, loading, replacing and killing workers.

    zygote = Zygote()                                  # one per grading run or batch: imports torch once
    worker = Worker(zygote, limits, user)              # forked by the zygote, limited, as `user`
    worker.kill()                                      # its whole process tree

Who a worker runs as and its limits are in identity.py; what it sees in isolation.py and namespaces.py; a
notebook's session over a worker (what the tests call) in session.py.
"""

from __future__ import annotations

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
import threading
from dataclasses import asdict
from pathlib import Path

from grader.errors import GraderError
from grader.identity import Limits, WorkerUser
from grader.rpc import TrustedEndpoint

OUTPUT_TAIL_BYTES = 400


# ---------------------------------------------------------------- the zygote


class ZygoteChannel:
    """A channel on which a zygote forks workers: the grader's own (`Zygote`), or the one a grading process was
    forked with. A socket pair, never an address: only the processes that were handed it can use it."""

    def __init__(self, sock: socket.socket, isolated: bool = True, namespaces_refused: str | None = None):
        self.sock = sock
        self.isolated = isolated  # whether workers get namespaces of their own (grader/namespaces.py)
        self.namespaces_refused = namespaces_refused  # the kernel's reason where they do not
        self.lock = threading.Lock()  # one request and its answer at a time (a batch's threads share the channel)

    def new_worker(self, limits: Limits, user: WorkerUser | None) -> Worker:
        """A worker forked by the zygote (what a StudentSession asks its workers for)."""
        return Worker(self, limits, user)

    def spawn(self, spec: dict) -> tuple[int, socket.socket]:
        """A new worker: its pid and our end of its connection."""
        message, fds = self._request({"role": "worker", **spec})
        if len(fds) != 1:
            raise OSError(f"the zygote sent no connection ({message.get('error', 'no reason given')})")
        return message["pid"], socket.socket(fileno=fds[0])

    def _request(self, spec: dict, fds: list[int] = ()) -> tuple[dict, list[int]]:
        with self.lock:
            self.sock.settimeout(120)  # the first request waits for torch to import
            socket.send_fds(self.sock, [json.dumps(spec).encode()], list(fds))
            message, received, _, _ = socket.recv_fds(self.sock, 4096, 1)
        if not message:
            raise OSError("the zygote has gone")
        return json.loads(message), received


class Zygote(ZygoteChannel):
    """A process that has imported torch and forks, in a few milliseconds, a fresh worker or a grading
    process on request. Neither is ever forked from a process that has run torch: OpenMP's thread pool
    does not survive fork, and a child of a process that ran a parallel op can hang in its first one."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="grader-zygote-"))  # 0700: its matplotlib cache, the workers' roots
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "grader.worker", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.PIPE,  # its end of file tells the zygote we are gone
                stdout=subprocess.DEVNULL,
                cwd=self.folder,
                env={**_minimal_environment(), "MPLCONFIGDIR": str(self.folder)},
                start_new_session=True,
            )
        ours.settimeout(120)
        try:
            hello = json.loads(ours.recv(4096) or b"null")
        except (OSError, ValueError):
            hello = None
        if type(hello) is not dict:
            ours.close()
            raise GraderError("the grader's worker process did not start (is torch installed for this Python?)")
        super().__init__(ours, hello["namespaces_refused"] is None, hello["namespaces_refused"])

    def _request(self, spec: dict, fds: list[int] = ()) -> tuple[dict, list[int]]:
        """Restarts the zygote once if it died."""
        for attempt in range(2):
            try:
                return super()._request(spec, fds)
            except (OSError, ValueError, KeyError):
                if attempt or self.process.poll() is None:
                    raise
                self.sock.close()
                self.start()
        raise AssertionError("unreachable")

    def start_grading(self, channel_fd: int) -> GradingProcess:
        """A grading process (grader.runner.grading_process) that reads its task from, and writes its
        reports to, the stream socket `channel_fd`."""
        message, _ = self._request({"role": "grading"}, [channel_fd])
        return GradingProcess(message["pid"])

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.sock.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _minimal_environment() -> dict:
    """The zygote's environment, which every worker can read from its own memory: nothing secret."""
    keep = ("PATH", "LANG", "PYTHONPATH", "VIRTUAL_ENV")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    return env


class GradingProcess:
    """A grading process: a child of the zygote, so not ours; a pidfd keeps its pid from being confused
    with a later process's."""

    def __init__(self, pid: int):
        self.pid = pid
        try:
            self.pidfd = os.pidfd_open(pid)
        except OSError:
            self.pidfd = None  # already gone

    def kill(self) -> None:
        if self.pidfd is not None:
            try:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def wait(self) -> None:
        """Until it has ended (its pidfd becomes readable)."""
        if self.pidfd is not None:
            select.select([self.pidfd], [], [])
            os.close(self.pidfd)
            self.pidfd = None


# ---------------------------------------------------------------- one worker


def last_output(workdir: Path) -> str:
    """The last lines a worker printed into its work directory's output file, for a crash message
    ('MemoryError', 'Killed', ...)."""
    no_follow = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)  # neither exists on Windows
    try:  # the worker made this file and may have replaced it: never follow a link, never block on a FIFO
        fd = os.open(workdir / "output.txt", os.O_RDONLY | no_follow)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        f.seek(max(f.seek(0, os.SEEK_END) - OUTPUT_TAIL_BYTES, 0))
        lines = f.read(OUTPUT_TAIL_BYTES).decode("utf-8", "replace").strip().splitlines()
    return f"; its last output: {' | '.join(lines[-3:])}" if lines else ""


class Worker:
    def __init__(self, zygote: ZygoteChannel, limits: Limits, user: WorkerUser | None, probe: bool = False):
        self.user = user
        self.workdir = Path(tempfile.mkdtemp(prefix="grader-student-"))
        if user is not None:
            os.chown(self.workdir, user.uid, user.gid)
        spec = {"workdir": str(self.workdir), "limits": asdict(limits)}
        if user is not None:
            spec.update(uid=user.uid, gid=user.gid)
        if probe:  # grader/isolation.py: a worker that only tries to open the paths it is sent
            spec["probe"] = True
        self.pid, sock = zygote.spawn(spec)
        try:  # the worker is not our child: only a pidfd tells whether its pid is still its own
            self.pidfd = os.pidfd_open(self.pid)
        except OSError:
            self.pidfd = None  # already gone
        self.endpoint = TrustedEndpoint(sock, limits.message_bytes, describe_crash=self.last_output)

    def last_output(self) -> str:
        return last_output(self.workdir)

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
        self.release()

    def release(self) -> None:
        """Let go of a worker that is ending on its own (a probe that has answered): our end of its connection,
        and its work directory. What is left of its uid's processes goes with the grading's claim."""
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        self.endpoint.sock.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
