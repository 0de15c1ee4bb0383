"""Which device runs the model, and in which precision.

`--device auto` takes an NVIDIA GPU (CUDA) when torch sees one, else an Apple-silicon GPU (MPS), else the CPU.
On CUDA the forward runs under autocast: bfloat16 where the GPU has it (Ampere and later), float16 elsewhere
(Colab's T4). float16 has a narrow range, so small gradients would underflow to zero: training then scales the
loss up before the backward and the gradients down before the step (`torch.amp.GradScaler`), skipping a step
whose gradients overflowed. MPS and the CPU compute in float32.
"""

from __future__ import annotations

import contextlib

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
