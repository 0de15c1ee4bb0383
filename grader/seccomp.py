"""System calls refused to a process and to everything it starts, by a seccomp filter (no privilege needed).

    refuse([Refusal("prctl", first_argument=PR_SET_DUMPABLE)])   # fails with EPERM from now on, in this process
                                                                  # and every process it starts; it cannot be undone

A filter is a short program of the kernel's BPF: it reads the call's number (and, for a `Refusal` that names one,
the low 32 bits of its first argument) and answers with an error or lets the call through. Workers use it to keep
what their set-up took away (grader/worker.py); the project's tests use it to stand in for a container that refuses
namespaces.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import sys
from dataclasses import dataclass

PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
LOAD, RETURN = 0x20, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_RET|BPF_K
JUMP_IF_EQUAL, JUMP_IF_AT_LEAST, JUMP_IF_ANY_BIT = 0x15, 0x35, 0x45  # BPF_JMP|BPF_K with JEQ, JGE, JSET
ALLOW, FAIL_WITH = 0x7FFF0000, 0x00050000  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | errno
ARCHITECTURE = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}  # AUDIT_ARCH_*, as seccomp_data.arch gives it
SYSTEM_CALLS = {
    "x86_64": {"prctl": 157, "unshare": 272, "setns": 308, "clone": 56, "clone3": 435},
    "aarch64": {"prctl": 167, "unshare": 97, "setns": 268, "clone": 220, "clone3": 435},
}
FIRST_ARGUMENT = 16 if sys.byteorder == "little" else 20  # offset of args[0]'s low half in struct seccomp_data
X32_CALLS = 0x40000000  # x86_64's x32 entry: the same architecture, the call's number with this bit set


@dataclass(frozen=True)
class Refusal:
    """`call` fails with `error`: always, or when its first argument equals `first_argument`, or has any bit of
    `first_argument_bits`."""

    call: str
    error: int = errno.EPERM
    first_argument: int | None = None
    first_argument_bits: int | None = None


class _Instruction(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Instruction))]


def supported() -> bool:
    return sys.platform == "linux" and platform.machine() in SYSTEM_CALLS


def program(refusals: list[Refusal]) -> list[tuple[int, int, int, int]]:
    """The filter's instructions: (code, jump if true, jump if false, constant), jumps counted from the next one."""
    numbers = SYSTEM_CALLS[platform.machine()]
    body: list[tuple[int, int, int, int]] = []
    for refusal in refusals:  # each block ends by falling through to the next block's first instruction
        answer = (RETURN, 0, 0, FAIL_WITH | refusal.error)
        if refusal.first_argument is None and refusal.first_argument_bits is None:
            block = [(LOAD, 0, 0, 0), (JUMP_IF_EQUAL, 0, 1, numbers[refusal.call]), answer]
        else:
            test = JUMP_IF_EQUAL if refusal.first_argument is not None else JUMP_IF_ANY_BIT
            value = refusal.first_argument if refusal.first_argument is not None else refusal.first_argument_bits
            block = [
                (LOAD, 0, 0, 0),
                (JUMP_IF_EQUAL, 0, 3, numbers[refusal.call]),
                (LOAD, 0, 0, FIRST_ARGUMENT),
                (test, 0, 1, value),
                answer,
            ]
        body += block
    # calls through another entry (32-bit, x32) have other numbers, which the blocks would not recognise: refused
    other_entry = (RETURN, 0, 0, FAIL_WITH | errno.ENOSYS)
    header = [
        (LOAD, 0, 0, 4),  # seccomp_data.arch
        (JUMP_IF_EQUAL, 1, 0, ARCHITECTURE[platform.machine()]),
        other_entry,
        (LOAD, 0, 0, 0),  # seccomp_data.nr
        (JUMP_IF_AT_LEAST, 0, 1, X32_CALLS),
        other_entry,
    ]
    return [*header, *body, (RETURN, 0, 0, ALLOW)]


def refuse(refusals: list[Refusal]) -> None:
    """Install the filter on this process (and, through inheritance, on everything it starts)."""
    libc = ctypes.CDLL(None, use_errno=True)
    rows = program(refusals)
    instructions = (_Instruction * len(rows))(*(_Instruction(*row) for row in rows))
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(_Program(len(rows), instructions)), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")
