"""Training throughput of the course presets: tokens per second, and on CUDA the model FLOPs utilisation.

Each preset runs the real training step (AdamW, clipping, bf16 autocast on CUDA) on random token ids:
a few untimed warm-up steps, then timed steps. Model FLOPs per token follow the PaLM paper's appendix B:
6 N for the weight matmuls of forward and backward (N without the position embedding; the tied
unembedding counts once, as a matmul) plus 12 n_layer n_embd T for attention over a context of T.

    python bench/train_throughput.py [--presets tiny,course] [--device auto] [--peak-tflops 989] [--record]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch

from course.device import resolve_device
from course.model import GPT, PRESETS, preset
from course.tokenizer import DEFAULT_VOCAB_SIZE
from course.train import PRESET_DEFAULTS, TrainConfig, make_optimizer, train_step

RESULTS = Path(__file__).with_name("RESULTS.md")
H100_BF16_DENSE_TFLOPS = 989.0  # H100 SXM; the PCIe card is 756
# Dense (no sparsity) bfloat16 peaks of NVIDIA's data sheets, in TFLOP/s, by a part of the name torch reports (the
# first that matches): the H200 has the H100 SXM's tensor cores.
BF16_DENSE_TFLOPS = {
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": H100_BF16_DENSE_TFLOPS,
    "H200": 989.0,
    "A100": 312.0,
}


def peak_bf16_tflops(device_name: str) -> tuple[float | None, str]:
    """The dense bf16 peak of the GPU named `device_name` and the table entry it came from; (None, why) if unknown."""
    for part, tflops in BF16_DENSE_TFLOPS.items():
        if part in device_name:
            return tflops, f"{part}: {tflops:g} TFLOP/s dense bf16 (NVIDIA's data sheet)"
    return None, f"no dense bf16 peak known for {device_name!r} (known: {', '.join(BF16_DENSE_TFLOPS)})"


CPU_BATCH = {"tiny": 8, "course": 1}  # keeps a CPU run to seconds per preset


def flops_per_token(model: GPT) -> float:
    c = model.config
    matmul_params = model.num_params() - model.transformer.wpe.weight.numel()
    return 6 * matmul_params + 12 * c.n_layer * c.n_embd * c.block_size


def measure(
    name: str,
    device: torch.device,
    batch_size: int,
    warmup: int,
    steps: int,
    compile: bool,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    dropout: float = 0.0,
) -> dict:
    torch.manual_seed(0)
    model = GPT(replace(preset(name, vocab_size), dropout=dropout)).to(device)
    config = TrainConfig(preset=name, batch_size=batch_size).resolved()
    optimizer = make_optimizer(model, config, device)
    trained = torch.compile(model) if compile else model
    generator = torch.Generator().manual_seed(0)
    block_size = model.config.block_size
    rows = torch.randint(0, vocab_size, (batch_size, block_size + 1), generator=generator)
    batches = [(rows[:, :-1], rows[:, 1:])]

    def step():
        train_step(trained, optimizer, batches, config, config.lr, device)

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds_per_step = (time.perf_counter() - started) / steps
    tokens_per_s = batch_size * block_size / seconds_per_step
    return dict(
        preset=name,
        params=model.num_params(),
        batch=batch_size,
        context=block_size,
        ms_per_step=1000 * seconds_per_step,
        tokens_per_s=tokens_per_s,
        model_tflops=flops_per_token(model) * tokens_per_s / 1e12,
    )


def table(rows: list[dict], device_name: str, peak_tflops: float | None) -> str:
    header = "| preset | params | batch x context | device | ms/step | tokens/s | model TFLOP/s | MFU |"
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    for row in rows:
        mfu = f"{100 * row['model_tflops'] / peak_tflops:.1f}%" if peak_tflops else "n/a"
        lines.append(
            f"| {row['preset']} | {row['params'] / 1e6:.2f}M | {row['batch']} x {row['context']} | {device_name} "
            f"| {row['ms_per_step']:.0f} | {row['tokens_per_s']:,.0f} | {row['model_tflops']:.3f} | {mfu} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated presets (default: all)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--batch-size", type=int, help="sequences per step (default: the preset's on CUDA, small on CPU)"
    )
    parser.add_argument("--steps", type=int, help="timed steps (default 20 on CUDA, 3 on CPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=H100_BF16_DENSE_TFLOPS,
        help="the device's dense bf16 peak, for MFU (default: H100 SXM, 989)",
    )
    parser.add_argument("--record", action="store_true", help=f"append the table to {RESULTS.name}")
    args = parser.parse_args()
    names = [name.strip() for name in args.presets.split(",")]
    unknown = [name for name in names if name not in PRESETS]
    if unknown:
        parser.error(f"unknown preset {unknown[0]!r}; expected some of {', '.join(PRESETS)}")

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    device_name = torch.cuda.get_device_name(device) if cuda else f"CPU ({torch.get_num_threads()} threads)"
    rows = []
    for name in names:
        batch_size = args.batch_size or (PRESET_DEFAULTS[name]["batch_size"] if cuda else CPU_BATCH[name])
        rows.append(
            measure(
                name,
                device,
                batch_size,
                warmup=5 if cuda else 1,
                steps=args.steps or (20 if cuda else 3),
                compile=args.compile,
            )
        )
    result = table(rows, device_name, args.peak_tflops if cuda else None)
    print(result)
    if args.record:
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        section = (
            f"\n## Training throughput (bench/train_throughput.py)\n\n{stamp}, torch {torch.__version__}, "
            f"{platform.machine()}{', compiled' if args.compile else ''}"
            f"{f', MFU against {args.peak_tflops:g} bf16 TFLOP/s' if cuda else ''}\n\n{result}\n"
        )
        with RESULTS.open("a") as results:
            results.write(section)
        print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
