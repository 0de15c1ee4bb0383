"""bench/gpu_run.sh: the GPU run's script, end to end on the CPU at toy sizes (`--smoke`), so that it is known to work
before a GPU is lent; and its MFU peaks."""

from __future__ import annotations

import json
import math
import os
import runpy
import subprocess
import sys

import pytest

from course.kit import ROOT
from course.train import PRESET_DEFAULTS

peak_bf16_tflops = runpy.run_path(str(ROOT / "bench" / "train_throughput.py"))["peak_bf16_tflops"]  # not a package

FILES = ["figures.json", "run.log", "samples.txt", "summary.md"]
PARTS = ["environment", "data", "throughput", "training", "evaluation", "samples", "decode", "float16"]


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("Tesla T4", None),
    ],
)
def test_mfu_is_against_the_gpus_dense_bf16_peak(name, peak):
    found, source = peak_bf16_tflops(name)
    assert found == peak
    assert (f"{peak:g} TFLOP/s dense bf16" in source) if peak else ("no dense bf16 peak known for 'Tesla T4'" in source)


@pytest.mark.slow
def test_the_smoke_run_writes_every_parts_figures(tmp_path, wikitext2_dir):
    """About 30 s here: every part runs, and its files hold what the lead will record from the GPU run."""
    out = tmp_path / "out"
    command = [
        "bash",
        str(ROOT / "bench" / "gpu_run.sh"),
        "--smoke",
        "--out",
        str(out),
        "--data-dir",
        str(wikitext2_dir),
    ]
    env = dict(os.environ, COURSE_PYTHON=sys.executable)
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert sorted(os.listdir(out)) == FILES
    assert all(0 < (out / name).stat().st_size < 16 * 2**20 for name in FILES)

    figures = json.loads((out / "figures.json").read_text())
    assert figures["mode"] == "smoke" and figures["failed_parts"] == []
    assert [part for part in PARTS if "seconds" in figures[part] and "error" not in figures[part]] == PARTS
    assert figures["environment"]["device"] == "cpu" and figures["environment"]["peak_bf16_tflops"] is None

    throughput = figures["throughput"]
    assert throughput["tokens_per_s"] > 0 and throughput["mfu"] is None and throughput["compiled"] is False

    training, data = figures["training"], figures["data"]
    steps = math.ceil(0.05 * data["tokens"]["train"] / (4 * 128))  # the smoke's 0.05 epochs in batches of 4 x 128
    assert training["steps"] == training["max_steps"] == steps and not training["stopped_by_time_limit"]
    assert training["dropout"] == PRESET_DEFAULTS["course"]["dropout"]
    assert training["weight_decay"] == PRESET_DEFAULTS["course"]["weight_decay"]
    history = training["history"]
    assert [record["step"] for record in history] == [*range(10, steps, 10), steps]
    assert training["kept_step"] == min(history, key=lambda record: record["val_loss"])["step"]

    for split in ("valid", "test"):
        scored = figures["evaluation"][split]
        assert scored["tokens"] == data["tokens"][split] - 1  # the whole split
        assert math.isclose(scored["per_token"], math.exp(scored["loss"]), rel_tol=1e-9)
        assert scored["per_word"] > scored["per_token"] > 1

    samples = (out / "samples.txt").read_text()
    heads = [line for line in samples.splitlines() if line.startswith("== ")]
    assert heads == [
        f"== {prompt} | {method}"
        for prompt in ("The film", "The history of the city")
        for method in ("greedy", "top-p 0.9 seed 1", "penalties 1.2")
    ]

    decode = figures["decode"]
    assert [row["context"] for row in decode["rows"]] == [32, 64]
    assert all(row[way] > 0 for row in decode["rows"] for way in ("cache", "cat", "uncached"))
    try:
        import transformers  # noqa: F401

        assert decode["transformers"].startswith("run: ") and all(row["hf"] > 0 for row in decode["rows"])
    except ImportError:
        assert decode["transformers"].startswith("skipped: ")

    float16 = figures["float16"]
    assert float16["steps"] == 3 and float16["finite"] and 0 <= float16["skipped_steps"] <= 3
    assert float16["final_scale"] > 0

    summary, log = (out / "summary.md").read_text(), (out / "run.log").read_text()
    assert all(f"| {part} (" in summary for part in PARTS)
    assert "part float16" in log and "every part ran" in log
