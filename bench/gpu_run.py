"""The course preset on one GPU, end to end, within 8 minutes: training, perplexity, samples, decoding speed.

How the lead runs it: through the device tool, from the repository root, with nothing to carry or install (the
GPU machine's python3 has torch, tokenizers, safetensors, numpy and tqdm; transformers too, or its part is skipped):

    run(command="bash bench/gpu_run.sh --out $OUT", timeout_s=540)

then reads $OUT/summary.md (and figures.json, samples.txt, run.log) and records the figures in bench/RESULTS.md.
WikiText-2 is looked for in --data-dir, $COURSE_DATA_DIR, ../shared/data/wikitext-2 and shared/data/wikitext-2 (from
the repository root). Where the machine has none of them, carry a copy in an ignored folder:

    mkdir -p .wikitext && cp -r ../shared/data/wikitext-2 .wikitext/ && echo /.wikitext/ >> .git/info/exclude
    run(command="COURSE_DATA_DIR=.wikitext/wikitext-2 bash bench/gpu_run.sh --out $OUT", carry=[".wikitext"], ...)

Before any GPU is lent, the same script runs on the CPU at toy sizes (the tiny preset's shape with a 512-token BPE,
a slice of the corpus, a few steps of each part) and writes the same files; tests/test_gpu_run.py runs it so:

    bash bench/gpu_run.sh --smoke --out /tmp/gpu-smoke

The parts, in order; each one's figures go to OUT/figures.json (and OUT/summary.md) as soon as it ends, so that a run
cut short still brings back what it measured; a part that fails is recorded and the next one runs. A progress line
is printed (and logged to OUT/run.log) at least every 20 seconds.

  data        WikiText-2 prepared: the course preset's BPE trained on the train split, every split encoded
  throughput  the course preset's training step on random ids, bf16 autocast and torch.compile: tokens/s, and MFU:
              model FLOPs per token (6 N + 12 n_layer n_embd T, bench/train_throughput.py) x tokens/s over the
              GPU's dense bf16 peak, the one named in the output
  training    `course.train.train` on the course preset, compiled, bf16: the preset's epochs, or as many steps as
              the time left allows (its max_seconds: training stops early, validated and saved)
  evaluation  valid and test perplexity per token and per WikiText word, over the whole splits, of the kept weights
  samples     greedy, top-p 0.9 and penalties 1.2 after two prompts (the solutions' samplers), on the CPU
  decode      bench/decode.py's comparison on the GPU: the 04 solution's KV cache, no cache, and transformers
  float16     the T4's path of course.device: a few steps under float16 autocast with a gradient scaler

The checkpoint (141 MB of weights, 422 MB of training state: the last weights and AdamW's two moments) stays on the
machine, in a temporary folder.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from decode import compare_decoding, solution_functions
from train_throughput import flops_per_token, measure, peak_bf16_tflops

from course.data import prepare
from course.device import autocast_dtype, grad_scaler
from course.evaluate import format_perplexity, perplexity
from course.generation import generate, until_eos
from course.kit import ROOT, write_atomically
from course.model import GPT, preset
from course.train import (
    PRESET_DEFAULTS,
    TrainConfig,
    batch_for_step,
    load_training_data,
    make_optimizer,
    train,
    train_step,
)

BUDGET_S = 450  # the whole run, on a GPU: 30 s inside the 8 minutes it is given
QUIET_WARNING_S = 20  # the longest silence before a "still running" line
DATASET = "wikitext-2-v1"
PROMPTS = ("The film", "The history of the city")


@dataclass(frozen=True)
class Scale:
    """What each part does at one scale: the course preset on a GPU, or toy sizes on the CPU."""

    mode: str
    preset: str
    vocab_size: int
    throughput_steps: tuple[int, int]  # warm-up (compilation included), timed
    train: dict  # TrainConfig settings beyond the preset's
    reserve_s: float  # the time kept for the parts after training
    sample_tokens: int
    decode_contexts: tuple[int, ...]
    decode_new_tokens: int
    decode_repeats: int
    float16_steps: int
    corpus_lines: dict[str, int] | None = None  # the first lines of each split: a slice of the corpus


GPU = Scale(
    mode="gpu",
    preset="course",
    vocab_size=PRESET_DEFAULTS["course"]["vocab_size"],
    throughput_steps=(5, 20),
    train=dict(compile=True),
    reserve_s=120,
    sample_tokens=40,
    decode_contexts=(64, 256, 1024),
    decode_new_tokens=32,
    decode_repeats=3,
    float16_steps=50,
)
SMOKE = Scale(
    mode="smoke",
    preset="tiny",
    vocab_size=512,
    throughput_steps=(1, 2),
    train=dict(epochs=0.05, batch_size=4, eval_every=10, eval_tokens=2048, cpu_threads=1),
    reserve_s=30,
    sample_tokens=12,
    decode_contexts=(32, 64),
    decode_new_tokens=8,
    decode_repeats=1,
    float16_steps=3,
    corpus_lines=dict(train=3000, valid=300, test=300),
)


# --- output: a log that is also the terminal, and figures written as they come ----------------------------------


class Log:
    """stdout (or stderr) and OUT/run.log at once; notes when anything was last written."""

    def __init__(self, stream, file, shared: dict):
        self.stream, self.file, self.shared = stream, file, shared

    def write(self, text: str) -> int:
        with self.shared["lock"]:
            self.stream.write(text)
            self.stream.flush()
            self.file.write(text)
            self.file.flush()
            self.shared["last_write"] = time.monotonic()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


@contextlib.contextmanager
def logged(path: Path, run: Run):
    """Send stdout and stderr to the terminal and `path`; while it lasts, a line every QUIET_WARNING_S of silence."""
    shared = dict(lock=threading.Lock(), last_write=time.monotonic())
    stopped = threading.Event()

    def keep_talking():
        while not stopped.wait(2):
            if time.monotonic() - shared["last_write"] >= QUIET_WARNING_S:
                print(f"[{run.elapsed():5.0f} s] still in part {run.part}", flush=True)

    with open(path, "a", encoding="utf-8") as file:
        streams = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = Log(streams[0], file, shared), Log(streams[1], file, shared)
        watcher = threading.Thread(target=keep_talking, daemon=True)
        watcher.start()
        try:
            yield
        finally:
            stopped.set()
            watcher.join()
            sys.stdout, sys.stderr = streams


@dataclass
class Run:
    out: Path
    scale: Scale
    command: str
    started: float = field(default_factory=time.perf_counter)
    part: str = "start"
    figures: dict = field(default_factory=dict)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def say(self, message: str) -> None:
        print(f"[{self.elapsed():5.0f} s] {message}", flush=True)

    @contextlib.contextmanager
    def part_of_run(self, name: str, needs: tuple[str, ...] = ()):
        """Run a part: its figures go to figures[name]; an error is recorded there and the run goes on."""
        self.part, started = name, time.perf_counter()
        figures = self.figures.setdefault(name, {})
        missing = [need for need in needs if "error" in self.figures.get(need, {"error": "did not run"})]
        self.say(f"part {name}" + (f": skipped, it needs {', '.join(missing)}" if missing else ""))
        try:
            if missing:
                figures["error"] = f"skipped: {', '.join(missing)} failed"
                yield None
            else:
                yield figures
        except Exception as error:  # the next parts still run
            traceback.print_exc()
            figures["error"] = f"{type(error).__name__}: {error}"
            self.say(f"part {name} failed: {figures['error']}")
        finally:
            figures["seconds"] = round(time.perf_counter() - started, 2)
            self.write()

    def write(self) -> None:
        self.figures["wall_s"] = round(self.elapsed(), 1)
        write_atomically(self.out / "figures.json", json.dumps(self.figures, indent=1, default=str) + "\n")
        write_atomically(self.out / "summary.md", summary(self.figures, self.command))


# --- the parts ----------------------------------------------------------------------------------------------------


def environment(scale: Scale) -> tuple[torch.device, dict]:
    if scale.mode == "gpu" and not torch.cuda.is_available():
        raise SystemExit("gpu_run: torch sees no CUDA GPU here; on a CPU run it with --smoke")
    device = torch.device("cuda" if scale.mode == "gpu" else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)  # toy sizes: a second thread only waits on a machine that others share
    figures = dict(
        device=device.type,
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU",
        torch=torch.__version__,
        cuda=torch.version.cuda,
        python=platform.python_version(),
        cpu_count=os.cpu_count(),
        half_precision=str(autocast_dtype(device) or "float32 (no autocast)").removeprefix("torch."),
        transformers=_version("transformers"),
    )
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        figures.update(
            gpu_memory_gib=round(properties.total_memory / 2**30, 1), multiprocessors=properties.multi_processor_count
        )
        figures["peak_bf16_tflops"], figures["peak_source"] = peak_bf16_tflops(figures["device_name"])
    else:
        figures["peak_bf16_tflops"], figures["peak_source"] = None, "the CPU: no MFU"
    return device, figures


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def find_data_dir(given: str | None) -> Path:
    candidates = [
        given,
        os.environ.get("COURSE_DATA_DIR"),
        ROOT.parent / "shared/data/wikitext-2",
        ROOT / "shared/data/wikitext-2",
    ]
    for candidate in filter(None, candidates):
        if (Path(candidate) / "wiki.train.tokens").is_file():
            return Path(candidate)
    looked = ", ".join(str(candidate) for candidate in filter(None, candidates))
    raise SystemExit(f"gpu_run: expected WikiText-2 (wiki.train.tokens and the others) in one of: {looked}")


def corpus_slice(data_dir: Path, lines: dict[str, int], work: Path) -> Path:
    """The first lines[split] lines of each split, as a WikiText folder: the smoke run's corpus."""
    folder = work / "wikitext-2-slice"
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in lines.items():
        with open(data_dir / f"wiki.{split}.tokens", encoding="utf-8") as source:
            head = [line for _, line in zip(range(count), source)]
        (folder / f"wiki.{split}.tokens").write_text("".join(head), encoding="utf-8")
    return folder


def prepare_data(run: Run, data_dir: Path, figures: dict):
    prepared = prepare(DATASET, data_dir=data_dir, vocab_size=run.scale.vocab_size, quiet=True)
    data = load_training_data(TrainConfig(data_dir=data_dir, quiet=True), vocab_size=run.scale.vocab_size)
    figures.update(
        data_dir=str(data_dir),
        vocab_size=run.scale.vocab_size,
        tokens=prepared.num_tokens,
        words=prepared.num_words,
        unigram_ppl_valid=data.unigram_perplexity,
    )
    run.say(
        f"prepared {DATASET}: {prepared.num_tokens['train']:,} training tokens, vocabulary {run.scale.vocab_size:,}"
    )
    return prepared, data


def measure_throughput(run: Run, device: torch.device, environment_figures: dict, figures: dict) -> None:
    scale, defaults = run.scale, PRESET_DEFAULTS[run.scale.preset]
    warmup, steps = scale.throughput_steps
    compiled = device.type == "cuda"
    row = measure(
        scale.preset,
        device,
        scale.train.get("batch_size", defaults["batch_size"]),
        warmup,
        steps,
        compiled,
        vocab_size=scale.vocab_size,
        dropout=PRESET_DEFAULTS["course"]["dropout"],
    )
    figures.update(
        row, compiled=compiled, dtype=environment_figures["half_precision"], warmup_steps=warmup, timed_steps=steps
    )
    figures["mfu"] = mfu(row["model_tflops"], environment_figures)
    run.say(
        f"throughput: {row['tokens_per_s']:,.0f} tokens/s, {row['ms_per_step']:.1f} ms a step of {row['batch']} x "
        f"{row['context']}, {row['model_tflops']:.1f} model TFLOP/s, MFU {_percent(figures['mfu'])}"
    )


def mfu(model_tflops: float, environment_figures: dict) -> float | None:
    peak = environment_figures["peak_bf16_tflops"]
    return model_tflops / peak if peak else None


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def train_model(run: Run, device: torch.device, data, work: Path, compile_works: bool, environment_figures, figures):
    """The preset's training, compiled where compiling worked in the throughput part, within the time left; should the
    compiled training fail, the time left goes to training without compiling."""
    compiled = run.scale.train.get("compile", False) and compile_works
    try:
        result, config = train_within_budget(run, device, data, work / "checkpoint", compiled)
    except Exception as error:
        if not compiled:
            raise
        traceback.print_exc()
        figures["compile_error"] = f"{type(error).__name__}: {error}"
        run.say(f"compiled training failed ({figures['compile_error']}); training without compiling in the time left")
        compiled = False
        result, config = train_within_budget(run, device, data, work / "checkpoint-eager", compiled)
    tokens = result.step * config.tokens_per_step()
    tokens_per_s = tokens / result.seconds
    figures.update(
        preset=config.preset,
        params=result.model.num_params(),
        compiled=compiled,
        dropout=config.dropout,
        weight_decay=config.weight_decay,
        epochs_planned=config.epochs,
        max_steps=result.max_steps,
        steps=result.step,
        epochs_trained=tokens / len(data.train_tokens),
        stopped_by_time_limit=result.step < result.max_steps,
        max_seconds=round(config.max_seconds, 1),
        kept_step=result.kept_step,
        train_seconds=round(result.seconds, 1),
        tokens_per_s=tokens_per_s,
        mfu_overall=mfu(flops_per_token(result.model) * tokens_per_s / 1e12, environment_figures),
        history=result.history,
    )
    return result


def train_within_budget(run: Run, device: torch.device, data, out: Path, compiled: bool):
    """`course.train.train` with the course recipe and a time limit: BUDGET_S less what has passed and the reserve."""
    scale = run.scale
    max_seconds = max(30.0, BUDGET_S - run.elapsed() - scale.reserve_s)
    config = TrainConfig(
        preset=scale.preset,
        out=out,
        vocab_size=scale.vocab_size,
        device=device.type,
        dropout=PRESET_DEFAULTS["course"]["dropout"],
        weight_decay=PRESET_DEFAULTS["course"]["weight_decay"],
        max_seconds=max_seconds,
        **dict(scale.train, compile=compiled),
    )
    run.say(f"training {scale.preset} for at most {max_seconds:.0f} s, {'compiled' if compiled else 'not compiled'}")
    return train(config, data=data), config.resolved().scheduled(len(data.train_tokens))


def evaluate(run: Run, model, prepared, figures: dict) -> None:
    for split in ("valid", "test"):
        ppl = perplexity(model, prepared.tokens(split), prepared.num_words[split])
        figures[split] = dict(loss=ppl.loss, per_token=ppl.per_token, per_word=ppl.per_word, tokens=ppl.tokens_scored)
        run.say(f"{split}: {format_perplexity(ppl)}")


def write_samples(run: Run, model, tokenizer, figures: dict) -> None:
    """Greedy, top-p 0.9 (seed 1) and frequency and presence penalties 1.2 on top of it, as `course generate` and
    bench/RESULTS.md's samples: the solutions' samplers, on a CPU copy of the model."""
    sample_next = solution_functions(["sample_next"])["sample_next"]
    with_penalties = solution_functions(["sample_with_penalties"])["sample_with_penalties"]
    cpu_model = copy.deepcopy(model).to("cpu")
    methods = {
        "greedy": lambda generator: lambda logits, history: logits.argmax(-1),
        "top-p 0.9 seed 1": lambda generator: (
            lambda logits, history: sample_next(logits, top_p=0.9, generator=generator)
        ),
        "penalties 1.2": lambda generator: (
            lambda logits, history: with_penalties(
                logits, history, top_p=0.9, frequency_penalty=1.2, presence_penalty=1.2, generator=generator
            )
        ),
    }
    blocks = []
    for prompt in PROMPTS:
        ids = torch.tensor([tokenizer.encode(prompt)])
        for method, next_token in methods.items():
            out = generate(
                cpu_model,
                ids,
                run.scale.sample_tokens,
                next_token(torch.Generator().manual_seed(1)),
                eos_id=tokenizer.eot_id,
            )
            text = prompt + tokenizer.decode(until_eos(out[0, ids.shape[1] :].tolist(), tokenizer.eot_id))
            blocks.append(f"== {prompt} | {method}\n{text}\n")
    write_atomically(run.out / "samples.txt", "\n".join(blocks))
    figures.update(count=len(blocks), new_tokens=run.scale.sample_tokens, file="samples.txt")
    run.say(f"samples: {len(blocks)} written to samples.txt; the first: {blocks[0].splitlines()[1]!r}")


def decode_speed(run: Run, model, figures: dict) -> None:
    scale = run.scale
    rows, hf_note = compare_decoding(
        model, scale.decode_contexts, scale.decode_new_tokens, repeats=scale.decode_repeats, say=run.say
    )
    figures.update(
        device=next(model.parameters()).device.type,
        precision="float32",
        new_tokens=scale.decode_new_tokens,
        rows=rows,
        transformers=hf_note,
    )


def float16_steps(run: Run, device: torch.device, data, figures: dict) -> None:
    """The T4's path: float16 autocast, loss scaling, overflowing steps skipped (course.device, course.train)."""
    scale = run.scale
    config = TrainConfig(preset=scale.preset, **{k: v for k, v in scale.train.items() if k == "batch_size"}).resolved()
    torch.manual_seed(0)
    model = GPT(replace(preset(scale.preset, scale.vocab_size), dropout=PRESET_DEFAULTS["course"]["dropout"])).to(
        device
    )
    optimizer = make_optimizer(model, config, device)
    scaler = grad_scaler(device, torch.float16)
    losses, skipped, block_size = [], 0, model.config.block_size
    started = time.perf_counter()
    for step in range(1, scale.float16_steps + 1):
        batches = [batch_for_step(data.train_tokens, block_size, config.batch_size, 0, 0, step, 0)]
        scale_before = scaler.get_scale()
        losses.append(train_step(model, optimizer, batches, config, config.lr, device, scaler, dtype=torch.float16))
        skipped += scaler.get_scale() < scale_before  # an overflow halves the scale and skips the step
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    figures.update(
        steps=scale.float16_steps,
        first_loss=losses[0],
        last_loss=losses[-1],
        min_loss=min(losses),
        finite=all(math.isfinite(loss) for loss in losses),
        skipped_steps=int(skipped),
        final_scale=scaler.get_scale(),
        tokens_per_s=scale.float16_steps * config.batch_size * block_size / seconds,
        compiled=False,
    )
    run.say(
        f"float16 + GradScaler: loss {losses[0]:.3f} -> {losses[-1]:.3f} over {scale.float16_steps} steps, "
        f"{int(skipped)} skipped, scale {scaler.get_scale():g}"
    )


# --- the summary --------------------------------------------------------------------------------------------------


def summary(figures: dict, command: str) -> str:
    env, lines = figures.get("environment", {}), []
    lines += [
        f"# bench/gpu_run.py ({figures.get('mode')})",
        "",
        f"{figures.get('started')}; `{command}`; {env.get('device_name')} ({env.get('device')}), torch {env.get('torch')}, "
        f"CUDA {env.get('cuda')}, Python {env.get('python')}, transformers {env.get('transformers') or 'absent'}; "
        f"MFU against {env.get('peak_source')}; {figures.get('wall_s')} s so far.",
        "",
        "| part | figures |",
        "|---|---|",
    ]
    for part, render in RENDERERS.items():
        if part in figures:
            part_figures = figures[part]
            text = part_figures["error"] if "error" in part_figures else render(part_figures)
            lines.append(f"| {part} ({part_figures.get('seconds', '?')} s) | {text} |")
    training = figures.get("training", {})
    if training.get("history"):
        lines += ["", "Validation during training:", "", "| step | epoch | train loss | valid loss | valid per word |"]
        lines.append("|---:|---:|---:|---:|---:|")
        lines += [
            f"| {r['step']} | {r['epoch']:.2f} | {r['train_loss']:.3f} | {r['val_loss']:.3f} | {r['val_ppl_word']:.1f} |"
            for r in training["history"]
        ]
    decode = figures.get("decode", {})
    if decode.get("rows"):
        lines += [
            "",
            f"Decoding, tokens/s ({decode['device']}, {decode['precision']}, batch 1, greedy; transformers {decode['transformers']}):",
            "",
        ]
        lines += [
            "| context | cache (solution) | cat cache | no cache | HF generate | cache / no cache | cache / HF |",
            "|---:" * 7 + "|",
        ]
        lines += [
            f"| {r['context']} | {r['cache']:.1f} | {r['cat']:.1f} | {r['uncached']:.2f} | {r['hf']:.1f} "
            f"| {r['cache'] / r['uncached']:.1f}x | {r['cache'] / r['hf']:.2f}x |"
            for r in decode["rows"]
        ]
    return "\n".join(lines) + "\n"


RENDERERS = {
    "environment": lambda f: (
        f"{f['device_name']}, half precision {f['half_precision']}, peak {f['peak_bf16_tflops']} TFLOP/s"
    ),
    "data": lambda f: f"{f['tokens']['train']:,} training tokens, vocabulary {f['vocab_size']:,}",
    "throughput": lambda f: (
        f"{f['tokens_per_s']:,.0f} tokens/s ({f['batch']} x {f['context']}, {f['ms_per_step']:.1f} ms a step, "
        f"{'compiled' if f['compiled'] else 'eager'}, {f['dtype']}), {f['model_tflops']:.1f} model TFLOP/s, MFU {_percent(f['mfu'])}"
    ),
    "training": lambda f: (
        f"{f['steps']:,} of {f['max_steps']:,} steps ({f['epochs_trained']:.2f} epochs, dropout {f['dropout']:g}, "
        f"weight decay {f['weight_decay']:g}) in {f['train_seconds']} s, {f['tokens_per_s']:,.0f} tokens/s overall "
        f"(MFU {_percent(f['mfu_overall'])}); kept step {f['kept_step']}"
        + ("; stopped by the time limit" if f["stopped_by_time_limit"] else "")
    ),
    "evaluation": lambda f: (
        f"valid {f['valid']['per_word']:.1f} per word ({f['valid']['per_token']:.1f} per token), "
        f"test {f['test']['per_word']:.1f} per word ({f['test']['per_token']:.1f} per token)"
    ),
    "samples": lambda f: f"{f['count']} samples of {f['new_tokens']} tokens in samples.txt",
    "decode": lambda f: f"{len(f['rows'])} context lengths, below; transformers {f['transformers']}",
    "float16": lambda f: (
        f"loss {f['first_loss']:.3f} -> {f['last_loss']:.3f} in {f['steps']} steps, {f['skipped_steps']} skipped, "
        f"final scale {f['final_scale']:g}, {f['tokens_per_s']:,.0f} tokens/s (eager)"
    ),
}


# --- the run ------------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for the figures, summary, samples and log")
    parser.add_argument("--smoke", action="store_true", help="on the CPU at toy sizes, to check the script")
    parser.add_argument("--data-dir", help="WikiText-2 (default: $COURSE_DATA_DIR, then ../shared/data/wikitext-2)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.log").unlink(missing_ok=True)
    scale = SMOKE if args.smoke else GPU
    command = "bash bench/gpu_run.sh " + " ".join(argv if argv is not None else sys.argv[1:])
    run = Run(out, scale, command)
    run.figures.update(mode=scale.mode, started=datetime.datetime.now().isoformat(timespec="seconds"), command=command)
    work = Path(tempfile.mkdtemp(prefix="gpu-run-"))
    try:
        with logged(out / "run.log", run):
            return run_parts(run, args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_parts(run: Run, args, work: Path) -> int:
    scale = run.scale
    with run.part_of_run("environment") as figures:
        device, found = environment(scale)
        figures.update(found)
        run.say(f"{found['device_name']}: torch {found['torch']}, peak {found['peak_source']}")
    data_dir = find_data_dir(args.data_dir)
    if scale.corpus_lines:
        data_dir = corpus_slice(data_dir, scale.corpus_lines, work)
        os.environ["COURSE_CACHE_DIR"] = str(work / "cache")  # the slice's BPE stays out of the kit's cache
    with run.part_of_run("data", needs=("environment",)) as figures:
        if figures is not None:
            prepared, data = prepare_data(run, data_dir, figures)
    with run.part_of_run("throughput", needs=("environment",)) as figures:
        if figures is not None:
            measure_throughput(run, device, run.figures["environment"], figures)
    compile_works = "error" not in run.figures["throughput"]
    with run.part_of_run("training", needs=("data",)) as figures:
        if figures is not None:
            result = train_model(run, device, data, work, compile_works, run.figures["environment"], figures)
    with run.part_of_run("evaluation", needs=("training",)) as figures:
        if figures is not None:
            evaluate(run, result.model, prepared, figures)
    with run.part_of_run("samples", needs=("training",)) as figures:
        if figures is not None:
            write_samples(run, result.model, result.tokenizer, figures)
    with run.part_of_run("decode", needs=("training",)) as figures:
        if figures is not None:
            decode_speed(run, result.model, figures)
    with run.part_of_run("float16", needs=("data",)) as figures:
        if figures is not None:
            float16_steps(run, device, data, figures)
    failed = [name for name, part in run.figures.items() if isinstance(part, dict) and "error" in part]
    run.figures["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    run.figures["failed_parts"] = failed
    run.write()
    run.say(
        f"done in {run.elapsed():.0f} s; "
        + (f"failed: {', '.join(failed)}" if failed else "every part ran")
        + f"; files in {run.out}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
