"""A worker's own view of the machine, built from Linux namespaces (no root needed).

    reason = unavailable()                 # once, in the zygote: None where the kernel allows it all
    enter_namespaces(hidden_folders)       # in each forked worker, before any student code:
                                           # it is now process 1 of a PID namespace of its own

What each namespace closes, as root and as an ordinary user alike:
- PID: the worker is process 1 of a namespace of its own, and the parent it was forked as stays outside,
  waiting for it. Processes inside can neither see nor signal nor trace anything outside (a fresh /proc
  shows only them), and when process 1 dies, or its parent outside is killed, the kernel kills every
  process inside: a detached grandchild, a process whose main thread has exited, a fork bomb.
- mount: each folder to hide (the tests, the solutions, a batch's other notebooks) is an empty read-only
  tmpfs in the worker's view, whatever its mode; nobody else sees a change.
- user (only when not root, since an ordinary user may create the two above only inside one): the worker
  keeps its own uid; the capabilities the new namespace gives are dropped again by entering a second,
  nested one, so the student's code cannot undo the mounts.

Where the kernel refuses (a container that forbids unprivileged namespaces, a distribution that lets an
ordinary user create them but not mount in them), `unavailable()` says why: workers then run without
them, and the grader prints that reason once (grader/README.md says what it leaves open).
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import signal

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID = 0x00020000, 0x10000000, 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 1 << 14, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _unshare(flags: int) -> None:
    """unshare(2); as an ordinary user, inside a new user namespace that maps our own uid and gid."""
    uid, gid = os.geteuid(), os.getegid()
    if uid != 0:
        flags |= CLONE_NEWUSER
    _check(_libc.unshare(flags), "unshare")
    if uid != 0:
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)


def unavailable() -> str | None:
    """Why workers cannot have namespaces here, or None when they can: everything a worker does, tried
    in a throwaway child (some kernels let an ordinary user create a namespace but not mount in it)."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(read_end)
            _unshare(CLONE_NEWNS | CLONE_NEWPID)
            inner = os.fork()  # process 1 of the new PID namespace
            if inner == 0:
                try:
                    _private_view([])
                    drop_namespace_privileges(entered=True)
                except OSError as error:
                    os.write(write_end, str(error).encode()[:300])
                finally:
                    os._exit(0)
            os.waitpid(inner, 0)
        except OSError as error:
            os.write(write_end, str(error).encode()[:300])
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        reason = pipe.read().decode()
    os.waitpid(child, 0)
    return reason or None


def enter_namespaces(hidden: list[str]) -> None:
    """Make this process the parent of a worker in namespaces of its own, and return in that worker
    (only where `unavailable()` found none missing).

    The parent stays outside: it waits for the worker and exits with it (never returns), and the worker is
    killed when the parent dies."""
    _unshare(CLONE_NEWNS | CLONE_NEWPID)
    alive_read, alive_write = os.pipe()  # closed when the parent dies: how the worker knows it lost the race
    worker = os.fork()
    if worker != 0:
        os.close(alive_read)
        for fd in range(3, os.sysconf("SC_OPEN_MAX")):  # the worker alone holds the connection
            if fd != alive_write:
                try:
                    os.close(fd)
                except OSError:
                    pass
        os.waitpid(worker, 0)
        os._exit(0)
    os.close(alive_write)
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
    if select.select([alive_read], [], [], 0)[0]:  # the parent died before the line above: nobody would kill us
        os._exit(0)
    os.close(alive_read)
    os.setsid()  # a process group without the parent: killpg(0) from inside must not reach it
    _private_view(hidden)


def _private_view(hidden: list[str]) -> None:
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "making the worker's mounts private")
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    _check(_libc.mount(b"proc", b"/proc", b"proc", flags, None), "mounting the worker's own /proc")
    for folder in hidden:
        if _libc.mount(b"grader-hidden", os.fsencode(folder), b"tmpfs", flags | MS_RDONLY, b"size=4k,mode=000") != 0:
            code = ctypes.get_errno()
            if code != errno.ENOENT:
                raise OSError(code, f"cannot hide {folder} from the worker: {os.strerror(code)}")


def drop_namespace_privileges(entered: bool) -> None:
    """After the limits are set, before student code: no way back to any privilege.

    Root then drops to the worker's uid, which clears every capability. An ordinary user that `entered`
    namespaces holds every capability in the user namespace it made, which would let student code unmount
    the hiding tmpfs: a nested user namespace leaves them behind (capabilities never reach a parent
    namespace, and the mounts it inherits are locked). Either way, no exec can gain privileges afterwards."""
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    if entered and os.geteuid() != 0:
        _unshare(0)
