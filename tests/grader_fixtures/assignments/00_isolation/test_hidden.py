"""The isolation suite's assignment (tests/test_isolation.py): one test, which asks the student's `explore()` what a
worker can reach and passes only if that is nothing. It runs in the grading process, on the trusted side, so it can
tell which sockets are the grader's own: those its own process tree holds."""

import os


def _socket_inodes_of(pids) -> set[int]:
    inodes = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def _grader_processes() -> list[int]:
    """This grading process, the zygote that forked it and the grader that started the zygote."""
    pids = [os.getpid(), os.getppid()]
    with open(f"/proc/{os.getppid()}/status") as status:
        pids += [int(line.split()[1]) for line in status if line.startswith("PPid:")]
    return pids


def test_a_worker_reaches_no_secret_and_no_grader_socket(student):
    """a worker can open no secret and connect to no socket of the grader"""
    found = student.explore()
    assert found["secrets"] == [], f"the worker could open {found['secrets'][:5]}"
    grader_sockets = _socket_inodes_of(_grader_processes())
    reached = [socket for socket in found["sockets"] if socket["inode"] in grader_sockets]
    assert reached == [], f"the worker connected to the grader's sockets {reached}"
    assert found["walked"] > 0, "the worker saw no file at all: the walk itself failed"
