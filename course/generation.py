"""The project's one generation loop, and `course generate`.

The loop knows nothing about sampling: at every step it hands the last position's logits, and the
whole sequence so far (for penalties), to a `next_token` function (the `NextToken` contract).
`course generate` builds that function from a notebook's own sampling functions, loaded with
`course.notebook` (without --sampler, from the solution of the assignment that grades the function):

    sample_next            temperature, top-k, top-p, min-p
    sample_with_penalties  when --frequency-penalty or --presence-penalty is given
    greedy                 with --greedy
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch

from course import kit
from course.assignments import grading
from course.errors import UserError
from course.notebook import describe_exception, load_notebook, notebook_location, require


class NextToken(Protocol):
    """The one contract of every decoding loop in the kit: `next_token(logits, history) -> ids`.

    logits:  (batch, vocab), the last position's logits
    history: (batch, length) int64, every id so far (the prompt and everything generated)
    returns: (batch,) integer ids, the next token of each row

    Loops call it positionally, with both arguments: this loop, the KV cache solution's `generate`,
    the grader's reference loop, the lectures, the demo and the decode benchmark. A rule that does
    not look at the history takes `history=None` (`greedy(logits, history=None)`, as the KV cache notebook gives
    it), so it also serves a loop that calls `next_token(logits)`, as students' earlier `generate` functions do.
    """

    def __call__(self, logits: torch.Tensor, history: torch.Tensor, /) -> torch.Tensor: ...


INTEGER_DTYPES = {torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8}


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    max_new_tokens: int,
    next_token: NextToken,
    eos_id: int | None = None,
) -> torch.Tensor:
    """The prompt (batch, positions) followed by `max_new_tokens` ids chosen by `next_token`.

    With `eos_id`, a row that emits it is finished and its later positions are `eos_id`; the loop
    ends early, with a shorter result, once every row has finished.

    Without a cache, each step re-runs the model on the last `block_size` positions (the context),
    so generation goes on past the context length. The model is put in eval mode for the loop and
    given back in the mode it had.
    """
    if prompt_ids.dim() != 2 or prompt_ids.shape[1] == 0 or prompt_ids.dtype != torch.long:
        raise ValueError(f"prompt_ids must be a non-empty int64 tensor (batch, positions), not {_describe(prompt_ids)}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, not {max_new_tokens}")
    block_size = model.config.block_size
    batch = prompt_ids.shape[0]
    ids = prompt_ids
    was_training = model.training
    model.eval()
    finished = torch.zeros(batch, dtype=torch.bool, device=ids.device)
    try:
        for _ in range(max_new_tokens):
            logits = model(ids[:, -block_size:])[:, -1, :]
            chosen = next_token(logits, ids)
            if not isinstance(chosen, torch.Tensor) or chosen.shape != (batch,) or chosen.dtype not in INTEGER_DTYPES:
                raise UserError(f"next_token must return integer ids of shape ({batch},), not {_describe(chosen)}")
            if not bool(((chosen >= 0) & (chosen < logits.shape[-1])).all()):
                raise UserError(f"next_token returned ids outside the vocabulary 0..{logits.shape[-1] - 1}")
            chosen = chosen.to(device=ids.device, dtype=torch.long)
            if eos_id is not None:
                chosen = chosen.masked_fill(finished, eos_id)
                finished |= chosen == eos_id
            ids = torch.cat([ids, chosen[:, None]], dim=1)
            if bool(finished.all()):
                break
    finally:
        model.train(was_training)
    return ids


def until_eos(ids: list[int], eos_id: int) -> list[int]:
    """`ids` up to, not including, the first `eos_id`: the text of a document that ended."""
    return ids[: ids.index(eos_id)] if eos_id in ids else ids


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


# ---------------------------------------------------------------- course generate


def sampling_function(args: argparse.Namespace) -> tuple[str, str]:
    """(the notebook function the options need, the options that need it, for messages)."""
    penalties = [
        option
        for option, value in (
            ("--frequency-penalty", args.frequency_penalty),
            ("--presence-penalty", args.presence_penalty),
        )
        if value is not None
    ]
    shaping = [
        option
        for option, value in (
            ("--temperature", args.temperature),
            ("--top-k", args.top_k),
            ("--top-p", args.top_p),
            ("--min-p", args.min_p),
        )
        if value is not None
    ]
    if args.greedy:
        if penalties or shaping:
            raise UserError(f"--greedy takes no sampling options, but {', '.join(penalties + shaping)} was given")
        return "greedy", "--greedy"
    if penalties and args.min_p is not None:
        raise UserError(
            "--min-p is sample_next's option and penalties are sampled by sample_with_penalties, which has no "
            "min-p: give one or the other"
        )
    if penalties:
        return "sample_with_penalties", " and ".join(penalties)
    return "sample_next", " and ".join(shaping) or "sampling"


def check_options(args: argparse.Namespace) -> None:
    if args.max_new_tokens < 0:
        raise UserError(f"--max-new-tokens must be >= 0, not {args.max_new_tokens}")
    if args.temperature is not None and not args.temperature > 0:
        raise UserError(
            f"--temperature must be > 0, not {args.temperature} (--greedy is the limit of small temperatures)"
        )
    if args.top_k is not None and args.top_k < 1:
        raise UserError(f"--top-k must be >= 1, not {args.top_k}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise UserError(f"--top-p must be in (0, 1], not {args.top_p}")
    if args.min_p is not None and not 0 <= args.min_p <= 1:
        raise UserError(f"--min-p must be in [0, 1], not {args.min_p}")
    for option, value in (
        ("--frequency-penalty", args.frequency_penalty),
        ("--presence-penalty", args.presence_penalty),
    ):
        if value is not None and not value > 0:
            raise UserError(f"{option} must be > 0, not {value} (1 means no penalty)")


def default_sampler(function: str) -> Path:
    """The solution notebook of the assignment that grades `function`, in solutions/ here or in the kit."""
    given = f"give --sampler NOTEBOOK (a notebook that defines `{function}`)"
    try:
        name = f"{grading([function]).name}.ipynb"
    except UserError:  # a student kit without that assignment
        raise UserError(f"no assignment of this kit grades `{function}`: {given}") from None
    for folder in (Path.cwd() / "solutions", kit.ROOT / "solutions"):
        if (folder / name).is_file():
            return folder / name
    raise UserError(f"no solutions/{name} found: {given}")


def load_sampler(notebook: Path, function: str, needed_for: str) -> Callable:
    loaded = load_notebook(notebook)
    for problem in loaded.problems:
        print(f"note: {notebook}: {problem}", file=sys.stderr)
    return require(
        loaded.namespace,
        [function],
        where=str(notebook),
        why=f"it is needed for {needed_for}",
        unloaded=loaded.unloaded,
    )[function]


def next_token_from(
    function: str, sampler: Callable, args: argparse.Namespace, generator: torch.Generator, notebook: Path
) -> NextToken:
    """Adapt a notebook's sampling function to the loop; its exceptions become one line naming the cell."""
    shaping = dict(
        temperature=1.0 if args.temperature is None else args.temperature, top_k=args.top_k, top_p=args.top_p
    )
    min_p = {} if args.min_p is None else {"min_p": args.min_p}  # a notebook from before min-p has no such argument
    penalties = dict(
        frequency_penalty=1.0 if args.frequency_penalty is None else args.frequency_penalty,
        presence_penalty=1.0 if args.presence_penalty is None else args.presence_penalty,
    )
    call = {
        "greedy": lambda logits, history: sampler(logits),
        "sample_next": lambda logits, history: sampler(logits, **shaping, **min_p, generator=generator),
        "sample_with_penalties": lambda logits, history: sampler(
            logits, history, **shaping, **penalties, generator=generator
        ),
    }[function]

    def next_token(logits: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        try:
            return call(logits, history)
        except Exception as e:
            location = notebook_location(e)
            raise UserError(
                f"{notebook}: `{function}` raised {describe_exception(e)}" + (f" ({location})" if location else "")
            ) from None

    return next_token


def run(args: argparse.Namespace) -> int:
    from course.checkpoint import load_checkpoint

    check_options(args)
    function, needed_for = sampling_function(args)
    notebook = args.sampler or default_sampler(function)
    sampler = load_sampler(notebook, function, needed_for)
    model, tokenizer = load_checkpoint(args.checkpoint)
    prompt = tokenizer.encode(args.prompt) or [tokenizer.eot_id]  # an empty prompt starts a new document
    if len(prompt) > model.config.block_size:
        raise UserError(
            f"the prompt is {len(prompt)} tokens, longer than the model's context of {model.config.block_size} tokens"
        )
    generator = torch.Generator()
    if args.seed is None:
        generator.seed()
    else:
        generator.manual_seed(args.seed)
    next_token = next_token_from(function, sampler, args, generator, notebook)
    ids = generate(model, torch.tensor([prompt]), args.max_new_tokens, next_token, eos_id=tokenizer.eot_id)[0].tolist()
    print(args.prompt + tokenizer.decode(until_eos(ids[len(prompt) :], tokenizer.eot_id)))
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("generate", help="print a continuation of a prompt")
    parser.add_argument("checkpoint", type=Path, help="a checkpoint folder (course train --out)")
    parser.add_argument("--prompt", required=True, help="the text to continue")
    parser.add_argument("--max-new-tokens", type=int, default=100)
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--min-p", type=float, help="keep tokens at least this fraction as likely as the top one")
    parser.add_argument("--frequency-penalty", type=float)
    parser.add_argument("--presence-penalty", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--greedy", action="store_true", help="always take the most likely token")
    parser.add_argument(
        "--sampler",
        type=Path,
        metavar="NOTEBOOK",
        help="the notebook whose sampling functions to use (default: solutions/)",
    )
    parser.set_defaults(run=run)
