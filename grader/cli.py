"""The `grader` command: grade, batch, gradescope, check."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from course.cli import OneLineErrorParser, run_command
from course.errors import UserError
from grader import results as results_file
from grader.identity import Limits
from grader.plain import require_sandbox
from grader.runner import find_assignment, grade, infer_assignment


def _limits(args) -> Limits:
    return Limits(call_timeout=args.timeout) if args.timeout else Limits()


def run_grade(args) -> int:
    notebook = Path(args.notebook)
    if not notebook.is_file():
        raise UserError(f"no notebook at {notebook}")
    name = args.assignment or infer_assignment(notebook, args.tests_dir)
    assignment = find_assignment(name, args.tests_dir)
    results_path = Path(args.results) if args.results else notebook.parent / "results.json"
    results = grade(
        notebook, assignment, results_path=results_path, limits=_limits(args), visible_only=args.visible_only
    )
    print(results_file.report(results, f"{name}: {notebook}"))
    print(f"Results written to {results_file.printable(str(results_path))}")
    return 0


def run_batch(args) -> int:
    from grader.batch import FAILED, SKIPPED, listed
    from grader.batch import run_batch as batch

    require_sandbox()
    assignment = find_assignment(args.assignment, args.tests_dir)
    result = batch(
        Path(args.folder),
        assignment,
        jobs=args.jobs,
        results_dir=args.results_dir and Path(args.results_dir),
        csv_path=args.csv and Path(args.csv),
        limits=_limits(args),
        progress=not args.quiet,
        lms=tuple(args.lms or ()),
        lms_assignment=args.lms_assignment,
        roster=args.roster and Path(args.roster),
    )
    for row in result.rows:
        if row.status in (SKIPPED, FAILED):
            print(f"{row.status} {results_file.printable(row.student)}: {row.reason}")
    print(result.summary())
    for platform in dict.fromkeys(args.lms or ()):
        if unidentified := result.unidentified(platform):
            names = listed([results_file.printable(name) for name in unidentified])
            print(f"no {platform.capitalize()} identifier for {len(unidentified)} students ({names}): give --roster")
    print(result.where())
    return 0


def run_check(args, workers=None) -> int:
    """`grader check`; `workers` (a zygote or plain.PlainWorkers) is the check service's, kept warm between checks."""
    import json

    assignment = find_assignment(args.name, args.tests_dir)
    if args.cells:
        source = json.loads(Path(args.cells).read_text())
    elif args.notebook:
        source = Path(args.notebook)
        if not source.is_file():
            raise UserError(f"no notebook at {source}")
    else:
        raise UserError("pass --notebook PATH (or call check() from a notebook cell)")
    results = grade(
        source,
        assignment,
        results_path=args.results and Path(args.results),
        limits=_limits(args),
        visible_only=True,
        zygote=workers,
    )
    if not args.quiet:
        print(results_file.report(results, f"{args.name}: visible tests"))
    return 0


def serve_checks(args) -> int:
    """A notebook session's self-checks, one after another, over workers kept warm for the session.

    Each line on stdin is a JSON list of `grader check` arguments; each answer, one JSON line on what was
    stdout: {"error": null} when the check ran, or {"error": "one line"}. Only the workers' source is kept
    between checks: a zygote that has never run student code, or plain.py's spare interpreter; every check
    starts its own grading and its own workers, so a check never sees an earlier check's code. Ends at the
    end of stdin (the notebook's kernel has gone)."""
    import json
    import os

    from grader.plain import PlainWorkers, sandbox_unavailable
    from grader.sandbox import Zygote

    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    with open(os.devnull, "w") as quiet:
        os.dup2(quiet.fileno(), 1)  # nothing else may write into the answers
    sys.stdout = sys.stderr
    parser = make_parser()
    with answers, Zygote() if sandbox_unavailable() is None else PlainWorkers(spare=True) as workers:
        for line in sys.stdin:
            arguments, error = json.loads(line), None
            try:
                run_check(parser.parse_args(["check", *arguments]), workers)
            except UserError as problem:
                error = str(problem)
            except SystemExit:  # argparse refused them, and said why on stderr
                error = f"`grader check` does not take the arguments {' '.join(arguments)}"
            except Exception as problem:  # noqa: BLE001 -- one failed check must not end the session's service
                error = f"{type(problem).__name__}: {problem}"
            answers.write(json.dumps({"error": error}) + "\n")
            answers.flush()
    return 0


def run_gradescope(args) -> int:
    from grader.gradescope import build_zip, manual_questions

    path = build_zip(args.name, Path(args.output), args.tests_dir and Path(args.tests_dir))
    print(f"Gradescope autograder for {args.name} written to {path}")
    if note := manual_questions(args.name, args.tests_dir and Path(args.tests_dir)):
        print(note)
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="grader", description="The course autograder")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineErrorParser)

    p = commands.add_parser("grade", help="grade one notebook")
    p.add_argument("notebook")
    p.add_argument("--assignment", help="assignment name (default: from the notebook's file name, NN_name.ipynb)")
    p.add_argument("--results", help="where to write results.json (default: beside the notebook)")
    p.add_argument("--tests-dir", help="a folder of assignment tests to use instead of the kit's")
    p.add_argument("--timeout", type=float, help="seconds per call into student code (default 10)")
    p.add_argument("--visible-only", action="store_true", help="run the visible tests only")
    p.set_defaults(run=run_grade)

    p = commands.add_parser(
        "batch",
        help="grade every student's notebook of a folder (DIR/NAME.ipynb or DIR/STUDENT/NAME.ipynb), in parallel",
    )
    p.add_argument("folder")
    p.add_argument("--assignment", required=True)
    p.add_argument("--jobs", type=int, default=2, help="notebooks graded at once (default 2)")
    p.add_argument(
        "--csv",
        help="where to write the scores, a row per student (default: RESULTS_DIR/scores.csv); the other tables "
        "(per test, written answers, --lms) go beside it",
    )
    p.add_argument("--results-dir", help="where to write one results file per notebook (default: FOLDER/results)")
    p.add_argument(
        "--lms",
        action="append",
        choices=["canvas", "moodle"],
        help="also write the scores in this learning platform's grade import format (may be given twice)",
    )
    p.add_argument(
        "--lms-assignment",
        help="the assignment's column title for Canvas, such as 'Sampling (4567)' with Canvas's assignment id "
        "(default: the assignment's name)",
    )
    p.add_argument(
        "--roster",
        help="a CSV with the columns student, id and optionally name: each student's identifier for the platform",
    )
    p.add_argument("--tests-dir", help="a folder of assignment tests to use instead of the kit's")
    p.add_argument("--timeout", type=float, help="seconds per call into student code (default 10)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run_batch)

    p = commands.add_parser("gradescope", help="build a Gradescope autograder zip for one assignment")
    p.add_argument("name")
    p.add_argument("-o", "--output", required=True, help="the zip to write")
    p.add_argument("--tests-dir", help="a folder of assignment tests to use instead of the kit's")
    p.set_defaults(run=run_gradescope)

    p = commands.add_parser("check", help="run the visible tests on a notebook (or, from a cell, on the session)")
    p.add_argument("name")
    p.add_argument("--notebook", help="the notebook to check")
    p.add_argument("--cells", help=argparse.SUPPRESS)  # a JSON list of cell sources: what check() sends
    p.add_argument("--results", help=argparse.SUPPRESS)
    p.add_argument("--tests-dir", help="a folder of assignment tests to use instead of the kit's")
    p.add_argument("--timeout", type=float, help="seconds per call into student code (default 10)")
    p.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(run=run_check)

    p = commands.add_parser("check-service", help="serve a notebook session's check() calls (check() starts it)")
    p.set_defaults(run=serve_checks)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command("grader", make_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
