"""Training the course GPT: `course train`, and `train(config)` for notebooks.

AdamW (weight decay on 2-D weights only), linear warm-up then cosine decay to `min_lr_ratio * lr`,
gradient clipping and accumulation, half-precision autocast on CUDA (bf16, or fp16 with loss scaling where the
GPU has no bf16, see course.device), optional torch.compile on CUDA, DDP under torchrun.

Ctrl-C (SIGINT) lets the step in progress finish, saves a checkpoint at that step and raises
`TrainingInterrupted`; `course train` then prints the command that continues the run and exits 130. A second
Ctrl-C interrupts at once: the checkpoint is replaced as a whole or not at all, so the previous one stands.
(Under torchrun every process gets the signal; there it stops training at once, as before, without saving.)

Each micro-batch is a set of random windows of block_size + 1 tokens from the train split, drawn by a
generator seeded with (seed, rank, step, micro-step). The data position is therefore the step itself:
a resumed run draws exactly the batches the uninterrupted run would have drawn, and on CPU it ends
bit-identical to it.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from course.checkpoint import (
    TRAIN_STATE_FILE,
    check_same_tokenizer,
    has_train_state,
    load_checkpoint,
    load_train_state,
    read_config,
    save_checkpoint,
)
from course.device import DEVICE_CHOICES, autocast, autocast_dtype, grad_scaler, resolve_device
from course.errors import UserError
from course.evaluate import format_perplexity, keep_freed_memory, perplexity, positive_int
from course.model import GPT, PRESETS, preset
from course.tokenizer import DEFAULT_VOCAB_SIZE, Tokenizer, check_vocab_size

# Per-preset defaults for every option left unset, from the sweeps in bench/RESULTS.md. tiny: under 3 minutes on
# 2 CPU cores; laptop: about half an hour there (31 min 41 s, timed); course: a GPU.
# cpu_threads: two threads run the tiny step 1.5x faster than one on an idle 2-core machine (with the fused loss
# of course/loss.py); on a busy machine a second thread spins, so pass --cpu-threads 1 there.
PRESET_DEFAULTS = {
    "tiny": dict(
        max_steps=1400,
        batch_size=8,
        lr=3e-3,
        warmup_steps=30,
        eval_every=350,
        save_every=350,
        eval_tokens=16384,
        cpu_threads=2,
        vocab_size=DEFAULT_VOCAB_SIZE,
        adam_beta2=0.99,
    ),
    "laptop": dict(
        max_steps=3800,
        batch_size=8,
        lr=2e-3,
        warmup_steps=200,
        eval_every=500,
        save_every=500,
        eval_tokens=65536,
        cpu_threads=0,
        vocab_size=16384,
        adam_beta2=0.99,
    ),
    "course": dict(
        max_steps=5000,
        batch_size=32,
        lr=6e-4,
        warmup_steps=200,
        eval_every=250,
        save_every=500,
        eval_tokens=131072,
        cpu_threads=0,
        vocab_size=12288,  # ~35M parameters, the lecture's model (24k would make it 41M)
        adam_beta2=0.95,
    ),
}
GREEDY_PROMPT = "The"


@dataclass
class TrainConfig:
    preset: str = "tiny"
    max_steps: int | None = None  # None: the preset's default (as for every None below)
    out: str | Path | None = None  # default runs/<preset>
    resume: bool = False
    dataset: str = "wikitext-2-v1"
    data_dir: str | Path | None = None
    vocab_size: int | None = None  # of the BPE tokenizer that `course prepare` trains
    batch_size: int | None = None  # sequences per micro-batch, per process
    grad_accum: int = 1
    lr: float | None = None
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    adam_beta2: float | None = None  # small batches need a long second-moment average (0.99), large ones less (0.95)
    grad_clip: float = 1.0
    eval_every: int | None = None
    eval_tokens: int | None = None  # periodic validation scores this many tokens, evenly spread over the split
    save_every: int | None = None
    device: str = "auto"
    compile: bool = False
    seed: int = 1337
    cpu_threads: int | None = None  # torch threads when training on CPU; 0 keeps torch's own choice
    quiet: bool = False

    def resolved(self) -> TrainConfig:
        """A copy with the preset's defaults filled in and every value checked."""
        if self.preset not in PRESETS:
            raise UserError(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        defaults = PRESET_DEFAULTS[self.preset]
        config = replace(
            self,
            out=Path(self.out if self.out is not None else Path("runs") / self.preset),
            **{name: value for name, value in defaults.items() if getattr(self, name) is None},
        )
        if not (isinstance(config.cpu_threads, int) and config.cpu_threads >= 0):
            raise UserError(f"cpu_threads must be 0 (torch's choice) or more, got {config.cpu_threads!r}")
        check_vocab_size(config.vocab_size)
        for name in ("max_steps", "batch_size", "grad_accum", "eval_every", "save_every", "eval_tokens"):
            if not (isinstance(getattr(config, name), int) and getattr(config, name) >= 1):
                raise UserError(f"{name} must be a positive integer, got {getattr(config, name)!r}")
        if not config.warmup_steps >= 0:
            raise UserError(f"warmup_steps must be 0 or more, got {config.warmup_steps!r}")
        for name in ("lr", "grad_clip"):
            if not (getattr(config, name) > 0 and math.isfinite(getattr(config, name))):
                raise UserError(f"{name} must be a positive number, got {getattr(config, name)!r}")
        if not (0 <= config.min_lr_ratio <= 1 and 0 <= config.weight_decay < 1 and 0 <= config.adam_beta2 < 1):
            raise UserError("min_lr_ratio must lie in [0, 1], weight_decay and adam_beta2 in [0, 1)")
        if config.device not in DEVICE_CHOICES:
            raise UserError(f"device must be one of {', '.join(DEVICE_CHOICES)}, got {config.device!r}")
        return config


@dataclass
class TrainingData:
    """What training reads: the tokenizer, the encoded splits, and the numbers perplexity needs."""

    tokenizer: Tokenizer
    train_tokens: np.ndarray
    valid_tokens: np.ndarray
    valid_words: int
    unigram_perplexity: float  # of the same tokenizer's unigram model on the valid split


@dataclass
class TrainResult:
    model: GPT
    tokenizer: Tokenizer
    checkpoint: Path
    history: list[dict] = field(default_factory=list)  # one dict per validation: step, train_loss, val_loss, ...


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training after a whole step, and the checkpoint `checkpoint` holds that step."""

    def __init__(self, checkpoint: Path, step: int, max_steps: int):
        super().__init__(f"{checkpoint} holds step {step} of {max_steps}; continue with resume=True")
        self.checkpoint, self.step, self.max_steps = checkpoint, step, max_steps


class _StopRequest:
    """While active in the main thread, the first Ctrl-C only sets `requested` (the loop stops after the step in
    progress, so that the checkpoint holds a whole step) and gives Ctrl-C back to the previous handler."""

    def __init__(self, active: bool):
        self.active = active and threading.current_thread() is threading.main_thread()
        self.requested = False

    def __enter__(self) -> _StopRequest:
        if self.active:
            previous = signal.signal(signal.SIGINT, self._request)
            self.previous = signal.default_int_handler if previous is None else previous  # None: set outside Python
        return self

    def _request(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self.previous)

    def __exit__(self, *exc) -> None:
        if self.active:
            signal.signal(signal.SIGINT, self.previous)


def load_training_data(config: TrainConfig, vocab_size: int | None = None) -> TrainingData:
    from course.data import prepare
    from course.tokenizer import unigram_perplexity

    options = dict(data_dir=config.data_dir, quiet=config.quiet)
    if vocab_size is not None:
        options["vocab_size"] = vocab_size
    data = prepare(config.dataset, **options)
    tokenizer = Tokenizer.load(data.tokenizer_path)
    train_tokens, valid_tokens = data.tokens("train"), data.tokens("valid")
    return TrainingData(
        tokenizer=tokenizer,
        train_tokens=train_tokens,
        valid_tokens=valid_tokens,
        valid_words=data.num_words["valid"],
        unigram_perplexity=unigram_perplexity(train_tokens, valid_tokens, tokenizer.vocab_size),
    )


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up over warmup_steps, then cosine decay to min_lr_ratio * lr at max_steps."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
    min_lr = config.min_lr_ratio * config.lr
    return min_lr + 0.5 * (config.lr - min_lr) * (1 + math.cos(math.pi * progress))


def make_optimizer(model: GPT, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices and embeddings (2-D), none on biases and LayerNorm gains."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        dict(params=[p for p in params if p.dim() >= 2], weight_decay=config.weight_decay),
        dict(params=[p for p in params if p.dim() < 2], weight_decay=0.0),
    ]
    # fused: one kernel for all parameters (on the tiny preset's CPU step, 4 ms instead of 10)
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, config.adam_beta2), fused=fused)


def batch_for_step(tokens: np.ndarray, block_size: int, batch_size: int, seed: int, rank: int, step: int, micro: int):
    """(inputs, targets), each (batch_size, block_size): random windows, a pure function of the arguments."""
    if len(tokens) < block_size + 2:
        raise UserError(f"the train split has {len(tokens)} tokens, fewer than one window of {block_size + 1}")
    rng = np.random.default_rng([seed, rank, step, micro])
    starts = rng.integers(0, len(tokens) - block_size, size=batch_size)
    rows = torch.from_numpy(np.stack([tokens[s : s + block_size + 1] for s in starts]).astype(np.int64))
    return rows[:, :-1], rows[:, 1:]


def train_step(model, optimizer, batches, config: TrainConfig, lr: float, device: torch.device, scaler=None) -> float:
    """One optimizer step over the micro-batches `batches`; returns their mean loss.

    With a float16 `scaler` (see course.device) the loss is scaled up before the backward, the gradients are
    unscaled before clipping, and a step whose gradients overflowed is skipped.
    """
    scaler = scaler or grad_scaler(device, None)
    for group in optimizer.param_groups:
        group["lr"] = lr
    total = 0.0
    for micro, (inputs, targets) in enumerate(batches):
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        last = micro == len(batches) - 1
        # DDP: all-reduce the gradients once, after the last micro-batch
        sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast(device):
                loss = model(inputs, targets=targets)
            scaler.scale(loss / len(batches)).backward()
        total += loss.item()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return total / len(batches)


@dataclass
class _Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _distributed_from_env(config: TrainConfig) -> _Distributed:
    """torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; start the process group when there is more than one."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return _Distributed()
    import torch.distributed as dist

    use_cuda = config.device != "cpu" and torch.cuda.is_available()
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return _Distributed(dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def _barrier(dist_info: _Distributed) -> None:
    if dist_info.world_size > 1:
        import torch.distributed as dist

        dist.barrier()


def greedy_text(model: GPT, tokenizer: Tokenizer, prompt: str, new_tokens: int = 40) -> str:
    """The prompt continued by always taking the most likely token: enough to show what the model learned."""
    from course.generation import generate

    device = next(model.parameters()).device
    ids = torch.tensor([tokenizer.encode(prompt)], device=device)
    ids = generate(model, ids, new_tokens, next_token=lambda logits, context: logits.argmax(-1))
    return tokenizer.decode(ids[0].tolist())


def _resume_state(config: TrainConfig, data: TrainingData, device: torch.device):
    out = config.out
    state = load_train_state(out)
    if state["config"]["preset"] != config.preset:
        raise UserError(f"--resume: {out} was trained with preset {state['config']['preset']}, not {config.preset}")
    model, tokenizer = load_checkpoint(out, device=device)
    check_same_tokenizer(tokenizer, data.tokenizer, out)
    return model, state


def train(
    config: TrainConfig,
    on_eval: Callable[[dict], None] | None = None,
    data: TrainingData | None = None,
) -> TrainResult:
    """Train (or with config.resume, continue) a model; `on_eval(record)` is called after every validation.

    Each record has step, tokens, train_loss, val_loss, val_ppl (per token), val_ppl_word, unigram_ppl, lr;
    the same records come back in `TrainResult.history`.
    """
    config = config.resolved()
    dist_info = _distributed_from_env(config)
    device = resolve_device(config.device)
    if dist_info.world_size > 1 and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)
    if config.compile and device.type != "cuda":
        raise UserError("--compile needs a CUDA device (torch.compile brings nothing to these models on CPU)")
    if device.type == "cpu":
        keep_freed_memory()
        if config.cpu_threads:
            torch.set_num_threads(config.cpu_threads)
    say = tqdm.write if dist_info.main and not config.quiet else (lambda message: None)

    has_checkpoint = has_train_state(config.out)
    if config.resume and not has_checkpoint:
        raise UserError(f"--resume: {config.out} holds no training checkpoint ({TRAIN_STATE_FILE} is missing)")
    if has_checkpoint and not config.resume:
        raise UserError(f"{config.out} already holds a training checkpoint: pass --resume or choose another --out")

    if data is None:
        if not dist_info.main:
            _barrier(dist_info)  # let rank 0 prepare the cache first
        vocab = read_config(config.out).vocab_size if config.resume else config.vocab_size
        data = load_training_data(replace(config, quiet=config.quiet or not dist_info.main), vocab)
        if dist_info.main:
            _barrier(dist_info)
    if config.resume:
        model, state = _resume_state(config, data, device)
        history = list(state["history"])
        start_step = state["step"]
    else:
        torch.manual_seed(config.seed)
        model = GPT(preset(config.preset, data.tokenizer.vocab_size)).to(device)
        state, history, start_step = None, [], 0
    model.train()
    optimizer = make_optimizer(model, config, device)
    scaler = grad_scaler(device, autocast_dtype(device))
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])

    say(
        f"model: preset {config.preset}, {model.num_params() / 1e6:.2f}M parameters "
        f"({model.config.n_layer} layers, {model.config.n_head} heads, width {model.config.n_embd}, "
        f"context {model.config.block_size}, vocab {model.config.vocab_size})"
    )
    say(f"unigram baseline on valid: perplexity {data.unigram_perplexity:.1f} per token")
    trained = model
    if config.compile:
        trained = torch.compile(trained)
    if dist_info.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(trained, device_ids=[device.index] if device.type == "cuda" else None)

    block_size = model.config.block_size
    tokens_per_step = config.batch_size * config.grad_accum * block_size * dist_info.world_size

    def save(step: int) -> None:
        train_state = dict(
            step=step,
            optimizer=optimizer.state_dict(),
            scaler=scaler.state_dict(),
            config=_plain(config),
            history=history,
        )
        save_checkpoint(config.out, model, data.tokenizer, train_state)

    def validate(step: int, train_loss: float, lr: float) -> dict:
        ppl = perplexity(model, data.valid_tokens, data.valid_words, max_tokens=config.eval_tokens)
        record = dict(
            step=step,
            tokens=step * tokens_per_step,
            train_loss=train_loss,
            val_loss=ppl.loss,
            val_ppl=ppl.per_token,
            val_ppl_word=ppl.per_word,
            unigram_ppl=data.unigram_perplexity,
            lr=lr,
        )
        history.append(record)
        say(
            f"step {step}: train loss {train_loss:.3f}, valid {format_perplexity(ppl)} "
            f"(unigram {data.unigram_perplexity:.1f} per token)"
        )
        return record

    bar = tqdm(
        total=config.max_steps,
        initial=start_step,
        desc=f"train {config.preset}",
        unit="step",
        disable=config.quiet or not dist_info.main or None,  # None: no bar when stderr is not a terminal
        dynamic_ncols=True,
    )
    started, step = time.perf_counter(), start_step
    with _StopRequest(active=dist_info.world_size == 1) as ctrl_c:
        for step in range(start_step + 1, config.max_steps + 1):
            lr = learning_rate(step - 1, config)
            batches = [
                batch_for_step(
                    data.train_tokens, block_size, config.batch_size, config.seed, dist_info.rank, step, micro
                )
                for micro in range(config.grad_accum)
            ]
            loss = train_step(trained, optimizer, batches, config, lr, device, scaler)
            tokens_per_s = (step - start_step) * tokens_per_step / (time.perf_counter() - started)
            bar.update()
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
            if not dist_info.main:
                continue
            last = step == config.max_steps
            record = validate(step, loss, lr) if step % config.eval_every == 0 or last else None
            saved = step % config.save_every == 0 or last
            if saved:
                save(step)
            if record is not None and on_eval is not None:
                on_eval(record)  # after the save: a callback that stops training loses nothing
            if ctrl_c.requested and not last:
                if not saved:
                    save(step)
                bar.close()
                raise TrainingInterrupted(config.out, step, config.max_steps)
    bar.close()

    if step == start_step:
        say(f"{config.out} is already trained to step {step} of {config.max_steps}")
    else:
        say(f"saved {config.out} (step {step}, {time.perf_counter() - started:.0f} s of training)")
    if dist_info.main and not config.quiet:
        say(f"greedy: {greedy_text(model, data.tokenizer, GREEDY_PROMPT)!r}")
    model.train(False)
    if dist_info.world_size > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return TrainResult(model=model, tokenizer=data.tokenizer, checkpoint=config.out, history=history)


def _plain(config: TrainConfig) -> dict:
    """The config as plain values (torch.load(weights_only=True) reads them back)."""
    return {name: str(value) if isinstance(value, Path) else value for name, value in asdict(config).items()}


def non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected 0 or a positive integer, got {text!r}")
    return int(text)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def resume_command(config: TrainConfig) -> str:
    """The `course train` command line of `config` (as given, before the preset's defaults) with --resume."""
    words, defaults = ["course", "train"], TrainConfig()
    for option in fields(TrainConfig):
        value = getattr(config, option.name)
        if option.name in ("resume", "quiet") or value == getattr(defaults, option.name):
            continue
        flag = "--" + option.name.replace("_", "-")
        words += [flag] if value is True else [flag, str(value)]
    return shlex.join([*words, "--resume"])


def run(args) -> int:
    options = {field.name for field in fields(TrainConfig)}
    config = TrainConfig(**{name: value for name, value in vars(args).items() if name in options})
    try:
        train(config)
    except TrainingInterrupted as stop:
        print(
            f"course train: interrupted: {stop.checkpoint} holds step {stop.step} of {stop.max_steps}; "
            f"continue with: {resume_command(config)}",
            file=sys.stderr,
        )
        return 130  # 128 + SIGINT, as a shell reports a command that Ctrl-C stopped
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train the course GPT and save a checkpoint",
        description="Train a preset on WikiText; checkpoints go to --out (default runs/<preset>).",
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="model size (default tiny)")
    parser.add_argument("--max-steps", type=positive_int, help="optimizer steps (default: the preset's)")
    parser.add_argument("--out", help="checkpoint folder (default runs/<preset>)")
    parser.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    parser.add_argument("--dataset", default="wikitext-2-v1", help="WikiText config (default wikitext-2-v1)")
    parser.add_argument("--data-dir", help="local WikiText folder (default: $COURSE_DATA_DIR or the hub)")
    parser.add_argument("--vocab-size", type=positive_int, help="BPE vocabulary size (default: the preset's)")
    parser.add_argument("--batch-size", type=positive_int, help="sequences per micro-batch and process")
    parser.add_argument("--grad-accum", type=positive_int, default=1, help="micro-batches per optimizer step")
    parser.add_argument("--lr", type=positive_float, help="peak learning rate")
    parser.add_argument("--eval-every", type=positive_int, help="steps between validations")
    parser.add_argument("--save-every", type=positive_int, help="steps between checkpoints")
    parser.add_argument(
        "--device", choices=DEVICE_CHOICES, default="auto", help="default auto: cuda, then mps, then cpu"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA only)")
    parser.add_argument("--seed", type=int, default=1337, help="seed of the initial weights and the batches")
    parser.add_argument(
        "--cpu-threads",
        type=non_negative_int,
        help="torch threads on CPU, 0 for torch's choice (default: the preset's)",
    )
    parser.set_defaults(run=run)
