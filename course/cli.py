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
    "course.bakeoff",  # bakeoff
    "course.build",  # build
    "course.release",  # release
    "course.scaffold",  # new-assignment
    "course.export_hf",  # export-hf
]


class OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def make_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="course", description="Sampling & Inference course kit")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=OneLineErrorParser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def run_command(program: str, args: argparse.Namespace) -> int:
    """Run a parsed subcommand: a user's mistake is one line on stderr and exit code 2, never a traceback."""
    try:
        return args.run(args) or 0
    except UserError as e:
        print(f"{program} {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{program} {args.command}: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    return run_command("course", make_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
