"""What every lecture notebook loads first: the checkpoint (found by `course.checkpoint.find_checkpoints`), the
assignment solutions it runs, and WikiText. A problem stops the notebook with a plain message (`LectureStop`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from course.assignments import solution_functions
from course.checkpoint import PREFERRED_RUNS, find_checkpoints, load_checkpoint
from course.errors import UserError

MAKE_CHECKPOINT = """\
No checkpoint found. The lecture looked at $COURSE_CHECKPOINT, then at {runs} in {folder} and one folder up.
Make the tiny one (about 3 minutes on a laptop CPU) from the course kit's folder:

    course prepare --data-dir PATH/TO/wikitext-2     # or without --data-dir when online
    course train --preset tiny --out runs/tiny

then run this notebook again (or set COURSE_CHECKPOINT to a checkpoint folder)."""


class LectureStop(Exception):
    """Stops a lecture notebook with a plain message (IPython shows it without a traceback)."""

    def _render_traceback_(self):
        return str(self).splitlines()


def lecture_checkpoints(folder: str | Path | None = None) -> dict[str, Path]:
    """`course.checkpoint.find_checkpoints(folder)` (the preferred first), or LectureStop saying how to make one."""
    try:
        found = find_checkpoints(folder)
    except UserError as e:
        raise LectureStop(str(e)) from None
    if not found:
        folder = Path.cwd() if folder is None else Path(folder)
        runs = ", ".join(f"runs/{name}" for name in PREFERRED_RUNS)
        raise LectureStop(MAKE_CHECKPOINT.format(runs=runs, folder=folder.resolve()))
    return found


def load_lecture_model():
    """(model, tokenizer, path) of the preferred checkpoint (see `lecture_checkpoints`), in eval mode on CPU."""
    path = next(iter(lecture_checkpoints().values()))
    model, tokenizer = load_checkpoint(path)
    return model, tokenizer, path


def load_solution(functions: Sequence[str], also: Sequence[str] = ()) -> dict[str, Callable]:
    """The named functions from the solution notebook of the assignment that grades them (its manifest's `graded`),
    and the names in `also` that notebook gives, through the course's notebook loader (the same code the students
    complete and the grader runs: one source of truth)."""
    try:
        return solution_functions(functions, also)
    except UserError as error:
        raise LectureStop(f"{error}; the lectures use its functions") from None


def describe(model, path) -> str:
    c = model.config
    return (
        f"{path}: {model.num_params() / 1e6:.2f}M parameters, {c.n_layer} layers x {c.n_head} heads, "
        f"width {c.n_embd}, context {c.block_size}, vocabulary {c.vocab_size:,}"
    )


def wikitext_corpus(dataset: str = "wikitext-2-v1"):
    """WikiText from $COURSE_DATA_DIR, else from the Hugging Face hub (online). Raises LectureStop saying
    what went wrong."""
    from course.data import load_corpus

    try:
        return load_corpus(dataset)
    except (UserError, ImportError, OSError) as e:
        raise LectureStop(
            f"WikiText not found: set COURSE_DATA_DIR to a folder with the WikiText files ({e})"
        ) from None
