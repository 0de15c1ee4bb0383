"""Which device runs the model, and in which precision.

`--device auto` takes an NVIDIA GPU (CUDA) when torch sees one, else an Apple-silicon GPU (MPS), else the CPU.
On CUDA the forward runs under autocast: bfloat16 where the GPU has it (Ampere and later), float16 elsewhere
(Colab's T4). float16 has a narrow range, so small gradients would underflow to zero: training then scales the
loss up before the backward and the gradients down before the step (`torch.amp.GradScaler`), skipping a step
whose gradients overflowed. MPS and the CPU compute in float32.

On the CPU, training takes as many threads as the cores the rest of the machine leaves free (`CpuThreads`), and
looks again every few seconds: a thread more than the free cores only spins.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from course.errors import UserError

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


def mps_available() -> bool:
    return torch.backends.mps.is_available()


def resolve_device(name: str) -> torch.device:
    """The device `--device NAME` asks for; a user error when it is unknown or not on this machine."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but torch sees no CUDA GPU (use --device auto or cpu)")
    if name == "mps" and not mps_available():
        raise UserError("--device mps was asked for but torch sees no Apple-silicon GPU (use --device auto or cpu)")
    if name not in DEVICE_CHOICES:
        raise UserError(f"--device must be one of {', '.join(DEVICE_CHOICES)}, got {name!r}")
    return torch.device(name)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The half precision the forward runs in on `device`, or None for float32."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None = None):
    """The context the forward runs in: autocast to `dtype` (default: `autocast_dtype(device)`), or nothing."""
    dtype = dtype or autocast_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """Loss scaling for float16 training; a scaler that changes nothing for every other precision."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


# ---------------------------------------------------------------- threads on a shared CPU

CPU_SAMPLE_SECONDS = 0.3  # the first look at the machine, before training starts
CPU_CHECK_SECONDS = 5.0  # then a look every so often


def usable_cores() -> int:
    """The cores this process may run on: its affinity, within a cgroup's CPU quota (a container's)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_cpu_quota()
    return max(1, min(cores, math.floor(quota)) if quota else cores)


def _cgroup_cpu_quota() -> float | None:
    for path, parse in (
        ("/sys/fs/cgroup/cpu.max", lambda text: text.split()),
        ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", None),
    ):
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        if parse is not None:
            quota, period = parse(text)
        else:
            quota, period = text.strip(), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text().strip()
        if quota not in ("max", "-1") and float(period) > 0:
            return float(quota) / float(period)
    return None


@dataclass(frozen=True)
class CpuSample:
    """A moment's account: the machine's busy CPU seconds over all its cores (/proc/stat), this process's own."""

    wall: float
    machine_busy: float
    own: float

    @classmethod
    def now(cls) -> CpuSample | None:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None  # not Linux: no account to keep
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle and waiting for I/O
        busy = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # user .. steal; guest time is within user
        times = os.times()
        return cls(time.monotonic(), busy, times.user + times.system)


def threads_for(before: CpuSample, after: CpuSample, cores: int, cap: int) -> int:
    """As many threads as the cores that the machine's other work left idle between the samples, 1 to `cap`.

    A thread more than the free cores only waits: OpenMP's threads spin while they wait for each other, so on a
    2-core machine with one core busy elsewhere two threads are several times slower than one."""
    wall = after.wall - before.wall
    if wall <= 0:
        return cap
    others = max(0.0, (after.machine_busy - before.machine_busy) - (after.own - before.own)) / wall
    return max(1, min(cap, math.floor(cores - others + 0.25)))


class CpuThreads:
    """Torch's threads for training on the CPU, following what the rest of the machine leaves free.

    threads = CpuThreads(cap=2)   # looks at the machine for CPU_SAMPLE_SECONDS and sets torch's threads
    threads.adjust()              # every step: every CPU_CHECK_SECONDS, sets them again if they should change
    """

    def __init__(self, cap: int):
        self.cores = usable_cores()
        self.cap = min(cap, self.cores) if cap else self.cores
        self.last = CpuSample.now()
        self.threads = self.cap
        if self.last is not None and self.cap > 1:
            time.sleep(CPU_SAMPLE_SECONDS)
            self._set(self._measure())
        else:
            torch.set_num_threads(self.cap)

    def adjust(self) -> bool:
        """True when the threads changed."""
        if self.last is None or self.cap == 1 or time.monotonic() - self.last.wall < CPU_CHECK_SECONDS:
            return False
        before = self.threads
        self._set(self._measure())
        return self.threads != before

    def _measure(self) -> int:
        now = CpuSample.now()
        threads = threads_for(self.last, now, self.cores, self.cap)
        self.last = now
        return threads

    def _set(self, threads: int) -> None:
        self.threads = threads
        torch.set_num_threads(threads)
