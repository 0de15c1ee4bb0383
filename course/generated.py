"""The kit's tables of assignments, written by `course build` from the manifests (course/assignments.py).

A document holds a generated section between two marker lines:

    <!-- BEGIN assignments: written by `course build` from grader/assignments/*/assignment.toml -->
    ...
    <!-- END assignments -->

Everything between them is the build's; everything around them is written by hand. The sections:

- README.md, `assignments`: the table of assignments (title, summary, what the student writes and explains);
- docs/assignments.md, `assignment-index`: the list of the assignments' sections;
- docs/assignments.md, `assignment-contracts`: one section per assignment: its manifest (title, summary, graded
  functions, written questions, what it builds on, the helpers shipped with its visible tests), the predictions its
  solution asks for, then the contract of its graded functions, the folder's README.md.

So adding an assignment is adding its folder and its solution: no document is edited by hand.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path

from course import kit
from course.assignments import Assignment, assignments
from course.errors import UserError

PREDICTION = re.compile(r"PREDICT_[A-Z0-9_]+")
BEGIN = "<!-- BEGIN {name}: written by `course build` from grader/assignments/*/assignment.toml -->\n"
END = "<!-- END {name} -->"


def readme_table(chosen: list[Assignment]) -> str:
    rows = ["| assignment | what it is about | you write | you explain |", "|---|---|---|---|"]
    for one in chosen:
        builds_on = f" (builds on {', '.join(f'`{name}`' for name in one.reuses)})" if one.reuses else ""
        rows.append(
            f"| [{one.name}](assignments/{one.name}.ipynb) | **{one.title}**: {one.summary}{builds_on} "
            f"| {_code(one.graded)} "
            f"| {_code(q.name for q in one.questions)} |"
        )
    return "\n".join(rows)


def index(chosen: list[Assignment]) -> str:
    return "\n".join(f"- [{one.name}](#{one.name}): {one.title}" for one in chosen)


def contracts(chosen: list[Assignment]) -> str:
    return "\n\n".join(_contract(one) for one in chosen)


def _contract(one: Assignment) -> str:
    folder = one.folder.relative_to(one.root).as_posix()
    facts = [
        f"- notebook: `solutions/{one.name}.ipynb`, built into `assignments/{one.name}.ipynb`; tests, manifest and "
        f"mutants: `{folder}/`",
        f"- graded: {_code(one.graded) or 'nothing (no function is graded)'}",
    ]
    if one.reuses:
        facts.append(f"- builds on: {_code(one.reuses)} (shipped together)")
    if one.ship:
        facts.append(f"- shipped with the visible tests: {_code(one.ship)}")
    if predicted := predictions(one):
        facts.append(f"- predictions, graded by hidden tests: {_code(predicted)}")
    facts += [f"- written question `{q.name}` ({q.points:g} points): {q.question}" for q in one.questions]
    parts = [f"## {one.name}", f"**{one.title}**: {one.summary}.", "\n".join(facts)]
    if one.contract:
        parts.append(one.contract)
    return "\n\n".join(parts)


def predictions(one: Assignment) -> list[str]:
    """The prediction constants (`PREDICT_...`) the assignment's solution notebook assigns, in the notebook's order."""
    from course.notebook import plain_python, read_notebook

    found: list[str] = []
    if not one.solution.is_file():
        return found
    for cell in read_notebook(one.solution).cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(plain_python("".join(cell.source)) or "")
        except SyntaxError:
            continue
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else []
            for target in targets:
                if isinstance(target, ast.Name) and PREDICTION.fullmatch(target.id) and target.id not in found:
                    found.append(target.id)
    return found


def _code(names) -> str:
    return ", ".join(f"`{name}`" for name in names)


SECTIONS: dict[str, dict[str, Callable[[list[Assignment]], str]]] = {
    "README.md": {"assignments": readme_table},
    "docs/assignments.md": {"assignment-index": index, "assignment-contracts": contracts},
}


def with_sections(text: str, sections: dict[str, str], where: str) -> str:
    """`text` with each named generated section's content replaced; a document missing a marker is refused."""
    for name, content in sections.items():
        begin, end = BEGIN.format(name=name), END.format(name=name)
        found = re.search(re.escape(begin) + r"(.*?)" + re.escape(end), text, flags=re.DOTALL)
        if found is None:
            raise UserError(f"{where} has no generated section `{name}`: expected the lines {begin.strip()} and {end}")
        text = text[: found.start(1)] + content + "\n" + text[found.end(1) :]
    return text


def planned_documents(root: Path | None = None) -> dict[Path, bytes]:
    """Path -> the bytes `course build` writes, for each document of the kit whose generated sections are stale."""
    root = kit.ROOT if root is None else Path(root)
    chosen = assignments(root)
    planned = {}
    for relative, sections in SECTIONS.items():
        path = root / relative
        text = path.read_text(encoding="utf-8")
        new = with_sections(text, {name: make(chosen) for name, make in sections.items()}, relative)
        if new != text:
            planned[path] = new.encode("utf-8")
    return planned


def without_markers(text: str) -> str:
    """`text` without the marker lines of its generated sections (their content stays)."""
    return re.sub(r"^<!-- (BEGIN [a-z-]+: written by `course build`.*|END [a-z-]+) -->\n", "", text, flags=re.MULTILINE)
