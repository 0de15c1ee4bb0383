"""The `course` command. Each subcommand lives in the module that does the work."""

from __future__ import annotations

import argparse
import importlib
import sys

from course.errors import UserError

# subcommand -> module with `register(subparsers)`; each registers a parser whose `run(args)` does the work
COMMAND_MODULES = [
    "course.data",  # prepare
    "course.train",  # train
    "course.evaluate",  # eval
    "course.generation",  # generate
    "course.build",  # build
    "course.export_hf",  # export-hf
]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="course", description="Sampling & Inference course kit")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except UserError as e:
        print(f"course {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"course {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
