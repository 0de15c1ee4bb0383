"""`course new-assignment NN_name "Title"`: the files of a new assignment, as CONTRIBUTING.md's recipe starts it.

It writes, and refuses to overwrite anything:

    grader/assignments/NN_name/assignment.toml   the manifest: the title, a summary to rewrite, the graded function
    grader/assignments/NN_name/test_visible.py   a visible test of the example function
    grader/assignments/NN_name/test_hidden.py    a hidden one
    grader/assignments/NN_name/mutants.toml      one mutant of the example (write at least 10 of yours)
    grader/assignments/NN_name/README.md         the contract of the graded function, for docs/assignments.md
    solutions/NN_name.ipynb                      the solution notebook: its title, the common set-up cell, the
                                                 example function in a solution region with a demo, a written
                                                 question with its answer cell and model answer, the self-check

Everything is a working example to replace: `course build` builds it, its solution scores full marks, its blank 0.
"""

from __future__ import annotations

import json

from course import kit
from course.assignments import MANIFEST_FILE, MUTANTS_FILE, NAME, assignments, assignments_dir
from course.build import common_source, render
from course.errors import UserError

EXAMPLE = "example_function"

MANIFEST = """\
title = {title}
summary = "one line for the kit's tables: what the student writes and learns (rewrite it)"
graded = ["{example}"]  # the graded functions and classes, in teaching order
ship = []  # helper modules the visible tests load, shipped to students with them
reuses = []  # earlier assignments whose graded functions the notebook gives as stubs or builds on

[[questions]]  # written questions, answered in a markdown cell `#### Answer: NAME`, graded by a person
name = "example-question"
points = 2
question = "Why does the largest logit give the most likely token? (an example: write your own)"
"""

VISIBLE = '''\
"""Visible tests of {name}: shipped with the assignment, run by `check("{name}")`. Small inputs you can check by hand;
the hidden tests check the same rules on other inputs. (An example: replace it with the tests of your functions.)"""

import torch

from grader.testing import expect_tensor, points


@points(1)
def test_{example}_picks_the_largest_logit(student):
    """{example} returns the index of the largest logit"""
    out = student.{example}(torch.tensor([0.1, 3.0, 2.0]))
    expect_tensor(out, dtype=torch.int64, shape=())
    assert out.item() == 1, "{example} should return 1, the index of the largest logit (3.0)"
'''

HIDDEN = '''\
"""Hidden tests of {name} (never shipped): a failed one shows only its docstring and its message."""

import torch

from grader.testing import expect_tensor, points


@points(2)
def test_{example}_one_index_per_row(student):
    """{example} returns one index per row of a batch"""
    out = student.{example}(torch.tensor([[0.0, 1.0, 5.0], [7.0, 1.0, 2.0]]))
    expect_tensor(out, dtype=torch.int64, shape=(2,))
    assert out.tolist() == [2, 0], "{example} should take the largest logit of each row, over the last dimension"
'''

MUTANTS = """\
# Mutants: the solution notebook with one mistake each (tests/mutants/patches.py, CONTRIBUTING.md). At least 10.

[[mutant]]
name = "{example}_wrong_dimension"
wrong = "the largest logit over the first dimension, not the last"
function = "{example}"
find = "dim=-1"
replace = "dim=0"
"""

CONTRACT = """\
| function | semantics |
|---|---|
| `{example}(logits)` | the index of the largest logit of each row: int64, shape `logits.shape[:-1]` (an example: replace it) |
"""


def cells(name: str, title: str) -> list[tuple[str, str, list[str]]]:
    """(kind, source, tags) of the solution notebook's cells."""
    number = name[:2]
    return [
        (
            "markdown",
            f"# Assignment {number} · {title}\n\nWhat the student learns, in a few sentences, and the functions they "
            f"write:\n\n| function | what it does |\n|---|---|\n| `{EXAMPLE}(logits)` | the index of the largest "
            "logit (an example: replace it) |",
            [],
        ),
        ("code", common_source("common:setup", name, f"{name} cell 2"), ["common:setup"]),
        ("code", "import torch", []),
        ("markdown", f"## 1. `{EXAMPLE}` (graded)\n\nThe lesson, then the rules the tests check.", []),
        (
            "code",
            f'def {EXAMPLE}(logits: torch.Tensor) -> torch.Tensor:\n    """The index of the largest logit of each '
            'row."""\n    # BEGIN SOLUTION hint: torch.argmax over the last dimension\n'
            "    return torch.argmax(logits, dim=-1)\n    # END SOLUTION",
            [],
        ),
        ("code", f"with demo():\n    print({EXAMPLE}(torch.tensor([0.1, 3.0, 2.0])))", []),
        (
            "markdown",
            "**Explain.** Why does the largest logit give the most likely token? Answer in the cell below, under its "
            "first line (keep that line: it tells the grader which question you answer; a person reads and grades it).",
            [],
        ),
        ("markdown", "#### Answer: example-question\n_Write your answer here._", []),
        (
            "markdown",
            "**Model answer (example-question), for the teaching assistants.** The softmax is increasing in each logit, "
            "so the largest logit has the largest probability. Full marks: the softmax preserves the order.",
            ["instructor"],
        ),
        ("markdown", "## 2. Check your work", []),
        ("code", common_source("common:check", name, f"{name} last cell"), ["common:check"]),
    ]


def solution_notebook(name: str, title: str) -> bytes:
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    for number, (kind, source, tags) in enumerate(cells(name, title), start=1):
        cell = nbformat.v4.new_code_cell(source) if kind == "code" else nbformat.v4.new_markdown_cell(source)
        cell.metadata = {"tags": tags} if tags else {}
        cell.id = f"cell-{number:02d}"
        notebook.cells.append(cell)
    return render(notebook)


def new_assignment(name: str, title: str) -> int:
    if not NAME.fullmatch(name):
        raise UserError(f"{name!r} is not an assignment's name: expected NN_name (two digits, then lower-case words)")
    if not title.strip() or "\n" in title:
        raise UserError("the title should be one line of text, as the notebook's first heading gives it")
    folder, solution = assignments_dir() / name, kit.ROOT / "solutions" / f"{name}.ipynb"
    for path in (folder, solution):
        if path.exists():
            raise UserError(f"{path} exists: choose another name (an assignment is never written over)")
    taken = [one.name for one in assignments() if one.number == int(name[:2])]
    if taken:
        raise UserError(f"the number {name[:2]} is {taken[0]}'s, and it orders the assignments: choose another")
    files = {
        folder / MANIFEST_FILE: MANIFEST.format(title=json.dumps(title.strip()), example=EXAMPLE),
        folder / "test_visible.py": VISIBLE.format(name=name, example=EXAMPLE),
        folder / "test_hidden.py": HIDDEN.format(name=name, example=EXAMPLE),
        folder / MUTANTS_FILE: MUTANTS.format(example=EXAMPLE),
        folder / "README.md": CONTRACT.format(example=EXAMPLE),
    }
    notebook = solution_notebook(name, title.strip())
    with kit.atomic_folder(folder) as staging:
        for path, text in files.items():
            (staging / path.name).write_text(text, encoding="utf-8")
    kit.write_atomically(solution, notebook)
    for path in [*files, solution]:
        print(f"wrote {path.relative_to(kit.ROOT)}")
    print(
        f"next: write the lesson and your functions in {solution.relative_to(kit.ROOT)}, their tests and at least 10 "
        f"mutants in {folder.relative_to(kit.ROOT)}/, then `course build` (CONTRIBUTING.md, Add an assignment)"
    )
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("new-assignment", help="write a new assignment's folder and solution notebook")
    parser.add_argument("name", metavar="NN_name", help="two digits (its place in the order), then lower-case words")
    parser.add_argument("title", help="its title, as the notebook's first heading gives it")
    parser.set_defaults(run=lambda args: new_assignment(args.name, args.title))
