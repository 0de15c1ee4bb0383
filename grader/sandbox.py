"""The trusted side of the process boundary: starting, loading, replacing and killing workers.

    zygote = Zygote()                                  # one per grading run or batch: imports torch once
    worker = Worker(zygote, limits, user, hidden)      # forked by the zygote, limited, as `user`
    worker.kill()                                      # its whole process tree

Who a worker runs as and its limits are in identity.py; a notebook's session over a worker (what the
tests call) is in session.py. Run as root, each worker also gets a view of the file system in which
the folders in `hidden` (the tests, the solutions, other students' notebooks) are empty (worker.py).
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
from dataclasses import asdict
from pathlib import Path

from grader.identity import Limits, WorkerUser
from grader.rpc import TrustedEndpoint

OUTPUT_TAIL_BYTES = 400


# ---------------------------------------------------------------- the zygote


class ZygoteAddress:
    """Where a zygote listens; what a grading process holds to ask it for workers."""

    def __init__(self, address: str):
        self.address = address

    def new_worker(self, limits: Limits, user: WorkerUser | None, hidden: tuple[str, ...]) -> Worker:
        """A worker forked by the zygote (what a StudentSession asks its workers for)."""
        return Worker(self, limits, user, hidden)

    def spawn(self, spec: dict) -> tuple[int, socket.socket]:
        """A new worker: its pid and our end of its connection."""
        message, fds = self._request({"role": "worker", **spec})
        if len(fds) != 1:
            raise OSError("the zygote sent no connection")
        return message["pid"], socket.socket(fileno=fds[0])

    def _request(self, spec: dict, fds: list[int] = ()) -> tuple[dict, list[int]]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as connection:
            connection.settimeout(120)  # the first request waits for torch to import
            connection.connect(self.address)
            socket.send_fds(connection, [json.dumps(spec).encode()], list(fds))
            message, received, _, _ = socket.recv_fds(connection, 4096, 1)
            return json.loads(message), received


class Zygote(ZygoteAddress):
    """A process that has imported torch and forks, in a few milliseconds, a fresh worker or a grading
    process on request. Neither is ever forked from a process that has run torch: OpenMP's thread pool
    does not survive fork, and a child of a process that ran a parallel op can hang in its first one."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="grader-zygote-"))  # 0700: only our user connects
        super().__init__(str(self.folder / "zygote.sock"))
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
                env={**_minimal_environment(), "MPLCONFIGDIR": str(self.folder)},
                start_new_session=True,
            )

    def _request(self, spec: dict, fds: list[int] = ()) -> tuple[dict, list[int]]:
        """Restarts the zygote once if it died."""
        for attempt in range(2):
            try:
                return super()._request(spec, fds)
            except (OSError, ValueError, KeyError):
                if attempt or self.process.poll() is None and os.path.exists(self.address):
                    raise
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
    def __init__(self, zygote: ZygoteAddress, limits: Limits, user: WorkerUser | None, hidden: tuple[str, ...] = ()):
        self.user = user
        self.workdir = Path(tempfile.mkdtemp(prefix="grader-student-"))
        if user is not None:
            os.chown(self.workdir, user.uid, user.gid)
        spec = {"workdir": str(self.workdir), "limits": asdict(limits), "hidden": list(hidden)}
        if user is not None:
            spec.update(uid=user.uid, gid=user.gid)
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
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        self.endpoint.sock.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
