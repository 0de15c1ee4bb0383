"""Checkpoints: one folder per model, written atomically.

A checkpoint folder holds
    model.safetensors   the weights, fp32; the tied unembedding is stored once (as `transformer.wte.weight`)
    config.json         {"format_version": 1, "model": GPTConfig fields}, and for training checkpoints "kept":
                        which step's weights these are and why (the lowest validation loss, or the last step)
    tokenizer.json      the tokenizer the model was trained with
    train_state.pt      (training checkpoints only) the last step's weights, optimizer, step, schedule and data
                        position for --resume

Saving never leaves a mixed folder: everything is written into a temporary sibling that then replaces
the checkpoint as a whole (`course.kit.atomic_folder`). If the process dies between the two renames of
that swap, the previous checkpoint waits under a backup name and the next load or save puts it back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from course.errors import UserError
from course.kit import atomic_folder, recover_interrupted_swap
from course.model import GPT, GPTConfig
from course.tokenizer import Tokenizer

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
TRAIN_STATE_FILE = "train_state.pt"
TIED_DUPLICATE = "lm_head.weight"  # the same tensor as transformer.wte.weight
CHECKPOINT_VARIABLE = "COURSE_CHECKPOINT"
PREFERRED_RUNS = ("course", "laptop", "tiny")  # `course train --preset NAME` saves runs/NAME; the largest first


def save_checkpoint(
    path: str | Path, model: GPT, tokenizer: Tokenizer, train_state: dict | None = None, kept: dict | None = None
) -> Path:
    """Write model, config, tokenizer and (optionally) the training state as one atomic checkpoint folder;
    `kept` (for config.json) says which training step the weights are from, and why."""
    path = Path(path)
    state = {name: t.detach().to("cpu", torch.float32).contiguous() for name, t in model.state_dict().items()}
    del state[TIED_DUPLICATE]
    with atomic_folder(path) as staging:
        save_file(state, staging / MODEL_FILE, metadata={"format": "course-gpt", "version": str(FORMAT_VERSION)})
        config = {"format_version": FORMAT_VERSION, "model": model.config.to_dict()}
        if kept is not None:
            config["kept"] = kept
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        tokenizer.save(staging / TOKENIZER_FILE)
        if train_state is not None:
            torch.save(train_state, staging / TRAIN_STATE_FILE)
    return path


def is_checkpoint(path: str | Path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file() and (Path(path) / MODEL_FILE).is_file()


def find_checkpoints(folder: str | Path | None = None) -> dict[str, Path]:
    """The checkpoints a notebook, a lecture or `python -m course.lectures` uses, the preferred first: the folder in
    $COURSE_CHECKPOINT (as 'env') when set, then runs/course, runs/laptop and runs/tiny in `folder` (default: the
    current one) and, for those not there, one folder up (where they are for a notebook in assignments/ or
    lectures/). Empty when there is none; UserError when $COURSE_CHECKPOINT names no checkpoint."""
    folder = Path.cwd() if folder is None else Path(folder)
    found = {}
    chosen = os.environ.get(CHECKPOINT_VARIABLE)
    if chosen:
        if not is_checkpoint(chosen):
            raise UserError(
                f"{CHECKPOINT_VARIABLE}={chosen} is not a checkpoint folder (expected {CONFIG_FILE} and {MODEL_FILE} "
                "in it, as written by `course train`)"
            )
        found["env"] = Path(chosen)
    for name in PREFERRED_RUNS:
        path = next(
            (base / "runs" / name for base in (folder, folder.parent) if is_checkpoint(base / "runs" / name)), None
        )
        if path is not None and all(path.resolve() != other.resolve() for other in found.values()):
            found[name] = path
    return found


def has_train_state(path: str | Path) -> bool:
    """Whether `path` holds a checkpoint that training can resume."""
    path = Path(path)
    recover_interrupted_swap(path)
    return (path / TRAIN_STATE_FILE).is_file()


def _required_file(path: Path, name: str) -> Path:
    recover_interrupted_swap(path)
    if not path.is_dir():
        raise UserError(f"checkpoint folder {path} does not exist (expected a folder written by `course train`)")
    file = path / name
    if not file.is_file():
        raise UserError(f"checkpoint {path} has no {name} (expected {MODEL_FILE}, {CONFIG_FILE} and {TOKENIZER_FILE})")
    return file


def read_config(path: str | Path) -> GPTConfig:
    path = Path(path)
    file = _required_file(path, CONFIG_FILE)
    try:
        config = json.loads(file.read_text())
        version, fields = config["format_version"], config["model"]
    except (ValueError, KeyError, TypeError):
        raise UserError(
            f"{file} is not a course checkpoint config (expected JSON with format_version and model)"
        ) from None
    if version != FORMAT_VERSION:
        raise UserError(f"{file} has format_version {version!r}; this course kit reads version {FORMAT_VERSION}")
    try:
        return GPTConfig(**fields)
    except TypeError:
        raise UserError(f"{file}: model must hold exactly the fields {sorted(GPTConfig().to_dict())}") from None


def _read_weights(path: Path, config: GPTConfig) -> dict[str, torch.Tensor]:
    file = _required_file(path, MODEL_FILE)
    try:
        weights = load_file(file)
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{file} is truncated or not a safetensors file ({e})") from None
    with torch.device("meta"):  # shapes only, nothing allocated
        expected = {name: t.shape for name, t in GPT(config).state_dict().items() if name != TIED_DUPLICATE}
    missing = sorted(expected.keys() - weights.keys())
    unexpected = sorted(weights.keys() - expected.keys())
    if missing or unexpected:
        detail = f"missing tensor {missing[0]!r}" if missing else f"unexpected tensor {unexpected[0]!r}"
        raise UserError(f"{file} does not hold a course GPT ({detail})")
    for name, shape in expected.items():
        if weights[name].shape != shape:
            raise UserError(
                f"{file}: tensor {name!r} has shape {tuple(weights[name].shape)} but {path / CONFIG_FILE} "
                f"implies {tuple(shape)}"
            )
    return weights


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[GPT, Tokenizer]:
    """The model (in eval mode, on `device`) and its tokenizer."""
    path = Path(path)
    config = read_config(path)
    weights = _read_weights(path, config)
    tokenizer_file = _required_file(path, TOKENIZER_FILE)
    tokenizer = Tokenizer.load(tokenizer_file)
    if tokenizer.vocab_size != config.vocab_size:
        raise UserError(
            f"{tokenizer_file} has {tokenizer.vocab_size} tokens but {path / CONFIG_FILE} says vocab_size "
            f"{config.vocab_size}"
        )
    model = GPT(config)
    weights[TIED_DUPLICATE] = weights["transformer.wte.weight"]
    model.load_state_dict(weights)
    return model.to(device).eval(), tokenizer


def check_same_tokenizer(tokenizer: Tokenizer, data_tokenizer: Tokenizer, checkpoint: str | Path) -> None:
    """The cached token ids mean what the model learned only if both tokenizers have the same vocabulary."""
    ids = range(max(tokenizer.vocab_size, data_tokenizer.vocab_size))
    if tokenizer.vocab_size != data_tokenizer.vocab_size or tokenizer.token_strings(
        ids
    ) != data_tokenizer.token_strings(ids):
        raise UserError(
            f"the tokenizer of {checkpoint} differs from the prepared data's: "
            f"prepare the dataset (and vocabulary size) the model was trained on"
        )


def load_train_state(path: str | Path) -> dict:
    """What `save_checkpoint(..., train_state=...)` stored, for resuming."""
    file = _required_file(Path(path), TRAIN_STATE_FILE)
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged pickle
        raise UserError(f"{file} is damaged or not a course training state ({type(e).__name__})") from None
