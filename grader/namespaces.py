"""A worker's own machine, built from Linux namespaces (no root needed): it sees an allow-list, nothing else.

    reason = unavailable(view)                   # once, in the zygote: None where the kernel allows it all
    enter_namespaces(view, workdir)              # in each forked worker, before any student code:
                                                 # it is now process 1 of namespaces of its own

`view` (grader/isolation.py's `worker_view`, computed by the trusted side) lists what a worker may see: the
Python installation and the system's libraries, the kit's importable modules, a few device files; all read-only.
Its own work directory is the only place it may write. Everything else of the machine (the kit's tests,
solutions and history, the temporary folder with the grader's private copies, /run, the home folders) is not
hidden: it is absent, because the worker's root folder is a new, empty one into which only the view is mounted.

What each namespace closes, as root and as an ordinary user alike:
- mount: the new root (`pivot_root`), with the old one detached, so no path leads out of the view.
- PID: the worker is process 1 of a namespace of its own, and the parent it was forked as stays outside,
  waiting for it. Processes inside can neither see nor signal nor trace anything outside (a fresh /proc
  shows only them), and when process 1 dies, or its parent outside is killed, the kernel kills every
  process inside: a detached grandchild, a process whose main thread has exited, a fork bomb.
- network: no interface but a loopback that is down, so no socket of the machine (TCP on loopback, or the
  abstract Unix sockets, which no folder holds) can be reached.
- IPC: no System V shared memory or message queue shared with another worker.
- user (only when not root, since an ordinary user may create the others only inside one): the worker
  keeps its own uid; the capabilities the new namespace gives are dropped again by entering a second,
  nested one, so the student's code cannot undo the mounts.

Where the kernel refuses any of it (a container that forbids namespaces, as Docker's default profile does),
`unavailable()` says why: workers then run without them, and the grader, before grading for marks, proves
that they still cannot read a secret (grader/isolation.py) or refuses.
"""

from __future__ import annotations

import ctypes
import os
import platform
import select
import signal
from dataclasses import dataclass

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = (
    0x00020000,
    0x08000000,
    0x10000000,
    0x20000000,
    0x40000000,
)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 1 << 14, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME, MS_STRICTATIME = 1024, 2048, 1 << 21, 1 << 24
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
# statvfs's flags of a mount, and the mount flags that keep them: a remount inside a user namespace must keep
# every flag the mount was locked with, or the kernel refuses it
ST_TO_MS = {
    1: MS_RDONLY,
    2: MS_NOSUID,
    4: MS_NODEV,
    8: MS_NOEXEC,
    1024: MS_NOATIME,
    2048: MS_NODIRATIME,
    4096: MS_RELATIME,
}
NAMESPACES = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
DEVICE_LINKS = {"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0", "/dev/stdout": "/proc/self/fd/1",
                "/dev/stderr": "/proc/self/fd/2"}  # fmt: skip
SCRATCH = "/scratch"  # where a worker finds its work directory, its only writable folder

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]


@dataclass(frozen=True)
class View:
    """What a worker sees: `root`, the skeleton of its root folder (folders, mount points, copies of the kit's modules
    and of a few system files, links, made once by the trusted side: grader/isolation.py), and `mounted`, the files
    and folders mounted read-only into it at their own paths. The worker's work directory appears as SCRATCH."""

    root: str
    mounted: tuple[str, ...]


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


def unavailable(view: View) -> str | None:
    """Why workers cannot have namespaces here, or None when they can: everything a worker does, tried
    in a throwaway child (some kernels let an ordinary user create a namespace but not mount in it)."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(read_end)
            _unshare(NAMESPACES)
            inner = os.fork()  # process 1 of the new PID namespace
            if inner == 0:
                try:
                    _new_root(view, workdir=None)
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


def enter_namespaces(view: View, workdir: str) -> None:
    """Make this process the parent of a worker in namespaces of its own, and return in that worker
    (only where `unavailable()` found none missing), whose root folder then holds `view` and `workdir`.

    The parent stays outside: it waits for the worker and exits with it (never returns), and the worker is
    killed when the parent dies."""
    _unshare(NAMESPACES)
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
    _new_root(view, workdir)


def _new_root(view: View, workdir: str | None) -> None:
    """Make the skeleton `view.root`, with what is mounted into it, the root folder; the old one is detached."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing done here reaches the machine's mounts
    root = view.root
    _mount(root, root, None, MS_BIND)  # a mount point of its own, as pivot_root wants
    for path in (*view.mounted, *DEVICES):
        _bind(path, root + path, MS_RDONLY)
    if workdir is not None:
        _bind(workdir, root + SCRATCH, MS_NOEXEC)  # the only place the worker may write
    _mount(b"proc", root + "/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)  # this PID namespace's processes
    _bind(root, root, MS_RDONLY, already_mounted=True)
    os.chdir(root)
    number = SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(0, f"pivot_root: no system call number known for {platform.machine()}")
    _check(_libc.syscall(number, b".", b"."), "pivot_root")  # the old root now lies under the new one...
    _check(_libc.umount2(b".", MNT_DETACH), "detaching the old root")  # ...and is gone
    os.chdir("/")


def _mount(source, target, kind, flags: int, data=None) -> None:
    def encode(value):
        return value if value is None or isinstance(value, bytes) else os.fsencode(value)

    _check(_libc.mount(encode(source), encode(target), encode(kind), flags, encode(data)), f"mount {target}")


def _bind(source: str, target: str, extra_flags: int, already_mounted: bool = False) -> None:
    """Mount `source` (a file or a folder) at `target`, its mount point in the skeleton, then remount it with
    `extra_flags`, no set-uid and no device files (but for /dev's), keeping the flags its own mount is locked with."""
    if not already_mounted:
        _mount(source, target, None, MS_BIND)
    locked = os.statvfs(source).f_flag
    flags = MS_NOSUID | extra_flags | sum(ms for st, ms in ST_TO_MS.items() if locked & st)
    if source.startswith("/dev/"):
        flags &= ~MS_NODEV
    else:
        flags |= MS_NODEV
    _mount(None, target, None, MS_REMOUNT | MS_BIND | flags)


def drop_namespace_privileges(entered: bool) -> None:
    """After the limits are set, before student code: no way back to any privilege.

    Root then drops to the worker's uid, which clears every capability. An ordinary user that `entered`
    namespaces holds every capability in the user namespace it made, which would let student code unmount
    what it was given or mount what it was not: a nested user namespace leaves them behind (capabilities never
    reach a parent namespace, and the mounts it inherits are locked). Either way, no exec can gain privileges
    afterwards."""
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    if entered and os.geteuid() != 0:
        _unshare(0)
