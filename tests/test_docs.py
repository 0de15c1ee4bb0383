"""The kit's own documents stay true and self-contained.

docs/cli.md names exactly the commands and options of the real argparse parsers (and the Makefile's targets);
every relative link of the Markdown pages of docs/, the README and CONTRIBUTING.md leads to a file, and to a
heading of it when it names one; and no tracked file cites a document that is not in the repository.
"""

from __future__ import annotations

import argparse
import re
import subprocess

import pytest

from course import demo, fixtures
from course.cli import make_parser as course_parser
from course.kit import ROOT
from course.lectures import cli as lectures_cli
from grader.cli import make_parser as grader_parser

CLI_PAGE = ROOT / "docs" / "cli.md"
LINKED_PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md", ROOT / "CONTRIBUTING.md"]
HEADING = re.compile(r"^### `([^`]+)`\s*$")
FIRST_CELL = re.compile(r"^\|\s*(`[^|]*)\|")
OUTSIDE_DOCUMENT = re.compile(
    "|".join(
        [
            r"\b" + "SP" + r"EC\b",  # written in two pieces so that this file does not cite it
            r"(?i:\bthe sp" + r"ec\b)",
            r"(?i:\bsp" + r"ec's\b)",
            r"(?i:\bsp" + r"ec\.md\b)",
        ]
    )
)


def _commands() -> dict[str, argparse.ArgumentParser]:
    """'course train' -> its parser, for every subcommand of `course` and `grader` and every `python -m` module."""
    found = {}
    for parser in (course_parser(), grader_parser()):
        subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        found.update({f"{parser.prog} {name}": sub for name, sub in subcommands.choices.items()})
    for module in (demo, lectures_cli, fixtures):
        parser = module.make_parser()
        found[parser.prog] = parser
    return found


def _arguments(parser: argparse.ArgumentParser) -> set[str]:
    """What a user types or names: every option string, and each positional argument as its METAVAR."""
    names = set()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        names.update(action.option_strings or [action.metavar or action.dest.upper()])
    return names


def _documented() -> dict[str, set[str]]:
    """'course train' -> the arguments its section of docs/cli.md lists (the first word of each `code` span of a
    table row's first cell)."""
    sections: dict[str, set[str]] = {}
    current = None
    for line in CLI_PAGE.read_text().splitlines():
        if heading := HEADING.match(line):
            current = sections.setdefault(heading[1], set())
        elif line.startswith("## "):
            current = None
        elif current is not None and (cell := FIRST_CELL.match(line)):
            current.update(span.split()[0] for span in re.findall(r"`([^`]+)`", cell[1]))
    return sections


def test_every_command_has_its_section():
    documented, real = set(_documented()), set(_commands())
    assert real - documented == set(), f"commands docs/cli.md leaves out: {sorted(real - documented)}"
    assert documented - real == set(), f"docs/cli.md documents commands that do not exist: {sorted(documented - real)}"


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_option_is_documented_and_exists(command):
    real, documented = _arguments(_commands()[command]), _documented().get(command, set())
    assert real - documented == set(), f"`{command}` arguments docs/cli.md leaves out: {sorted(real - documented)}"
    assert documented - real == set(), f"docs/cli.md lists `{command}` arguments it lacks: {sorted(documented - real)}"


def test_make_targets_are_the_makefiles():
    phony = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith(".PHONY:"):
            phony.update(line.split(":", 1)[1].split())
    documented = set(re.findall(r"^\| `make ([\w-]+)` \|", CLI_PAGE.read_text(), flags=re.MULTILINE))
    assert documented == phony


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation but '-' and '_' dropped, spaces as '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page) -> set[str]:
    return {_anchor(line.lstrip("#")) for line in page.read_text().splitlines() if re.match(r"#{1,6} ", line)}


@pytest.mark.parametrize("page", LINKED_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_somewhere(page):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in _anchors(linked)):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)} links to what is not there: {broken}"


def test_no_tracked_file_cites_a_document_outside_the_repository():
    """The kit's contract is docs/: a reference to a document that is not in the repository cannot be followed."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    citing = []
    for name in filter(None, tracked.decode().split("\0")):
        path = ROOT / name
        if not path.is_file():
            continue  # deleted in the working tree, not yet in the index
        content = path.read_bytes()
        if b"\0" in content:
            continue  # binary
        citing += [f"{name}:{n}" for n, line in enumerate(content.decode(errors="replace").splitlines(), 1)
                   if OUTSIDE_DOCUMENT.search(line)]  # fmt: skip
    assert not citing, f"replace these with the rule itself or a pointer into docs/: {citing}"
