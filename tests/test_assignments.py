"""The assignments declare themselves (course/assignments.py): a manifest's mistakes are one line naming its file and
key; each manifest agrees with its solution notebook; every notebook has the common cells and no copy of its own; and
no file outside an assignment's own names it, so that adding one touches nothing else."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import nbformat
import pytest

from course.assignments import assignments, find, grading, names, read_manifest
from course.build import joined_source
from course.errors import UserError
from course.kit import ROOT
from mutants.patches import solution_functions_with_regions

MANIFEST = 'title = "Example"\nsummary = "an example"\ngraded = ["greedy", "KVCache"]\n'


def write_assignment(base: Path, name: str, manifest: str = MANIFEST) -> Path:
    folder = base / "grader" / "assignments" / name
    folder.mkdir(parents=True)
    (folder / "assignment.toml").write_text(manifest)
    (folder / "test_visible.py").write_text("")
    return folder


@pytest.mark.parametrize(
    ("manifest", "refusal"),
    [
        ('summary = "s"\ngraded = []\n', r"`title` is missing \(expected the keys title, summary, graded"),
        (MANIFEST + 'titel = "x"\n', r"unknown key `titel`"),
        ('title = "t"\nsummary = "s"\ngraded = "greedy"\n', r"`graded` should be a list, not str"),
        ('title = "t"\nsummary = "s"\ngraded = ["1greedy"]\n', r"`graded` should list names of the notebook's functions"),
        ('title = "t"\nsummary = """two\nlines"""\ngraded = []\n', r"`summary` should be one line of text"),
        (MANIFEST + 'ship = ["support.py"]\n', r"`ship` names support.py, which is not a file of"),
        (MANIFEST + 'ship = ["test_hidden.py"]\n', r"`ship` should list file names of the assignment's folder, neither"),
        (MANIFEST + 'ship = ["mutants.toml"]\n', r"`ship` should list file names"),
        (MANIFEST + 'reuses = ["09_later"]\n', r"`reuses` should list names of earlier assignments"),
        (MANIFEST + 'reuses = ["02_x", "02_x"]\n', r"`reuses` should list names of earlier assignments .*, each once"),
        ("title = \n", r"is not valid TOML"),
    ],
)  # fmt: skip
def test_a_manifest_mistake_is_one_line_naming_the_file_and_the_key(tmp_path, manifest, refusal):
    folder = write_assignment(tmp_path, "07_example", manifest)
    with pytest.raises(UserError, match=rf"^{folder}/assignment.toml\b.*{refusal}") as refused:
        read_manifest(folder)
    assert "\n" not in str(refused.value)


def test_the_kits_list_refuses_a_folder_without_manifest_a_shared_number_and_an_unknown_reuse(tmp_path):
    write_assignment(tmp_path, "01_first")
    write_assignment(tmp_path, "02_second", MANIFEST + 'reuses = ["01_first"]\n')
    assert [(one.name, one.reuses) for one in assignments(tmp_path)] == [("01_first", ()), ("02_second", ("01_first",))]
    (write_assignment(tmp_path, "03_third") / "assignment.toml").unlink()
    with pytest.raises(UserError, match=r"03_third/assignment.toml is missing: every assignment declares itself"):
        assignments(tmp_path)
    (tmp_path / "grader" / "assignments" / "03_third" / "assignment.toml").write_text(MANIFEST)
    write_assignment(tmp_path, "03_other")
    with pytest.raises(UserError, match=r"03_other, 03_third share the number 03, which orders the assignments"):
        assignments(tmp_path)
    (tmp_path / "grader" / "assignments" / "03_other" / "assignment.toml").write_text(MANIFEST + 'reuses = ["00_x"]')
    (tmp_path / "grader" / "assignments" / "03_other").rename(tmp_path / "grader" / "assignments" / "04_other")
    with pytest.raises(UserError, match=r"04_other/assignment.toml: `reuses` names 00_x, which is no assignment"):
        assignments(tmp_path)


def test_an_assignment_is_found_by_name_or_by_what_it_grades(tmp_path):
    write_assignment(tmp_path, "01_first", 'title = "t"\nsummary = "s"\ngraded = ["perplexity", "mean_nll"]\n')
    write_assignment(tmp_path, "02_second", 'title = "t"\nsummary = "s"\ngraded = ["perplexity", "beam_search"]\n')
    assert find("02_second.ipynb", tmp_path).name == "02_second"
    assert grading(["perplexity", "beam_search"], tmp_path).name == "02_second"
    with pytest.raises(UserError, match=r"^2 assignments grade perplexity: expected exactly one"):
        grading(["perplexity"], tmp_path)
    with pytest.raises(UserError, match=r"^no assignment grades greedy: expected exactly one"):
        grading(["greedy"], tmp_path)
    with pytest.raises(UserError, match=r"^no assignment '03_third': expected one of 01_first, 02_second$"):
        find("03_third", tmp_path)


# ---------------------------------------------------------------- the kit's assignments


def test_every_solution_notebook_is_an_assignment_and_every_assignment_has_one():
    assert sorted(path.stem for path in (ROOT / "solutions").glob("*.ipynb")) == names()
    assert all(one.notebook.is_file() for one in assignments())


def test_each_manifest_agrees_with_its_solution_notebook():
    """The title is the notebook's first heading; `graded` lists, in the notebook's order, the functions and classes
    holding a solution region, but the reused assignments' (stubs of the student's own earlier functions)."""
    for one in assignments():
        heading = nbformat.read(one.solution, as_version=4).cells[0].source.splitlines()[0]
        assert heading == f"# Assignment {one.number:02d} · {one.title}", one.name
        reused = {name for other in one.reuses for name in find(other).graded}
        written = [name.split(".")[0] for name in solution_functions_with_regions(one.name)]
        assert list(dict.fromkeys(name for name in written if name not in reused)) == list(one.graded), one.name


def test_every_notebook_has_the_common_cells_and_no_copy_of_its_own():
    """One `common:setup` cell, the first code cell, and at least one `common:check`, in the solution and the student
    notebook alike (`course build` writes them); no other cell sets Colab up or looks for the checkpoint itself."""
    for one in assignments():
        for path in (one.solution, one.notebook):
            cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
            tags = [c.metadata.get("tags", []) for c in cells]
            assert tags[0] == ["common:setup"] and sum("common:setup" in t for t in tags) == 1, path
            assert any("common:check" in t for t in tags), path
            own = [joined_source(c.source) for c, t in zip(cells, tags) if not any(x.startswith("common:") for x in t)]
            copies = [s for s in own if "google.colab" in s or "find_checkpoint" in s or "from grader import demo" in s]
            assert not copies, f"{path}: a cell does what the common set-up does: {copies[0][:80]!r}"


# ---------------------------------------------------------------- no file outside an assignment names it

# Files that are documentation (the README, CONTRIBUTING.md, docs/, grader/README.md, the lectures' README,
# bench/RESULTS.md's measurements), or written by `course build`, may name any assignment.
DOCUMENTATION = re.compile(r"(.*/)?[^/]*\.md")
GENERATED = {"assignments/.build.json"}
# Tests that test one assignment's content: tests/test_assignment_<name>.py and tests/mutants/styles_<name>.py for
# NN_<name>. And one collection of every assignment's material:
NAMES_THEIR_MATERIAL = {
    "tests/mutants/styles.py": "correct implementations in other styles, keyed by assignment, for tests/test_styles.py",
}


def kit_files() -> list[str]:
    """The kit's files: tracked, and new ones git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True
    )
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout: {listed.stderr.strip()}")
    return [name for name in listed.stdout.splitlines() if (ROOT / name).is_file()]


def may_name(path: str, one) -> bool:
    """Whether `path` may hold the name of assignment `one`."""
    stem = one.name[3:]
    own = [f"grader/assignments/{one.name}/", f"solutions/{one.name}.ipynb", f"assignments/{one.name}.ipynb"]
    own += [f"tests/test_assignment_{stem}.py", f"tests/mutants/styles_{stem}.py"]
    for other in assignments():  # an assignment that reuses this one says what it builds on
        if one.name in other.reuses:
            own += [f"grader/assignments/{other.name}/", f"solutions/{other.name}.ipynb"]
            own += [f"assignments/{other.name}.ipynb", f"tests/test_assignment_{other.name[3:]}.py"]
    return (
        any(path == place or (place.endswith("/") and path.startswith(place)) for place in own)
        or bool(DOCUMENTATION.fullmatch(path))
        or path in GENERATED
        or path in NAMES_THEIR_MATERIAL
    )


def test_no_file_outside_an_assignments_own_names_it():
    """grep for each assignment's name in the kit's files finds only its own folder, its notebooks, the tests of its
    content, those of the assignments that reuse it, documentation and generated files: every list of assignments
    comes from the manifests, and a library function that needs an assignment finds it by what it grades."""
    files = kit_files()
    texts = {path: (ROOT / path).read_text(encoding="utf-8", errors="replace") for path in files}
    naming = {
        one.name: [path for path, text in texts.items() if one.name in text and not may_name(path, one)]
        for one in assignments()
    }
    assert naming == {one.name: [] for one in assignments()}
    assert all(path in files for path in NAMES_THEIR_MATERIAL)


def test_the_allowed_places_are_no_blanket():
    """The rule is narrow: the library, the grader's own modules and the kit's other tests may name none."""
    one = assignments()[0]
    for path in ("course/demo.py", "grader/gradescope.py", "tests/test_release.py", "bench/decode.py", "Makefile"):
        assert not may_name(path, one), path
    assert may_name(f"grader/assignments/{one.name}/test_hidden.py", one) and may_name("docs/cli.md", one)


def test_no_python_module_of_the_library_lists_assignments():
    """No module of course/ or grader/ holds a literal list or tuple of two or more assignment names."""
    pattern = re.compile(r"\d\d_[a-z][a-z0-9_]*")
    for path in [*(ROOT / "course").rglob("*.py"), *(p for p in (ROOT / "grader").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
                literal = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
                assert len([name for name in literal if pattern.fullmatch(name)]) < 2, f"{path}: {literal}"
