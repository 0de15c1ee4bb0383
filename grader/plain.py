"""The self-check where the sandbox cannot run: Windows, macOS, or a Python without what it needs.

    reason = sandbox_unavailable()       # None on Linux with fork, send_fds, pidfds and `resource`
    workers = PlainWorkers()             # what a StudentSession asks for workers, like a zygote
    worker = workers.new_worker(limits, None)
    worker.kill()

The sandbox (sandbox.py, worker.py) forks workers from a zygote, passes sockets between processes and
limits them with `resource`; Windows has none of these, and on macOS forking a process that has loaded
torch is unsafe. There `check(...)` and `grader check` grade the same visible tests with the same
report, and only the process model differs: each worker is a new interpreter, spawned (never forked),
that connects back over loopback with a one-time token and then speaks the same protocol (rpc.py) as
a sandboxed worker; the tests run in the grading process itself (runner.py). The same per-call time
limits hold: a call past its deadline kills the worker. It is the student's own code on their own
machine, so there is no privilege drop, no namespace and no memory limit. Grading for marks
(`grader grade`, `grader batch`, Gradescope) needs the sandbox: Linux.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from grader.errors import GraderError
from grader.identity import Limits
from grader.rpc import TrustedEndpoint
from grader.sandbox import last_output

START_TIMEOUT = 120.0  # seconds for a new interpreter to import torch and connect back
TOKEN_BYTES = 32


def sandbox_unavailable() -> str | None:
    """Why the sandbox cannot run on this machine, or None where it can."""
    if sys.platform != "linux":
        return f"the sandbox needs Linux, and this is {sys.platform}"
    missing = [f"os.{name}" for name in ("fork", "setsid", "killpg", "pidfd_open") if not hasattr(os, name)]
    missing += [f"socket.{name}" for name in ("send_fds", "recv_fds") if not hasattr(socket, name)]
    if importlib.util.find_spec("resource") is None:
        missing.append("the resource module")
    return f"this Python has no {', '.join(missing)}" if missing else None


def require_sandbox() -> None:
    """Grading for marks runs student code only in the sandbox: refuse in one line where it cannot run."""
    reason = sandbox_unavailable()
    if reason is not None:
        raise GraderError(
            f"grading needs Linux, as on Gradescope ({reason}); `grader check NAME --notebook PATH` runs the "
            "visible tests here"
        )


class PlainWorker:
    """A worker in a new interpreter of its own. It starts importing at once; `connect` waits for it."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.workdir = Path(tempfile.mkdtemp(prefix="grader-student-"))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.token = secrets.token_hex(TOKEN_BYTES)
        self.endpoint: TrustedEndpoint | None = None
        self.process = subprocess.Popen(
            [sys.executable, "-m", "grader.worker", "--plain"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.workdir,
            **_own_process_group(),
        )
        task = {"workdir": str(self.workdir), "limits": asdict(limits), "port": self.listener.getsockname()[1]}
        try:
            self.process.stdin.write(json.dumps({**task, "token": self.token}).encode() + b"\n")
            self.process.stdin.close()
        except OSError:
            pass  # it died at once: `connect` says so

    def connect(self) -> TrustedEndpoint:
        """Wait until the worker has started and connected back with its token; its endpoint."""
        deadline = time.monotonic() + START_TIMEOUT
        with self.listener:
            while self.process.poll() is None and time.monotonic() < deadline:
                self.listener.settimeout(min(max(deadline - time.monotonic(), 0.001), 1.0))
                try:
                    connection, _ = self.listener.accept()
                except TimeoutError:
                    continue
                if self._presents_token(connection):
                    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self.endpoint = TrustedEndpoint(connection, self.limits.message_bytes, self.last_output)
                    return self.endpoint
                connection.close()  # some other local process: not our worker
        self.kill()
        raise OSError(f"the worker process did not start{last_output(self.workdir)}")

    def _presents_token(self, connection: socket.socket) -> bool:
        connection.settimeout(5)
        expected = self.token.encode() + b"\n"
        received = b""
        try:
            while len(received) < len(expected):
                chunk = connection.recv(len(expected) - len(received))
                if not chunk:
                    return False
                received += chunk
        except OSError:
            return False
        connection.settimeout(None)
        return secrets.compare_digest(received, expected)

    def alive(self) -> bool:
        return self.process.poll() is None

    def serves(self, limits: Limits) -> bool:
        """Whether it was started with what `limits` asks of a worker (the time limits are the grader's)."""
        return (limits.output_bytes, limits.message_bytes) == (self.limits.output_bytes, self.limits.message_bytes)

    def last_output(self) -> str:
        return last_output(self.workdir)

    def kill(self) -> None:
        """Kill the worker (on POSIX its whole process group: what the student's code started with it)."""
        if self.process.poll() is None:
            if hasattr(os, "killpg"):
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except OSError:
                    self.process.kill()
            else:
                self.process.kill()
        self.process.wait()
        self.listener.close()
        if self.endpoint is not None:
            self.endpoint.sock.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _own_process_group() -> dict:
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}  # setsid in the child, by subprocess's C code: no os.setsid needed


class PlainWorkers:
    """Where a plain self-check's workers come from. With `spare`, one more worker is always starting, so that
    the next one (the next check, or the replacement of a worker that timed out) need not wait for torch to
    import; a spare has never run any student code, so it cannot carry one check's code into another."""

    def __init__(self, spare: bool = False):
        self.keep_spare = spare
        self.spare = PlainWorker(Limits()) if spare else None

    def new_worker(self, limits: Limits, user=None) -> PlainWorker:
        """A started worker (`user` is the sandbox's: there is none here)."""
        worker, self.spare = self.spare, None
        if worker is not None and not (worker.alive() and worker.serves(limits)):
            worker.kill()
            worker = None
        if worker is None:
            worker = PlainWorker(limits)
        if self.keep_spare:
            self.spare = PlainWorker(limits)
        worker.connect()
        return worker

    def close(self) -> None:
        if self.spare is not None:
            self.spare.kill()
            self.spare = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
