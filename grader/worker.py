"""The worker side of the boundary: the only process where a student's code runs.

`python -m grader.worker FD` starts a zygote: it imports torch once, then serves requests on the socket
pair FD it was started with (the grader's) and on the pair each grading process is forked with (which may
ask for workers only). It has no address anyone could connect to. For each request it forks either a
grading process (`grader.runner.grading_process`: pytest and the tests, trusted, never a parent that ran
torch) or a worker, which

1. leaves the zygote's session and closes every file descriptor but its own connection,
2. enters namespaces of its own (grader/namespaces.py): it becomes process 1 of a PID namespace, with no
   network and a root folder holding only the allow-list (grader/isolation.py's `worker_view`), as root and
   as an ordinary user,
3. sets its resource limits (memory, file size, CPU time, no core dumps, and as root processes), gives
   up every privilege (no_new_privs; as root it drops to the unprivileged uid/gid it was given), and keeps
   its OOM score (it is not dumpable, and may never become so),
4. only then opens its work directory's capped output file (as itself: a link planted there leads
   nowhere it could not go anyway) and /dev/null as stdin,
5. serves the grader's requests (load the notebook's statements, call functions) until the
   connection closes; or, as a grading's probe, tries to open the paths it was given and reports which.

The zygote is started with a minimal environment and has never seen a test, an expected value or
another student's code, so there is nothing in a worker's memory to steal.
"""

from __future__ import annotations

import ctypes
import gc
import io
import json
import os
import select
import signal
import socket
import sys
import types

from grader.identity import limit_address_space

CONNECTION_FD = 3


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--plain"]:
        serve_plain()
        return
    _preload(WORKER_SETUP)  # a worker sets itself up with these after it can no longer read the kit's files
    from grader import isolation, namespaces

    control = socket.socket(fileno=int(argv[0]))
    os.mkdir("root", 0o700)  # where each worker builds its new root folder, in its own mount namespace only
    view = isolation.worker_view(os.path.abspath("root"))
    refused = namespaces.unavailable(view)
    control.sendall(json.dumps({"namespaces_refused": refused}).encode())  # the grader's first message from us
    os.environ["MPLBACKEND"] = "Agg"  # plots are never shown from a worker
    _preload(GRADING_NEEDS)
    sys.modules["torch"].set_num_threads(1)
    _zygote_loop(control, view if refused is None else None, to_preload=[*PRELOADED, *GRADING_PRELOADED])


WORKER_SETUP = ("resource", "grader.isolation", "grader.namespaces", "grader.seccomp")
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
    "tqdm", "course.model", "course.checkpoint", "course.notebook", "grader.rpc",
)  # fmt: skip


def _preload(modules) -> None:
    import importlib

    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:  # an optional library that is not installed: the notebook's import will say so
            pass


def _zygote_loop(control: socket.socket, view, to_preload: list[str]) -> None:
    """Serve requests; between them, import what workers preload. A grading process is forked at once
    (its tests collect while the rest loads); a worker only once everything is loaded.

    There is no address to connect to: requests come only on `control`, the socket the grader started us with,
    and on the channel each grading process was forked with, which asks for workers only. A worker holds
    neither, so nothing a student's code can reach can ask us for anything."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the workers
    gradings: list[socket.socket] = []
    while True:
        waiting = [control, sys.stdin, *gradings]
        readable, _, _ = select.select(waiting, [], [], 0 if to_preload else None)
        if sys.stdin in readable and not os.read(sys.stdin.fileno(), 1):
            return  # the grader that started us is gone
        for channel in (c for c in readable if c is not sys.stdin):
            if not _serve_request(channel, channel is control, gradings, view, to_preload):
                if channel is control:
                    return
                gradings.remove(channel)
                channel.close()
        if not readable and to_preload:
            _preload_more(to_preload, everything=False)


def _preload_more(to_preload: list[str], everything: bool) -> None:
    """Import the next module of `to_preload`, or all of them. Once none is left, what is loaded is frozen: never
    collected, so that the collections of a forked child skip it and leave its memory pages shared."""
    count = len(to_preload) if everything else 1
    _preload(to_preload[:count])
    del to_preload[:count]
    if not to_preload:
        gc.freeze()


def _serve_request(channel: socket.socket, from_grader: bool, gradings: list, view, to_preload: list[str]) -> bool:
    """One request: a grading process (from the grader only), or a worker; False when the channel has closed."""
    try:
        message, fds, _, _ = socket.recv_fds(channel, 65536, 1)
    except OSError:
        return False
    if not message:
        return False
    try:
        spec = json.loads(message)
    except ValueError:
        spec = None
    if from_grader and type(spec) is dict and spec.get("role") == "grading" and len(fds) == 1:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        child = os.fork()
        if child == 0:
            _become_grading_process(fds[0], theirs)
        os.close(fds[0])
        theirs.close()
        gradings.append(ours)
        channel.send(json.dumps({"pid": child}).encode())
        return True
    for fd in fds:
        os.close(fd)
    if type(spec) is not dict or spec.get("role") != "worker":
        channel.send(json.dumps({"error": "a request the zygote does not serve"}).encode())
        return True
    if to_preload:
        _preload_more(to_preload, everything=True)  # every worker starts with all of it
    ours, theirs = socket.socketpair()
    child = os.fork()
    if child == 0:
        try:
            ours.close()
            _become_worker(theirs, spec, view)
        except BaseException as error:  # before its output is captured: the grader's stderr is still ours
            print(f"grader: a worker could not be set up: {type(error).__name__}: {error}", file=sys.stderr)
        finally:
            os._exit(0)
    theirs.close()
    with ours:
        socket.send_fds(channel, [json.dumps({"pid": child}).encode()], [ours.fileno()])
    return True


def _become_grading_process(report_fd: int, workers: socket.socket) -> None:
    """The grading process: everything the zygote holds is closed but its report channel and its own channel for
    asking the zygote for workers."""
    status = 1
    try:
        keep = {report_fd, workers.fileno(), 0, 1, 2}
        for fd in os.listdir("/proc/self/fd"):
            if int(fd) not in keep:
                try:
                    os.close(int(fd))
                except OSError:
                    pass
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        from grader.runner import grading_process

        grading_process(report_fd, workers)
        status = 0
    finally:
        os._exit(status)


def _become_worker(connection: socket.socket, spec: dict, view) -> None:
    """A worker, or with spec["probe"], the probe of a grading (grader/isolation.py): set up alike, up to the
    last step, where the probe opens what it was given and reports what it could."""
    from grader import isolation, namespaces

    _be_killed_first()
    os.setsid()  # its own session and process group: the grader kills the whole tree at once
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the file-size limit fails instead of killing
    os.dup2(connection.detach(), CONNECTION_FD)
    os.closerange(CONNECTION_FD + 1, os.sysconf("SC_OPEN_MAX"))
    if view is not None:
        namespaces.enter_namespaces(view, spec["workdir"])  # from here on, in the worker's own namespaces
    _set_limits(spec["limits"], drop_to=spec.get("uid"))
    namespaces.drop_namespace_privileges(entered=view is not None)
    if spec.get("uid") is not None:
        os.setgroups([])
        os.setresgid(spec["gid"], spec["gid"], spec["gid"])
        os.setresuid(spec["uid"], spec["uid"], spec["uid"])
    _keep_the_oom_score()
    workdir = spec["workdir"] if view is None else namespaces.SCRATCH  # where the worker's view shows it
    os.chdir(workdir)
    _capture_output(spec["limits"]["output_bytes"])
    os.environ.clear()
    os.environ.update(HOME=workdir, TMPDIR=workdir, PATH="/usr/bin:/bin", LANG="C.UTF-8")
    connection = socket.socket(fileno=CONNECTION_FD)
    if spec.get("probe"):  # the paths come on the connection: a request to the zygote is at most 64 KiB
        with connection.makefile("rb") as paths:
            connection.sendall(json.dumps(isolation.probe(json.loads(paths.readline()))).encode() + b"\n")
        return
    _serve(connection, spec["limits"]["message_bytes"])


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


def _keep_the_oom_score() -> None:
    """Student code must not lower its OOM score. Raising it set no floor (that takes CAP_SYS_RESOURCE, which a
    container's root lacks), so what stops it is that /proc/self/oom_score_adj belongs to root while a process is
    not dumpable: the worker becomes so (root's drop to a uid made it so already), and may never become dumpable
    again (grader/seccomp.py)."""
    from grader import seccomp

    PR_SET_DUMPABLE = 4
    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    if seccomp.supported():
        seccomp.refuse([seccomp.Refusal("prctl", first_argument=PR_SET_DUMPABLE)])


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
