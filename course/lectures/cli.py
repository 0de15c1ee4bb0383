"""`python -m course.lectures [--out DIR] [--figures DIR [--force]] [NOTEBOOK...]`: what `make slides` and
`make figures` run.

The README's figures say which model drew them: `--figures DIR` writes, beside the images, DIR/source.json with the
checkpoint the lectures used (its preset, parameters and training steps; tests/test_docs.py holds the README's
caption to it), and refuses to replace figures that a larger preset drew unless --force."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from course.checkpoint import PREFERRED_RUNS, find_checkpoints, has_train_state, load_train_state, read_config
from course.errors import UserError
from course.kit import ROOT
from course.lectures.decks import export_slides, provide_slide_assets, tagged_figures

FIGURES_SOURCE = "source.json"


def checkpoint_summary(path: Path) -> dict:
    """{preset (a name of course.model.PRESETS, or 'custom'), parameters, steps (None when not recorded)} of a
    checkpoint."""
    import torch

    from course.model import GPT, PRESETS

    config = read_config(path)
    recorded = config.to_dict()  # a preset is its shape: the vocabulary and training's dropout aside
    with torch.device("meta"):
        parameters = GPT(config).num_params()
    return {
        "preset": next(
            (name for name, shape in PRESETS.items() if all(recorded.get(k) == v for k, v in shape.items())), "custom"
        ),
        "parameters": parameters,
        "steps": load_train_state(path)["step"] if has_train_state(path) else None,
    }


def check_figures_may_be_replaced(folder: Path, drawing: dict, force: bool) -> None:
    """UserError when `folder` holds figures a larger preset drew than `drawing`'s (the README shows them)."""
    recorded = folder / FIGURES_SOURCE
    if force or not recorded.is_file():
        return
    before = json.loads(recorded.read_text())
    rank = {name: i for i, name in enumerate(PREFERRED_RUNS)}  # the largest first
    if rank.get(drawing["preset"], len(rank)) > rank.get(before["preset"], len(rank)):
        raise UserError(
            f"{folder} holds figures drawn by the {before['preset']} preset and the lectures would redraw them with "
            f"the {drawing['preset']} preset's checkpoint: train the larger one (course train --preset "
            f"{before['preset']}), or pass --force and update the README's caption"
        )


def make_parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m course.lectures", description="Execute lecture notebooks and export them as reveal.js decks."
    )
    parser.add_argument("notebooks", nargs="*", help="lecture notebooks (.ipynb)")
    parser.add_argument("--out", default=str(ROOT / "lectures" / "slides"), help="folder for the decks")
    parser.add_argument(
        "--online", action="store_true", help="load reveal.js from the web instead of fetching it next to the decks"
    )
    parser.add_argument("--figures", metavar="DIR", help="also write the images of cells tagged figure:NAME here")
    parser.add_argument(
        "--force", action="store_true", help="with --figures: replace figures that a larger preset drew"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m course.lectures [--out DIR] [--figures DIR [--force]] [NOTEBOOK...]` (what `make slides` and
    `make figures` run); without a notebook it only fetches reveal.js into DIR/assets."""
    import sys

    from course.kit import write_atomically

    args = make_parser().parse_args(argv)
    out = Path(args.out)
    try:
        missing = [notebook for notebook in args.notebooks if not Path(notebook).is_file()]
        if missing:
            raise UserError(f"expected a Jupyter notebook at {missing[0]}, found none")
        if args.figures and args.notebooks:
            found = find_checkpoints(Path(args.notebooks[0]).resolve().parent)  # where the lectures will look
            if not found:
                raise UserError("no checkpoint for the lectures: train one (course train --preset tiny)")
            drawing = checkpoint_summary(next(iter(found.values())))
            check_figures_may_be_replaced(Path(args.figures), drawing, args.force)
        if not args.online:
            try:
                print(f"reveal.js for offline decks: {provide_slide_assets(out)}")
            except UserError as e:
                print(f"{e}; the decks will load reveal.js from the web", file=sys.stderr)
        figures = {}  # written once every lecture has run, with their source
        for notebook in args.notebooks:
            deck, executed = export_slides(notebook, out)
            print(f"wrote {deck}")
            figures.update(tagged_figures(executed) if args.figures else {})
        for name, png in figures.items():
            write_atomically(Path(args.figures) / f"{name}.png", png)
            print(f"wrote {Path(args.figures) / f'{name}.png'}")
        if args.figures and args.notebooks:
            write_atomically(Path(args.figures) / FIGURES_SOURCE, json.dumps(drawing, indent=2) + "\n")
            print(f"wrote {Path(args.figures) / FIGURES_SOURCE}: drawn by the {drawing['preset']} preset")
    except UserError as e:
        print(f"python -m course.lectures: error: {e}", file=sys.stderr)
        return e.exit_code
    return 0
