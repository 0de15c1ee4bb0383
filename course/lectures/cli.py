"""`python -m course.lectures [--out DIR] [--figures DIR] [NOTEBOOK...]`: what `make slides` and `make figures` run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from course.kit import ROOT
from course.lectures.decks import export_slides, provide_slide_assets, tagged_figures


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m course.lectures [--out DIR] [--figures DIR] [NOTEBOOK...]` (what `make slides` and
    `make figures` run); without a notebook it only fetches reveal.js into DIR/assets."""
    import sys

    from course.errors import UserError
    from course.kit import write_atomically

    args = make_parser().parse_args(argv)
    out = Path(args.out)
    try:
        missing = [notebook for notebook in args.notebooks if not Path(notebook).is_file()]
        if missing:
            raise UserError(f"expected a Jupyter notebook at {missing[0]}, found none")
        if not args.online:
            try:
                print(f"reveal.js for offline decks: {provide_slide_assets(out)}")
            except UserError as e:
                print(f"{e}; the decks will load reveal.js from the web", file=sys.stderr)
        for notebook in args.notebooks:
            deck, executed = export_slides(notebook, out)
            print(f"wrote {deck}")
            for name, png in tagged_figures(executed).items() if args.figures else ():
                figure = Path(args.figures) / f"{name}.png"
                write_atomically(figure, png)
                print(f"wrote {figure}")
    except UserError as e:
        print(f"python -m course.lectures: error: {e}", file=sys.stderr)
        return e.exit_code
    return 0
