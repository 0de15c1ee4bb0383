"""The worker side of the boundary: the only process where a student's code runs.

`python -m grader.worker FD` starts a zygote: it imports torch once, then waits on the listening
socket FD. For each request (from a process of the same user) it forks either a grading process
(`grader.runner.grading_process`: pytest and the tests, trusted, never a parent that ran torch) or
a worker, which

1. leaves the zygote's session and closes every file descriptor but its own connection,
2. enters namespaces of its own (grader/namespaces.py: it becomes process 1 of a PID namespace, with
   its own /proc, and sees the folders it was asked to hide, the tests, the solutions and a batch's
   other notebooks, as empty read-only tmpfs mounts), as root and as an ordinary user,
3. sets its resource limits (memory, file size, CPU time, no core dumps, and as root processes), gives
   up every privilege (no_new_privs; as root it drops to the unprivileged uid/gid it was given),
4. only then opens its work directory's capped output file (as itself: a link planted there leads
   nowhere it could not go anyway) and /dev/null as stdin,
5. serves the grader's requests (load the notebook's statements, call functions) until the
   connection closes.

The zygote is started with a minimal environment and has never seen a test, an expected value or
another student's code, so there is nothing in a worker's memory to steal.
"""

from __future__ import annotations

import gc
import io
import json
import os
import select
import signal
import socket
import struct
import sys
import types

from grader.identity import limit_address_space

CONNECTION_FD = 3


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--plain"]:
        serve_plain()
        return
    from grader import namespaces

    listener = socket.socket(fileno=int(argv[0]))
    missing = namespaces.unavailable()
    if missing:
        print(
            f"grader: warning: workers get no namespaces of their own here ({missing}): student code can see and "
            "signal the grader's other processes and read every folder its uid may read (grader/README.md)",
            file=sys.stderr,
        )
    os.environ["MPLBACKEND"] = "Agg"  # plots are never shown from a worker
    _preload(GRADING_NEEDS)
    sys.modules["torch"].set_num_threads(1)
    _zygote_loop(listener, isolated=missing is None, to_preload=[*PRELOADED, *GRADING_PRELOADED])


GRADING_NEEDS = ("torch", "pytest", "grader.runner")  # before the first grading process is forked
# torch.testing.assert_close imports torch.distributed.tensor (and sympy) on its first use: 2 s of every grading
# process's time unless the zygote has it already
GRADING_PRELOADED = ("torch.testing", "torch.distributed.tensor")
PRELOADED = (
    # what notebooks commonly import, imported once here instead of once per worker; also all a worker
    # can import when it may not read the Python installation (a Python under /root, run as root)
    "abc", "bisect", "collections", "contextlib", "copy", "dataclasses", "enum", "functools", "heapq",
    "itertools", "json", "math", "numbers", "operator", "random", "re", "statistics", "string", "textwrap",
    "time", "typing", "warnings", "numpy", "torch", "torch.nn", "torch.nn.functional", "matplotlib.pyplot",
    "tqdm", "course.model", "course.notebook", "grader.rpc",
)  # fmt: skip


def _preload(modules) -> None:
    import importlib

    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:  # an optional library that is not installed: the notebook's import will say so
            pass


def _zygote_loop(listener: socket.socket, isolated: bool, to_preload: list[str]) -> None:
    """Serve requests; between them, import what workers preload. A grading process is forked at once
    (its tests collect while the rest loads); a worker only once everything is loaded."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the workers
    while True:
        readable, _, _ = select.select([listener, sys.stdin], [], [], 0 if to_preload else None)
        if sys.stdin in readable and not os.read(sys.stdin.fileno(), 1):
            return  # the grader that started us is gone
        if listener in readable:
            connection, _ = listener.accept()
            with connection:
                _serve_spawn_request(listener, connection, isolated, to_preload)
        elif to_preload:
            _preload_more(to_preload, everything=False)


def _preload_more(to_preload: list[str], everything: bool) -> None:
    """Import the next module of `to_preload`, or all of them. Once none is left, what is loaded is frozen: never
    collected, so that the collections of a forked child skip it and leave its memory pages shared."""
    count = len(to_preload) if everything else 1
    _preload(to_preload[:count])
    del to_preload[:count]
    if not to_preload:
        gc.freeze()


def _serve_spawn_request(
    listener: socket.socket, connection: socket.socket, isolated: bool, to_preload: list[str]
) -> None:
    pid, uid, gid = struct.unpack("3i", connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    if uid != os.geteuid():
        return  # only the user who started the zygote may ask for workers
    connection.settimeout(5)
    try:
        message, fds, _, _ = socket.recv_fds(connection, 65536, 1)
        spec = json.loads(message)
    except (OSError, ValueError):
        return
    if spec.get("role") == "grading" and len(fds) == 1:
        child = os.fork()
        if child == 0:
            _become_grading_process(listener, connection, fds[0])
        os.close(fds[0])
        connection.send(json.dumps({"pid": child}).encode())
        return
    for fd in fds:
        os.close(fd)
    if to_preload:
        _preload_more(to_preload, everything=True)  # every worker starts with all of it
    ours, theirs = socket.socketpair()
    child = os.fork()
    if child == 0:
        try:
            listener.close()
            connection.close()
            ours.close()
            _become_worker(theirs, spec, isolated)
        finally:
            os._exit(0)
    theirs.close()
    with ours:
        socket.send_fds(connection, [json.dumps({"pid": child}).encode()], [ours.fileno()])


def _become_grading_process(listener: socket.socket, connection: socket.socket, channel_fd: int) -> None:
    status = 1
    try:
        listener.close()
        connection.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        from grader.runner import grading_process

        grading_process(channel_fd)
        status = 0
    finally:
        os._exit(status)


def _become_worker(connection: socket.socket, spec: dict, isolated: bool) -> None:
    from grader import namespaces

    _be_killed_first()
    os.setsid()  # its own session and process group: the grader kills the whole tree at once
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the file-size limit fails instead of killing
    os.dup2(connection.detach(), CONNECTION_FD)
    os.closerange(CONNECTION_FD + 1, os.sysconf("SC_OPEN_MAX"))
    if isolated:
        namespaces.enter_namespaces(spec["hidden"])  # from here on, in the worker's own namespaces
    _set_limits(spec["limits"], drop_to=spec.get("uid"))
    namespaces.drop_namespace_privileges(entered=isolated)
    if spec.get("uid") is not None:
        os.setgroups([])
        os.setresgid(spec["gid"], spec["gid"], spec["gid"])
        os.setresuid(spec["uid"], spec["uid"], spec["uid"])
    os.chdir(spec["workdir"])
    _capture_output(spec["limits"]["output_bytes"])
    os.environ.clear()
    os.environ.update(HOME=spec["workdir"], TMPDIR=spec["workdir"], PATH="/usr/bin:/bin", LANG="C.UTF-8")
    _serve(socket.socket(fileno=CONNECTION_FD), spec["limits"]["message_bytes"])


def serve_plain() -> None:
    """A worker of the plain self-check (grader/plain.py), where the sandbox cannot run: the student's own
    code on their own machine, so no namespaces, limits or other uid, only the same protocol and output cap.

    Its task comes as one JSON line on stdin: the work directory, the limits, and the loopback port and
    token with which it connects back to the grader once it has imported what workers preload."""
    spec = json.loads(sys.stdin.buffer.readline())
    os.environ["MPLBACKEND"] = "Agg"
    _preload(PRELOADED)
    connection = socket.create_connection(("127.0.0.1", spec["port"]))
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a call's small messages go at once
    connection.sendall(spec["token"].encode() + b"\n")
    os.chdir(spec["workdir"])
    _capture_output(spec["limits"]["output_bytes"])
    _serve(connection, spec["limits"]["message_bytes"])


def _capture_output(output_bytes: int) -> None:
    """stdin from /dev/null; stdout and stderr into output.txt of the current folder, capped at `output_bytes`."""
    no_follow = getattr(os, "O_NOFOLLOW", 0)  # Windows has no links to follow here
    output = os.open("output.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL | no_follow | os.O_APPEND, 0o600)
    stdin = os.open(os.devnull, os.O_RDONLY)
    for fd, target in ((stdin, 0), (output, 1), (output, 2)):
        os.dup2(fd, target)
    os.close(stdin)
    os.close(output)
    budget = CappedOutput.Budget(output_bytes)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout, sys.stderr = CappedOutput(1, budget), CappedOutput(2, budget)


def _be_killed_first() -> None:
    """The highest OOM score: when memory runs out (a container's limit), the kernel kills student code first,
    never the grader. Every process the worker starts inherits it; raising one's own score needs no privilege."""
    try:
        with open("/proc/self/oom_score_adj", "w") as score:
            score.write("1000")
    except OSError:
        pass  # no /proc: no OOM killer to steer


def _set_limits(limits: dict, drop_to: int | None) -> None:
    import resource

    limit_address_space(limits["memory_bytes"])  # torch's own mappings come on top of the budget
    for limit, value in (
        (resource.RLIMIT_FSIZE, limits["file_bytes"]),
        (resource.RLIMIT_CPU, limits["cpu_seconds"]),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(limit, (value, value))
    if drop_to is not None:  # counted per user: meaningful only for a uid of its own
        resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))


class CappedOutput(io.TextIOBase):
    """sys.stdout/stderr of the worker: writes go to the output file until the shared budget is spent,
    then are dropped, so a gigabyte of prints fills neither memory, nor disk, nor a pipe."""

    class Budget:
        def __init__(self, remaining: int):
            self.remaining = remaining

    def __init__(self, fd: int, budget: Budget):
        self.fd = fd
        self.budget = budget

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self.budget.remaining > 0:
            data = text.encode("utf-8", "replace")[: self.budget.remaining]
            self.budget.remaining -= len(data)
            if self.budget.remaining <= 0:
                data += b"\n[output truncated]\n"
            try:
                os.write(self.fd, data)
            except OSError:
                self.budget.remaining = 0
        return len(text)


def _serve(connection: socket.socket, max_bytes: int) -> None:
    from grader import rpc, wire

    student = types.ModuleType("submission")
    endpoint = rpc.WorkerEndpoint(connection, student, lambda statements: _load(student, statements), max_bytes)
    try:
        endpoint.serve_forever()
    except wire.WireError:
        pass  # the grader closed the connection or broke the protocol: nothing left to do


def _load(student: types.ModuleType, statements: list) -> dict:
    """Run the notebook's kept statements; report the names they define and the problems met."""
    from course.notebook import ExtractedCode, Statement, run_code

    _, problems = run_code(ExtractedCode([Statement(**s) for s in statements]), student.__dict__)
    names = {name: callable(value) for name, value in vars(student).items() if not name.startswith("__")}
    return {"names": names, "problems": problems}


if __name__ == "__main__":
    main()
