"""`make demo`: the whole kit on real data, in the commands a newcomer would type.

    python -m course.demo [--data-dir DIR] [--out runs] [--max-steps N] [--assignments NN_name ...]

1. `course prepare`   WikiText-2 (from --data-dir / $COURSE_DATA_DIR offline, from the hub otherwise)
2. `course train`     the tiny preset, with a progress bar (a progress line every 25 s when not on a terminal)
3. one prompt continued by greedy, top-p and penalised sampling, side by side
4. `course build`     the student notebooks from the solutions
5. `grader grade`     each solution and each blank assignment (every assignment of grader/assignments/, from their
                      manifests): one line each, the whole report in a file
Then what to do next, for students, instructors and teaching assistants.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from course import kit
from course.assignments import names, solution_functions
from course.checkpoint import has_train_state, load_checkpoint
from course.errors import UserError
from course.generation import generate, until_eos

PROMPT = "The game was released in"
PROGRESS_EVERY = 25  # seconds: without a terminal (no progress bar), a line at least this often while a command runs


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def command(
    program: str, *args: str, log: Path | None = None, hidden: Callable[[str], bool] = lambda line: False
) -> str:
    """Run `program args` as the user would (console scripts of this environment) and return what it printed; stop
    the demo if it fails. Its output is shown as it comes, but for the `hidden` lines (said already), or with
    `log` written there instead. When stderr is not a terminal (no progress bars), a line says the command is still
    running whenever it has been quiet for PROGRESS_EVERY seconds."""
    shown = f"$ {program} {shlex.join(args)}"
    print(shown + (f"  > {log}" if log else ""), flush=True)
    module = {"course": "course.cli", "grader": "grader.cli"}[program]
    child = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=kit.ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if log else None,
        text=True,
        bufsize=1,
    )
    started, lines, quiet_since = time.monotonic(), [], [time.monotonic()]
    done = threading.Event()

    def keep_saying_it_runs():
        while not done.wait(1):
            if not sys.stderr.isatty() and time.monotonic() - quiet_since[0] >= PROGRESS_EVERY:
                print(f"  ... {program} {args[0]} still running ({time.monotonic() - started:.0f} s)", flush=True)
                quiet_since[0] = time.monotonic()

    heartbeat = threading.Thread(target=keep_saying_it_runs, daemon=True)
    heartbeat.start()
    try:
        for line in child.stdout:
            lines.append(line)
            if not log and not hidden(line):
                print(line, end="", flush=True)
                quiet_since[0] = time.monotonic()
        child.wait()
    finally:
        done.set()
        heartbeat.join()
    output = "".join(lines)
    if log:
        log.parent.mkdir(parents=True, exist_ok=True)
        kit.write_atomically(log, output)
    if child.returncode != 0:
        tail = "".join(lines[-20:]) if log else ""
        sys.exit(f"{tail}demo: `{program} {shlex.join(args)}` failed with exit code {child.returncode}")
    return output


def said_before(prepared: list[str]) -> Callable[[str], bool]:
    """`course train`'s lines that `course prepare` printed already: the corpus summary, and that it is prepared."""
    return lambda line: line in prepared or line.startswith("already prepared, nothing to do")


def continuations(checkpoint: Path, max_new_tokens: int, seed: int) -> dict[str, str]:
    """The same prompt continued three ways, with the solutions' own sampling functions."""
    sampling = solution_functions(["greedy", "sample_next"])
    penalties = solution_functions(["sample_with_penalties"])
    model, tokenizer = load_checkpoint(checkpoint)
    prompt = torch.tensor([tokenizer.encode(PROMPT)])
    generator = torch.Generator().manual_seed(seed)
    ways = {
        "greedy": lambda logits, history: sampling["greedy"](logits),
        "top-p 0.9": lambda logits, history: sampling["sample_next"](logits, top_p=0.9, generator=generator),
        "top-p 0.9 + penalties 1.2": lambda logits, history: penalties["sample_with_penalties"](
            logits, history, top_p=0.9, frequency_penalty=1.2, presence_penalty=1.2, generator=generator
        ),
    }

    def continuation(next_token) -> str:
        ids = generate(model, prompt, max_new_tokens, next_token, eos_id=tokenizer.eot_id)[0].tolist()
        return tokenizer.decode(until_eos(ids[prompt.shape[1] :], tokenizer.eot_id))

    return {name: continuation(next_token) for name, next_token in ways.items()}


def side_by_side(columns: dict[str, str], width: int = 32) -> str:
    wrapped = {name: textwrap.wrap(" ".join(text.split()), width) or [""] for name, text in columns.items()}
    height = max(len(lines) for lines in wrapped.values())
    rows = [" | ".join(name.ljust(width) for name in wrapped), "-+-".join("-" * width for _ in wrapped)]
    for i in range(height):
        rows.append(" | ".join((lines[i] if i < len(lines) else "").ljust(width) for lines in wrapped.values()))
    return "\n".join(rows)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m course.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="a local WikiText-2 folder (default: $COURSE_DATA_DIR, else the hub)")
    parser.add_argument("--out", type=Path, default=kit.ROOT / "runs", help="where the checkpoint and results go")
    parser.add_argument("--max-steps", type=int, help="training steps (default: the tiny preset's own)")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    graded = names()
    parser.add_argument("--assignments", nargs="+", default=graded, choices=graded, metavar="NAME")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)

    started = time.perf_counter()
    try:
        data_dir = kit.data_dir(args.data_dir)
    except UserError as error:
        parser.error(str(error))
    data = ["--data-dir", str(data_dir.resolve())] if data_dir else []  # the commands run in the kit's folder
    if not data:
        print("No --data-dir and no COURSE_DATA_DIR: WikiText-2 comes from the Hugging Face hub.")
    checkpoint = args.out.resolve() / "tiny"
    results = args.out.resolve() / "demo-results"

    step("1. Prepare WikiText-2: train the BPE tokenizer, cache the encoded splits")
    prepared = command("course", "prepare", *data).splitlines(keepends=True)

    step("2. Train the tiny model on the CPU")
    steps = ["--max-steps", str(args.max_steps)] if args.max_steps else []
    resume = ["--resume"] if has_train_state(checkpoint) else []  # a second demo continues (or reuses) the first
    train = ["--preset", "tiny", "--out", str(checkpoint), *steps, *resume, *data]
    command("course", "train", *train, hidden=said_before(prepared))

    step(f"3. One prompt, three ways to choose the next token: {PROMPT!r}")
    print(side_by_side(continuations(checkpoint, args.max_new_tokens, args.seed)))
    print(CONTINUATIONS_SAY)

    step("4. Build the student notebooks from the solutions")
    command("course", "build")

    step("5. Grade each solution (full marks expected) and each blank assignment (0 expected)")
    for name in args.assignments:
        for kind, folder in (("solution", "solutions"), ("assignment", "assignments")):
            path = results / f"{kind}-{name}.json"
            command("grader", "grade", f"{folder}/{name}.ipynb", "--results", str(path), log=path.with_suffix(".txt"))
            graded = json.loads(path.read_text())
            total = sum(test["max_score"] for test in graded["tests"])
            print(f"  {folder}/{name}.ipynb: {graded['score']:g}/{total:g}", flush=True)
    print(f"  (the blank notebooks score 0: every function still raises NotImplementedError; reports: {results})")

    step(f"Done in {time.perf_counter() - started:.0f} s. Next steps:")
    print(
        NEXT_STEPS.format(
            checkpoint=checkpoint.relative_to(kit.ROOT) if checkpoint.is_relative_to(kit.ROOT) else checkpoint,
            first=names()[0],
            example=args.assignments[0],
        )
    )
    return 0


CONTINUATIONS_SAY = """\
greedy takes the most likely token every time: a model this small soon repeats itself (as in the `greedy:` line that
training ends with). top-p 0.9 samples among the tokens that hold 90% of the probability; the penalties lower the
tokens already written. <unk> stands for the rare words that WikiText itself replaced."""
NEXT_STEPS = """\
students:     open the notebooks: .venv/bin/jupyter lab assignments/ (start with {first})
              try a sampler: .venv/bin/course generate {checkpoint} --prompt 'The film' --top-p 0.9
instructors:  lectures as slides: make slides (decks in lectures/slides/); edit an assignment in solutions/, then
              .venv/bin/course build; the student kit: .venv/bin/course release OUT
assistants:   grade a folder of submissions:
              .venv/bin/grader batch SUBMISSIONS --assignment {example} --jobs 4
everyone:     README.md, per role; every command: docs/cli.md"""


if __name__ == "__main__":
    sys.exit(main())
