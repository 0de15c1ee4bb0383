"""Training the course GPT: `course train`, and `train(config)` for notebooks.

AdamW (weight decay on 2-D weights only), linear warm-up then cosine decay to `min_lr_ratio * lr`,
gradient clipping and accumulation, half-precision autocast on CUDA (bf16, or fp16 with loss scaling where the
GPU has no bf16, see course.device), optional torch.compile on CUDA, DDP under torchrun.

Ctrl-C (SIGINT) lets the step in progress finish, saves a checkpoint at that step and raises
`TrainingInterrupted`; `course train` then prints the command that continues the run and exits 130. A second
Ctrl-C interrupts at once: the checkpoint is replaced as a whole or not at all, so the previous one stands.
(Under torchrun every process gets the signal; there it stops training at once, as before, without saving.)

Each micro-batch is a set of random windows of block_size + 1 tokens from the train split, drawn by a
generator seeded with (seed, rank, step, micro-step); with dropout, torch's generator is seeded from (seed, rank,
step) before each step. The data position is therefore the step itself: a resumed run draws exactly the batches
(and dropout masks) the uninterrupted run would have drawn, and on CPU it ends bit-identical to it.

The length of training is given in steps (`max_steps`) or in passes over the train split (`epochs`, turned into
steps from the split's token count and the batch shape). The checkpoint keeps the weights of the lowest
validation loss seen (its config.json says which step), and its training state the last step's, to resume from.
`max_seconds` stops training early, after the step that passes that much time; that step is validated and saved.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
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
from course.device import DEVICE_CHOICES, CpuThreads, autocast, autocast_dtype, grad_scaler, resolve_device
from course.errors import UserError
from course.evaluate import format_perplexity, keep_freed_memory, perplexity, positive_int
from course.model import GPT, PRESETS, preset
from course.tokenizer import DEFAULT_VOCAB_SIZE, Tokenizer, check_vocab_size

# Per-preset defaults for every option left unset, from the sweeps in bench/RESULTS.md. tiny: under 3 minutes on
# 2 CPU cores; laptop: about half an hour there (31 min 41 s, timed); course: a GPU. A preset sets the length of
# training in steps (max_steps) or in passes over the train split (epochs).
# max_cpu_threads: two threads run the tiny step 1.5x faster than one on an idle 2-core machine (with the fused loss
# of course/loss.py); on a busy one a second thread spins, so training takes only the cores other work leaves free
# (course.device.CpuThreads), up to this many (0: every core).
PRESET_DEFAULTS = {
    "tiny": dict(
        max_steps=1400,
        batch_size=8,
        lr=3e-3,
        warmup_steps=30,
        eval_every=350,
        save_every=350,
        eval_tokens=16384,
        max_cpu_threads=2,
        vocab_size=DEFAULT_VOCAB_SIZE,
        adam_beta2=0.99,
        weight_decay=0.1,
        dropout=0.0,
    ),
    "laptop": dict(
        max_steps=3800,
        batch_size=8,
        lr=2e-3,
        warmup_steps=200,
        eval_every=500,
        save_every=500,
        eval_tokens=65536,
        max_cpu_threads=0,
        vocab_size=16384,
        adam_beta2=0.99,
        weight_decay=0.1,
        dropout=0.0,
    ),
    # WikiText-2's 2.4M training tokens are few for 35M parameters: the recipe of bench/RESULTS.md ("The course
    # recipe"): dropout 0.2, 20 epochs (1,468 steps) instead of 68, validation every epoch, the best one kept.
    "course": dict(
        epochs=20,
        batch_size=32,
        lr=6e-4,
        warmup_steps=200,
        eval_every=75,
        save_every=500,
        eval_tokens=131072,
        max_cpu_threads=0,
        vocab_size=12288,  # ~35M parameters, the lecture's model (24k would make it 41M)
        adam_beta2=0.95,
        weight_decay=0.1,
        dropout=0.2,
    ),
}
GREEDY_PROMPT = "The"


@dataclass
class TrainConfig:
    preset: str = "tiny"
    max_steps: int | None = None  # None: the preset's default (as for every None below), or from epochs
    epochs: float | None = None  # passes over the train split, turned into max_steps (give one of the two)
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
    weight_decay: float | None = None
    dropout: float | None = None  # of a new model (course.model.GPTConfig.dropout); a resumed one keeps its own
    adam_beta2: float | None = None  # small batches need a long second-moment average (0.99), large ones less (0.95)
    grad_clip: float = 1.0
    eval_every: int | None = None
    eval_tokens: int | None = None  # periodic validation scores this many tokens, evenly spread over the split
    save_every: int | None = None
    device: str = "auto"
    compile: bool = False
    seed: int = 1337
    cpu_threads: int | None = None  # torch threads on CPU, fixed (0: torch's own choice); None: as the machine allows
    max_cpu_threads: int | None = (
        None  # without cpu_threads: at most this many (0: every core), fewer on a busy machine
    )
    max_seconds: float | None = None  # stop after the step that passes this much training time (None: no limit)
    quiet: bool = False

    def resolved(self) -> TrainConfig:
        """A copy with the preset's defaults filled in and every value checked."""
        if self.preset not in PRESETS:
            raise UserError(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        defaults = dict(PRESET_DEFAULTS[self.preset])
        if self.max_steps is not None or self.epochs is not None:
            if self.max_steps is not None and self.epochs is not None:
                raise UserError("give the length of training as max_steps or as epochs, not both")
            for name in ("max_steps", "epochs"):  # the length given replaces the preset's
                defaults.pop(name, None)
        config = replace(
            self,
            out=Path(self.out if self.out is not None else Path("runs") / self.preset),
            **{name: value for name, value in defaults.items() if getattr(self, name) is None},
        )
        for name in ("cpu_threads", "max_cpu_threads"):
            value = getattr(config, name)
            if value is not None and not (isinstance(value, int) and value >= 0):
                raise UserError(f"{name} must be 0 (torch's choice) or more, got {value!r}")
        check_vocab_size(config.vocab_size)
        integers = ["batch_size", "grad_accum", "eval_every", "save_every", "eval_tokens"]
        for name in integers + (["max_steps"] if config.epochs is None else []):
            if not (isinstance(getattr(config, name), int) and getattr(config, name) >= 1):
                raise UserError(f"{name} must be a positive integer, got {getattr(config, name)!r}")
        if not config.warmup_steps >= 0:
            raise UserError(f"warmup_steps must be 0 or more, got {config.warmup_steps!r}")
        optional = [name for name in ("epochs", "max_seconds") if getattr(config, name) is not None]
        for name in ["lr", "grad_clip", *optional]:
            if not (getattr(config, name) > 0 and math.isfinite(getattr(config, name))):
                raise UserError(f"{name} must be a positive number, got {getattr(config, name)!r}")
        if not 0 <= config.min_lr_ratio <= 1:
            raise UserError(f"min_lr_ratio must lie in [0, 1], got {config.min_lr_ratio!r}")
        for name in ("weight_decay", "adam_beta2", "dropout"):
            if not 0 <= getattr(config, name) < 1:
                raise UserError(f"{name} must lie in [0, 1), got {getattr(config, name)!r}")
        if config.device not in DEVICE_CHOICES:
            raise UserError(f"device must be one of {', '.join(DEVICE_CHOICES)}, got {config.device!r}")
        return config

    def tokens_per_step(self, world_size: int = 1) -> int:
        return self.batch_size * self.grad_accum * PRESETS[self.preset]["block_size"] * world_size

    def scheduled(self, train_tokens: int, world_size: int = 1) -> TrainConfig:
        """A resolved config with max_steps set: from `epochs` over a train split of `train_tokens` tokens."""
        if self.epochs is None:
            return self
        steps = math.ceil(self.epochs * train_tokens / self.tokens_per_step(world_size))
        return replace(self, max_steps=max(1, steps))


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
    model: GPT  # with the checkpoint's weights: those of the lowest validation loss
    tokenizer: Tokenizer
    checkpoint: Path
    history: list[dict] = field(default_factory=list)  # one dict per validation: step, epoch, train_loss, val_loss, ...
    step: int = 0  # the last step trained (max_steps, or fewer when max_seconds stopped training)
    max_steps: int = 0
    kept_step: int = 0  # the step whose weights the checkpoint keeps
    seconds: float = 0.0  # of training in this call (the loop, validations and saves included)


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


def seed_dropout(seed: int, rank: int, step: int) -> None:
    """Seed torch's generators (which draw the dropout masks) from (seed, rank, step), as the batches are."""
    torch.manual_seed(int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0]))


def train_step(
    model, optimizer, batches, config: TrainConfig, lr: float, device: torch.device, scaler=None, dtype=None
) -> float:
    """One optimizer step over the micro-batches `batches`; returns their mean loss.

    The forward runs under autocast to `dtype` (default: the device's, see course.device). With a float16
    `scaler` the loss is scaled up before the backward, the gradients are unscaled before clipping, and a step
    whose gradients overflowed is skipped.
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
            with autocast(device, dtype):
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


def _resume_state(config: TrainConfig, data: TrainingData, device: torch.device) -> tuple[GPT, GPT, dict]:
    """The checkpoint's kept model (on the CPU), the model at the last step (on `device`), and the training state."""
    out = config.out
    state = load_train_state(out)
    if state["config"]["preset"] != config.preset:
        raise UserError(f"--resume: {out} was trained with preset {state['config']['preset']}, not {config.preset}")
    kept, tokenizer = load_checkpoint(out)
    check_same_tokenizer(tokenizer, data.tokenizer, out)
    model = copy.deepcopy(kept).to(device)
    if "model" in state:  # older training states hold no weights: their checkpoint kept the last step's
        model.load_state_dict(state["model"])
    return kept, model, state


class _Kept:
    """The weights the checkpoint keeps: a CPU copy of those of the lowest validation loss so far (until the
    first validation, none: the checkpoint then holds the last step's)."""

    def __init__(self, model: GPT | None = None, step: int = 0, val_loss: float = math.inf):
        self.model, self.step, self.val_loss = model, step, val_loss

    @classmethod
    def resumed(cls, kept: GPT, state: dict) -> _Kept:
        if "model" not in state or not state["history"]:  # the checkpoint holds the last step's weights
            return cls()
        best = min(state["history"], key=lambda record: record["val_loss"])
        return cls(kept, best["step"], best["val_loss"])

    def offer(self, model: GPT, step: int, val_loss: float) -> None:
        if val_loss < self.val_loss:
            self.model, self.step, self.val_loss = copy.deepcopy(model).to("cpu"), step, val_loss

    def describe(self, last_step: int) -> dict:
        """What config.json says of the kept weights."""
        if math.isinf(self.val_loss):
            return dict(
                step=last_step, rule="the last step (no validation to choose by yet)", trained_to_step=last_step
            )
        rule = "the lowest validation loss"
        return dict(step=self.step, val_loss=self.val_loss, rule=rule, trained_to_step=last_step)


def _training_device(config: TrainConfig, dist_info: _Distributed) -> torch.device:
    device = resolve_device(config.device)
    if dist_info.world_size > 1 and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)
    if config.compile and device.type != "cuda":
        raise UserError("--compile needs a CUDA device (torch.compile brings nothing to these models on CPU)")
    if config.max_seconds is not None and dist_info.world_size > 1:
        raise UserError("--max-seconds stops one process only: it is not for torchrun")
    if device.type == "cpu":
        keep_freed_memory()
        if config.cpu_threads:
            torch.set_num_threads(config.cpu_threads)
    return device


def _cpu_threads(config: TrainConfig, device: torch.device) -> CpuThreads | None:
    """Threads that follow the machine's load, unless there is no CPU to share or --cpu-threads fixed them."""
    if device.type != "cpu" or config.cpu_threads is not None:
        return None
    return CpuThreads(config.max_cpu_threads or 0)


def _check_out_folder(config: TrainConfig) -> None:
    has_checkpoint = has_train_state(config.out)
    if config.resume and not has_checkpoint:
        raise UserError(f"--resume: {config.out} holds no training checkpoint ({TRAIN_STATE_FILE} is missing)")
    if has_checkpoint and not config.resume:
        raise UserError(f"{config.out} already holds a training checkpoint: pass --resume or choose another --out")


def _load_data(config: TrainConfig, dist_info: _Distributed) -> TrainingData:
    if not dist_info.main:
        _barrier(dist_info)  # let rank 0 prepare the cache first
    vocab = read_config(config.out).vocab_size if config.resume else config.vocab_size
    data = load_training_data(replace(config, quiet=config.quiet or not dist_info.main), vocab)
    if dist_info.main:
        _barrier(dist_info)
    return data


class _Run:
    """One call of `train`: the model and optimizer, what was validated and kept, and the steps of the loop."""

    def __init__(self, config: TrainConfig, data: TrainingData, device: torch.device, dist_info: _Distributed, say):
        self.config, self.data, self.device, self.dist_info, self.say = config, data, device, dist_info, say
        if config.resume:
            kept, self.model, state = _resume_state(config, data, device)
            self.history, self.start_step, self.kept = list(state["history"]), state["step"], _Kept.resumed(kept, state)
        else:
            torch.manual_seed(config.seed)
            model_config = replace(preset(config.preset, data.tokenizer.vocab_size), dropout=config.dropout)
            self.model, state = GPT(model_config).to(device), None
            self.history, self.start_step, self.kept = [], 0, _Kept()
        self.model.train()
        self.optimizer = make_optimizer(self.model, config, device)
        self.scaler = grad_scaler(device, autocast_dtype(device))
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
        self.trained = torch.compile(self.model) if config.compile else self.model
        if dist_info.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [device.index] if device.type == "cuda" else None
            self.trained = DistributedDataParallel(self.trained, device_ids=device_ids)
        self.tokens_per_step = config.tokens_per_step(dist_info.world_size)
        self.threads = _cpu_threads(config, device)

    def describe(self) -> None:
        model, config, train_tokens = self.model, self.config, len(self.data.train_tokens)
        self.say(
            f"model: preset {config.preset}, {model.num_params() / 1e6:.2f}M parameters "
            f"({model.config.n_layer} layers, {model.config.n_head} heads, width {model.config.n_embd}, "
            f"context {model.config.block_size}, vocab {model.config.vocab_size}, dropout {model.config.dropout:g})"
        )
        self.say(
            f"schedule: {config.max_steps:,} steps of {self.tokens_per_step:,} tokens = "
            f"{self.epoch(config.max_steps):.2f} epochs of the train split's {train_tokens:,} tokens; "
            f"weight decay {config.weight_decay:g}"
        )
        self.say(f"unigram baseline on valid: perplexity {self.data.unigram_perplexity:.1f} per token")
        if self.threads is not None:
            self.say(
                f"cpu: {self.threads.threads} torch thread(s) of at most {self.threads.cap}, as many as the cores "
                "the machine's other work leaves free (looked at again every few seconds; --cpu-threads N fixes them)"
            )

    def epoch(self, step: int) -> float:
        return step * self.tokens_per_step / len(self.data.train_tokens)

    def save(self, step: int) -> None:
        train_state = dict(
            step=step,
            model=self.model.state_dict(),  # the last step's weights, to resume from
            optimizer=self.optimizer.state_dict(),
            scaler=self.scaler.state_dict(),
            config=_plain(self.config),
            history=self.history,
        )
        kept = self.kept.model or self.model
        save_checkpoint(self.config.out, kept, self.data.tokenizer, train_state, kept=self.kept.describe(step))

    def validate(self, step: int, train_loss: float, lr: float) -> dict:
        data = self.data
        ppl = perplexity(self.model, data.valid_tokens, data.valid_words, max_tokens=self.config.eval_tokens)
        record = dict(
            step=step,
            epoch=self.epoch(step),
            tokens=step * self.tokens_per_step,
            train_loss=train_loss,
            val_loss=ppl.loss,
            val_ppl=ppl.per_token,
            val_ppl_word=ppl.per_word,
            unigram_ppl=data.unigram_perplexity,
            lr=lr,
        )
        self.history.append(record)
        self.kept.offer(self.model, step, ppl.loss)
        self.say(
            f"step {step} (epoch {record['epoch']:.2f}): train loss {train_loss:.3f}, valid {format_perplexity(ppl)} "
            f"(unigram {data.unigram_perplexity:.1f} per token)"
        )
        return record

    def step(self, step: int) -> tuple[float, float]:
        """One optimizer step; returns its training loss and learning rate."""
        config, rank, block_size = self.config, self.dist_info.rank, self.model.config.block_size
        if self.model.config.dropout > 0:
            seed_dropout(config.seed, rank, step)
        batches = [
            batch_for_step(self.data.train_tokens, block_size, config.batch_size, config.seed, rank, step, micro)
            for micro in range(config.grad_accum)
        ]
        lr = learning_rate(step - 1, config)
        return train_step(self.trained, self.optimizer, batches, config, lr, self.device, self.scaler), lr

    def loop(self, on_eval: Callable[[dict], None] | None) -> int:
        """Train from the start step to max_steps (or the time limit); returns the last step trained."""
        config, main = self.config, self.dist_info.main
        bar = tqdm(
            total=config.max_steps,
            initial=self.start_step,
            desc=f"train {config.preset}",
            unit="step",
            disable=config.quiet or not main or None,  # None: no bar when stderr is not a terminal
            dynamic_ncols=True,
        )
        self.started, step = time.perf_counter(), self.start_step
        with _StopRequest(active=self.dist_info.world_size == 1) as ctrl_c:
            for step in range(self.start_step + 1, config.max_steps + 1):
                loss, lr = self.step(step)
                seconds = time.perf_counter() - self.started
                bar.update()
                tokens_per_s = (step - self.start_step) * self.tokens_per_step / seconds
                threads = {} if self.threads is None else {"threads": self.threads.threads}
                bar.set_postfix(
                    loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:,.0f}", **threads, refresh=False
                )
                if self.threads is not None:
                    self.threads.adjust()
                if not main:
                    continue
                out_of_time = config.max_seconds is not None and seconds >= config.max_seconds
                last = step == config.max_steps or out_of_time
                record = self.validate(step, loss, lr) if step % config.eval_every == 0 or last else None
                saved = step % config.save_every == 0 or last
                if saved:
                    self.save(step)
                if record is not None and on_eval is not None:
                    on_eval(record)  # after the save: a callback that stops training loses nothing
                if out_of_time:
                    self.say(
                        f"stopped at step {step} of {config.max_steps}: the time limit of {config.max_seconds:g} s"
                    )
                    break
                if ctrl_c.requested and not last:
                    if not saved:
                        self.save(step)
                    bar.close()
                    raise TrainingInterrupted(config.out, step, config.max_steps)
        bar.close()
        return step

    def finish(self, step: int) -> TrainResult:
        config, model, seconds = self.config, self.model, time.perf_counter() - self.started
        if step == self.start_step:
            self.say(f"{config.out} is already trained to step {step} of {config.max_steps}")
        else:
            self.say(f"saved {config.out} (step {step}, {seconds:.0f} s of training)")
        if self.kept.model is not None:
            model.load_state_dict(self.kept.model.state_dict())
            self.say(f"kept the weights of step {self.kept.step}: the lowest validation loss, {self.kept.val_loss:.3f}")
        if self.dist_info.main and not config.quiet:
            self.say(f"greedy: {greedy_text(model, self.data.tokenizer, GREEDY_PROMPT)!r}")
        model.train(False)
        if self.dist_info.world_size > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
        return TrainResult(
            model=model,
            tokenizer=self.data.tokenizer,
            checkpoint=config.out,
            history=self.history,
            step=step,
            max_steps=config.max_steps,
            kept_step=self.kept.step,
            seconds=seconds,
        )


def train(
    config: TrainConfig,
    on_eval: Callable[[dict], None] | None = None,
    data: TrainingData | None = None,
) -> TrainResult:
    """Train (or with config.resume, continue) a model; `on_eval(record)` is called after every validation.

    Each record has step, epoch, tokens, train_loss, val_loss, val_ppl (per token), val_ppl_word, unigram_ppl,
    lr; the same records come back in `TrainResult.history`.
    """
    config = config.resolved()
    dist_info = _distributed_from_env(config)
    device = _training_device(config, dist_info)
    say = tqdm.write if dist_info.main and not config.quiet else (lambda message: None)
    _check_out_folder(config)
    if data is None:
        data = _load_data(config, dist_info)
    run = _Run(config.scheduled(len(data.train_tokens), dist_info.world_size), data, device, dist_info, say)
    run.describe()
    return run.finish(run.loop(on_eval))


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


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
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
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--max-steps", type=positive_int, help="optimizer steps (default: the preset's)")
    length.add_argument("--epochs", type=positive_float, help="passes over the train split, instead of --max-steps")
    parser.add_argument(
        "--max-seconds", type=positive_float, help="stop (validated and saved) after the step that passes this time"
    )
    parser.add_argument("--out", help="checkpoint folder (default runs/<preset>)")
    parser.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    parser.add_argument("--dataset", default="wikitext-2-v1", help="WikiText config (default wikitext-2-v1)")
    parser.add_argument("--data-dir", help="local WikiText folder (default: $COURSE_DATA_DIR or the hub)")
    parser.add_argument("--vocab-size", type=positive_int, help="BPE vocabulary size (default: the preset's)")
    parser.add_argument("--batch-size", type=positive_int, help="sequences per micro-batch and process")
    parser.add_argument("--grad-accum", type=positive_int, default=1, help="micro-batches per optimizer step")
    parser.add_argument("--lr", type=positive_float, help="peak learning rate")
    parser.add_argument("--weight-decay", type=fraction, help="AdamW's, on 2-D weights (default: the preset's)")
    parser.add_argument("--dropout", type=fraction, help="of a new model, in training (default: the preset's)")
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
        help="torch threads on CPU, fixed; 0 for torch's choice (default: as many as the cores other work leaves "
        "free, up to the preset's, looked at again every few seconds)",
    )
    parser.set_defaults(run=run)
