"""Device choice and precision: what `--device auto` picks, and float16 training with loss scaling.

No CUDA or Apple GPU is on the test machine, so what torch sees is stubbed; the float16 path itself runs for
real on the CPU (autocast to float16 and a gradient scaler work there too).
"""

from __future__ import annotations

import pytest
import torch

import course.train
from course import device as devices
from course.checkpoint import load_train_state
from course.errors import UserError
from course.train import train
from test_train import small_config, small_data  # noqa: F401  (a fixture)


def machine(monkeypatch, cuda: bool = False, mps: bool = False, bf16: bool = True) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    monkeypatch.setattr(devices, "mps_available", lambda: mps)


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_takes_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    machine(monkeypatch, cuda=cuda, mps=mps)
    assert devices.resolve_device("auto") == torch.device(expected)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("cuda", "--device cuda was asked for but torch sees no CUDA GPU (use --device auto or cpu)"),
        ("mps", "--device mps was asked for but torch sees no Apple-silicon GPU (use --device auto or cpu)"),
        ("tpu", "--device must be one of auto, cuda, mps, cpu, got 'tpu'"),
    ],
)
def test_a_device_that_is_not_there_is_a_user_error(monkeypatch, name, message):
    machine(monkeypatch)
    with pytest.raises(UserError) as error:
        devices.resolve_device(name)
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("kind", "bf16", "expected"),
    [("cuda", True, torch.bfloat16), ("cuda", False, torch.float16), ("mps", True, None), ("cpu", True, None)],
)
def test_half_precision_is_bf16_where_the_gpu_has_it_else_fp16_on_cuda(monkeypatch, kind, bf16, expected):
    """An A100 or H100 has bfloat16; Colab's T4 has only float16; MPS and the CPU stay in float32."""
    machine(monkeypatch, cuda=True, bf16=bf16)
    assert devices.autocast_dtype(torch.device(kind)) == expected
    assert devices.grad_scaler(torch.device("cpu"), expected).is_enabled() == (expected == torch.float16)


def test_float16_training_scales_the_loss_and_resumes_with_the_scale(tmp_path, small_data, monkeypatch):  # noqa: F811
    """As on a T4: the forward in float16 under a gradient scaler; the loss still falls, and the scale travels
    in the checkpoint so that a resumed run goes on with it."""
    for module in (devices, course.train):
        monkeypatch.setattr(module, "autocast_dtype", lambda device: torch.float16)
    forwards = []
    result = train(small_config(tmp_path / "fp16"), data=small_data)
    original_forward = type(result.model).forward

    def spying_forward(model, *args, **kwargs):
        if model.training:
            forwards.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return original_forward(model, *args, **kwargs)

    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    scale = load_train_state(tmp_path / "fp16")["scaler"]["scale"]
    assert scale > 1  # the loss is multiplied before the backward (GradScaler starts at 2 ** 16)
    monkeypatch.setattr(type(result.model), "forward", spying_forward)
    train(small_config(tmp_path / "fp16", max_steps=10, resume=True), data=small_data)
    assert forwards and set(forwards) == {torch.float16}
    assert load_train_state(tmp_path / "fp16")["scaler"]["scale"] > 0


# ---------------------------------------------------------------- threads on a shared CPU


@pytest.mark.parametrize(
    ("machine_busy", "own", "cores", "cap", "expected"),
    [
        (2.0, 2.0, 2, 2, 2),  # only training ran: both cores are its own
        (3.0, 2.0, 2, 2, 1),  # another process kept one core busy: one thread
        (1.9, 1.0, 2, 2, 1),  # 0.9 of a core taken
        (1.2, 1.0, 2, 2, 2),  # 0.2 of a core taken is noise: two
        (4.0, 0.0, 2, 2, 1),  # every core taken elsewhere: one all the same
        (0.0, 0.0, 8, 4, 4),  # an idle machine with more cores than the cap
        (5.0, 1.0, 8, 0, 4),  # no cap: the free cores
    ],
)
def test_threads_follow_the_cores_that_other_work_leaves_free(machine_busy, own, cores, cap, expected):
    """Over one second: the machine's busy CPU seconds, this process's, the cores, the cap (0: none)."""
    before, after = devices.CpuSample(0.0, 0.0, 0.0), devices.CpuSample(1.0, machine_busy, own)
    assert devices.threads_for(before, after, cores, cap or cores) == expected


def test_training_threads_are_looked_at_again_and_set(monkeypatch):
    samples = iter(
        [devices.CpuSample(0.0, 0.0, 0.0), devices.CpuSample(0.3, 0.6, 0.0), devices.CpuSample(6.0, 1.2, 0.6)]
    )
    monkeypatch.setattr(devices.CpuSample, "now", classmethod(lambda cls: next(samples)))
    monkeypatch.setattr(devices, "usable_cores", lambda: 2)
    monkeypatch.setattr(devices.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(devices.time, "monotonic", lambda: 6.0)
    chosen = []
    monkeypatch.setattr(torch, "set_num_threads", chosen.append)
    threads = devices.CpuThreads(cap=2)
    assert threads.threads == 1  # 0.6 s busy elsewhere in 0.3 s: two cores taken
    assert threads.adjust() and threads.threads == 2  # then idle but for training's own 0.6 s
    assert chosen == [1, 2]
