"""`course build`: student notebooks from solution notebooks, deterministic, checked, never leaking a solution."""

from __future__ import annotations

import ast
import json
import random
import re

import nbformat
import pytest

from course import generated, kit
from course.assignments import assignments
from course.build import MANIFEST, build, common_source, student_source
from course.cli import main as course_main
from course.errors import UserError
from course.generated import BEGIN, END, with_sections, without_markers
from course.notebook import load_notebook

SAMPLING = '''\
import math

def greedy(logits):
    """Index of the largest logit."""
    # BEGIN SOLUTION hint: use torch.argmax
    return logits.argmax(dim=-1)
    # END SOLUTION

class Cache:
    # BEGIN SOLUTION
    def __len__(self):
        return 0
    # END SOLUTION

# BEGIN SOLUTION
TEMPERATURE = 0.7
# END SOLUTION
'''


def solution_notebook(*cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "widgets": {"x": 1},
    }
    for index, cell in enumerate(cells):
        kind, source, tags = cell if isinstance(cell, tuple) else ("code", cell, [])
        new = nbformat.v4.new_code_cell(source) if kind == "code" else nbformat.v4.new_markdown_cell(source)
        new.id = f"solution-{index}"
        new.metadata = {"tags": tags, "execution": {"iopub.execute_input": "2024-01-01T00:00:00"}, "scrolled": True}
        if kind == "code":
            new.execution_count = 7
            new.outputs = [nbformat.v4.new_output("stream", text="the answer is 42\n")]
        nb.cells.append(new)
    return nb


@pytest.fixture
def course_dirs(tmp_path):
    solutions, assignments = tmp_path / "solutions", tmp_path / "assignments"
    solutions.mkdir()
    nbformat.write(
        solution_notebook(
            ("markdown", "# Sampling", []),
            SAMPLING,
            ("markdown", "Instructor note: the answer is argmax.", ["instructor"]),
            ("code", "print(greedy(torch.tensor([1.0, 3.0])))", ["self-check"]),
        ),
        solutions / "07_greedy.ipynb",
    )
    return solutions, assignments


def test_stubs_replace_regions_by_scope():
    student = student_source(SAMPLING, "x.ipynb cell 1")
    assert 'raise NotImplementedError("use torch.argmax")' in student
    assert '    """Index of the largest logit."""\n    raise NotImplementedError' in student  # docstring kept
    assert "class Cache:\n    ...  # YOUR CODE HERE\n" in student  # class body: a statement that does nothing
    assert "\n...  # YOUR CODE HERE\n" in student  # top level
    assert "argmax(dim" not in student and "__len__" not in student and "0.7" not in student
    assert "SOLUTION" not in student
    ast.parse(student)


def test_hint_at_top_level_becomes_a_comment():
    assert (
        student_source("# BEGIN SOLUTION hint: pick 0.7\nT = 0.7\n# END SOLUTION\n", "w")
        == "...  # YOUR CODE HERE: pick 0.7\n"
    )


def test_method_region_raises_and_nested_function_counts_as_function():
    source = (
        "class C:\n"
        "    def f(self):\n"
        "        def inner():\n"
        "            # BEGIN SOLUTION\n"
        "            return 1\n"
        "            # END SOLUTION\n"
        "        return inner\n"
    )
    student = student_source(source, "w")
    assert '            raise NotImplementedError("Your code here")\n        return inner\n' in student


def test_build_writes_student_notebook(course_dirs):
    solutions, assignments = course_dirs
    assert build(solutions, assignments) == 0
    nb = json.loads((assignments / "07_greedy.ipynb").read_text())
    assert nb["metadata"] == {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    assert [c["id"] for c in nb["cells"]] == ["solution-0", "solution-1", "solution-3"]  # instructor cell dropped
    for cell in nb["cells"]:
        assert cell["metadata"] == {"tags": cell["metadata"]["tags"]}  # volatile metadata dropped
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
    text = (assignments / "07_greedy.ipynb").read_text()
    assert "argmax(dim" not in text and "Instructor note" not in text and "42" not in text
    assert text.endswith("}\n")
    loaded = load_notebook(assignments / "07_greedy.ipynb")
    with pytest.raises(NotImplementedError, match="use torch.argmax"):
        loaded.namespace["greedy"](None)


def test_multiline_strings_inside_a_region_are_fine():
    source = 'def f():\n    # BEGIN SOLUTION\n    text = """\nflush left\n"""\n    return text\n    # END SOLUTION\n'
    assert student_source(source, "w") == 'def f():\n    raise NotImplementedError("Your code here")\n'


def test_build_is_deterministic_and_check_passes(course_dirs, capsys):
    solutions, assignments = course_dirs
    build(solutions, assignments)
    first = (assignments / "07_greedy.ipynb").read_bytes()
    capsys.readouterr()
    assert build(solutions, assignments) == 0
    assert (assignments / "07_greedy.ipynb").read_bytes() == first
    assert capsys.readouterr().out == "assignments are up to date\n"
    assert build(solutions, assignments, check=True) == 0
    assert sorted(p.name for p in assignments.iterdir()) == [MANIFEST, "07_greedy.ipynb"]  # no temporary left


def test_check_lists_stale_missing_and_extra(course_dirs, capsys):
    solutions, assignments = course_dirs
    build(solutions, assignments)
    nbformat.write(solution_notebook("X = 1"), solutions / "08_more.ipynb")  # missing
    (assignments / "99_old.ipynb").write_text("{}")  # extra: not written by the build
    nb = nbformat.read(solutions / "07_greedy.ipynb", as_version=4)
    nb.cells[0].source = "# Sampling, revised"
    nbformat.write(nb, solutions / "07_greedy.ipynb")  # stale
    capsys.readouterr()
    assert build(solutions, assignments, check=True) == 1
    out = capsys.readouterr().out
    assert f"stale: {assignments / '07_greedy.ipynb'}\n" in out
    assert f"missing: {assignments / '08_more.ipynb'}\n" in out
    assert f"extra: {assignments / '99_old.ipynb'} (not written by `course build`, which leaves it alone)" in out
    assert "Sampling, revised" not in (assignments / "07_greedy.ipynb").read_text()  # --check writes nothing
    assert build(solutions, assignments) == 0
    assert "Sampling, revised" in (assignments / "07_greedy.ipynb").read_text()
    capsys.readouterr()
    assert build(solutions, assignments, check=True) == 0  # an extra notebook alone is information, not staleness
    assert capsys.readouterr().out.endswith(
        "extra: "
        + str(assignments / "99_old.ipynb")
        + " (not written by `course build`, which leaves it alone)\nassignments are up to date\n"
    )
    assert (assignments / "99_old.ipynb").read_text() == "{}"


def edit_like_a_student(path) -> str:
    """Fill in the stub of `greedy` and save, as Jupyter would; returns the saved text."""
    text = path.read_text().replace('raise NotImplementedError(\\"use torch.argmax\\")', "return logits.argmax(-1)")
    assert text != path.read_text()
    path.write_text(text)
    return text


def test_a_students_edited_notebook_survives_the_build(course_dirs, capsys):
    solutions, assignments = course_dirs
    build(solutions, assignments)
    work = edit_like_a_student(assignments / "07_greedy.ipynb")
    nb = nbformat.read(solutions / "07_greedy.ipynb", as_version=4)
    nb.cells[0].source = "# Sampling, revised"  # the instructor changes the assignment meanwhile
    nbformat.write(nb, solutions / "07_greedy.ipynb")
    capsys.readouterr()
    for _ in range(2):  # `make demo` twice: the work stays, the manifest still protects it
        assert course_main(["build", "--solutions", str(solutions), "--assignments", str(assignments)]) == 0
        assert capsys.readouterr().out == (
            f"kept {assignments / '07_greedy.ipynb'}: it was edited after the last build (your work?); "
            "move it away or pass --force to replace it, a backup is kept\n"
        )
        assert (assignments / "07_greedy.ipynb").read_text() == work
    assert build(solutions, assignments, check=True) == 1
    assert "`course build` keeps it, `course build --force` replaces it" in capsys.readouterr().out


def test_force_replaces_an_edited_notebook_after_a_backup(course_dirs, capsys):
    solutions, assignments = course_dirs
    build(solutions, assignments)
    work = edit_like_a_student(assignments / "07_greedy.ipynb")
    capsys.readouterr()
    assert course_main(["build", "--force", "--solutions", str(solutions), "--assignments", str(assignments)]) == 0
    (backup,) = assignments.glob("07_greedy.ipynb.bak-*")
    assert re.fullmatch(r"07_greedy\.ipynb\.bak-\d{8}-\d{6}", backup.name)
    assert backup.read_text() == work
    assert capsys.readouterr().out == f"replaced {assignments / '07_greedy.ipynb'}; the edited copy is now {backup}\n"
    assert "use torch.argmax" in (assignments / "07_greedy.ipynb").read_text()
    assert build(solutions, assignments, check=True) == 0  # the backup is not a notebook the check looks at


def test_files_the_build_did_not_write_are_never_deleted(course_dirs, capsys):
    solutions, assignments = course_dirs
    build(solutions, assignments)
    copy = assignments / "07_greedy (my copy).ipynb"
    copy.write_bytes((assignments / "07_greedy.ipynb").read_bytes())  # byte for byte a built notebook
    capsys.readouterr()
    assert build(solutions, assignments) == 0
    assert capsys.readouterr().out == "assignments are up to date\n"
    assert copy.exists()


def test_a_notebook_the_build_wrote_goes_when_its_solution_goes(course_dirs, capsys):
    solutions, assignments = course_dirs
    nbformat.write(solution_notebook("X = 1"), solutions / "08_more.ipynb")
    build(solutions, assignments)
    (solutions / "08_more.ipynb").unlink()
    capsys.readouterr()
    assert build(solutions, assignments, check=True) == 1
    assert "its solution notebook is gone: `course build` removes it" in capsys.readouterr().out
    assert build(solutions, assignments) == 0
    assert capsys.readouterr().out == f"removed {assignments / '08_more.ipynb'} (its solution notebook is gone)\n"
    assert sorted(p.name for p in assignments.iterdir()) == [MANIFEST, "07_greedy.ipynb"]
    assert json.loads((assignments / MANIFEST).read_text())["notebooks"].keys() == {"07_greedy.ipynb"}


def test_without_a_record_a_differing_notebook_is_kept_and_an_equal_one_recorded(course_dirs, capsys):
    """A clone from before the record existed: what the build would write is recorded, anything else kept."""
    solutions, assignments = course_dirs
    build(solutions, assignments)
    nbformat.write(solution_notebook("X = 1"), solutions / "08_more.ipynb")
    build(solutions, assignments)
    work = edit_like_a_student(assignments / "07_greedy.ipynb")
    (assignments / MANIFEST).unlink()
    capsys.readouterr()
    assert build(solutions, assignments, check=True) == 1
    assert capsys.readouterr().out.startswith(f"stale: {assignments / '07_greedy.ipynb'} (edited after")
    assert build(solutions, assignments) == 0
    assert capsys.readouterr().out.startswith(f"kept {assignments / '07_greedy.ipynb'}: it was edited")
    assert (assignments / "07_greedy.ipynb").read_text() == work
    assert json.loads((assignments / MANIFEST).read_text())["notebooks"].keys() == {"08_more.ipynb"}


def test_a_damaged_record_is_one_line(course_dirs):
    solutions, assignments = course_dirs
    build(solutions, assignments)
    (assignments / MANIFEST).write_text('{"notebooks": ["07_greedy.ipynb"]}')
    with pytest.raises(UserError, match=r"^\S+\.build\.json is not a record written by `course build`: delete it"):
        build(solutions, assignments)


def test_stale_after_solution_changes(course_dirs):
    solutions, assignments = course_dirs
    build(solutions, assignments)
    nb = nbformat.read(solutions / "07_greedy.ipynb", as_version=4)
    nb.cells[0].source = "# Sampling, revised"
    nbformat.write(nb, solutions / "07_greedy.ipynb")
    assert build(solutions, assignments, check=True) == 1


def test_empty_solutions_folder_is_up_to_date(tmp_path, capsys):
    (tmp_path / "solutions").mkdir()
    assert build(tmp_path / "solutions", tmp_path / "assignments", check=True) == 0
    assert capsys.readouterr().out == "assignments are up to date\n"


def test_missing_solutions_folder_is_refused(tmp_path):
    with pytest.raises(UserError, match="^no solutions folder at .*nowhere"):
        build(tmp_path / "nowhere", tmp_path / "assignments")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "def f():\n    # BEGIN SOLUTION\n    return 1\n",
            "cell 2: `# BEGIN SOLUTION` on line 2 has no `# END SOLUTION`",
        ),
        (
            "def f():\n    return 1\n    # END SOLUTION\n",
            "cell 2: `# END SOLUTION` on line 3 has no `# BEGIN SOLUTION`",
        ),
        (
            "# BEGIN SOLUTION\ndef f():\n    # BEGIN SOLUTION\n    pass\n    # END SOLUTION\n# END SOLUTION\n",
            "cell 2: `# BEGIN SOLUTION` on line 3 is nested in the one on line 1",
        ),
        ("def f():\n    # BEGIN SOLUTION please\n    pass\n    # END SOLUTION\n", "cell 2: line 2 should be"),
        ("def f(:\n    # BEGIN SOLUTION\n    pass\n    # END SOLUTION\n", "cell 2: the solution does not parse"),
        ("if x:\n# BEGIN SOLUTION\n    pass\n# END SOLUTION\n", "cell 2: line 3 is outside the block"),
        (
            "for i in x:\n    # BEGIN SOLUTION\n    pass\nelse:\n    # END SOLUTION\n    pass\n",
            "cell 2: line 4 is outside the block",
        ),
        (
            "def f():\n    # BEGIN SOLUTION\n    x = g(\n    # END SOLUTION\n        1)\n",
            "cell 2: the student version does not parse",
        ),
    ],
)
def test_bad_markers_are_refused_naming_notebook_and_cell(tmp_path, source, message):
    solutions = tmp_path / "solutions"
    solutions.mkdir()
    nbformat.write(solution_notebook(("markdown", "intro", []), source), solutions / "07_greedy.ipynb")
    with pytest.raises(UserError) as info:
        build(solutions, tmp_path / "assignments")
    assert str(info.value).startswith(f"{solutions / '07_greedy.ipynb'} {message}")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "assignments").exists()


def test_markers_outside_code_cells_are_refused(tmp_path):
    solutions = tmp_path / "solutions"
    solutions.mkdir()
    nbformat.write(
        solution_notebook(("markdown", "# BEGIN SOLUTION\nanswer\n# END SOLUTION", [])), solutions / "n.ipynb"
    )
    with pytest.raises(UserError, match="cell 1: solution markers only work in code cells"):
        build(solutions, tmp_path / "a")


def test_no_solution_line_ever_reaches_the_output():
    """Property: over many generated cells, every line inside a region is gone and the rest is kept."""
    rng = random.Random(1234)
    for trial in range(200):
        lines, secrets, kept = [], [], []
        for block in range(rng.randint(1, 6)):
            function = rng.random() < 0.7
            indent = "    " if function else ""
            if function:
                lines.append(f"def f{block}(x):")
            public = f"{indent}visible_{trial}_{block} = {block}"
            lines.append(public)
            kept.append(public.strip())
            hint = rng.choice(["", " hint: think about it"])
            lines.append(f"{indent}{rng.choice(['#', '# ', '#  '])}BEGIN SOLUTION{hint}")
            for n in range(rng.randint(0, 4)):
                secret = f"secret_{trial}_{block}_{n}"
                lines.append(f"{indent}{secret} = {n}")
                secrets.append(secret)
            lines.append(f"{indent}# END SOLUTION")
        source = "\n".join(lines) + rng.choice(["", "\n"])
        student = student_source(source, "generated")
        assert not any(secret in student for secret in secrets)
        assert all(line in student for line in kept)
        assert "SOLUTION" not in student
        ast.parse(student)


# ---------------------------------------------------------------- common cells and generated sections


def with_common_cells(setup_source: str = "x = 1", check_source: str = "check('nothing')") -> nbformat.NotebookNode:
    return solution_notebook(
        ("markdown", "# Assignment 07 · Greedy", []),
        ("code", setup_source, ["common:setup"]),
        SAMPLING,
        ("code", check_source, ["common:check"]),
    )


def test_the_build_writes_the_common_cells_in_the_solution_and_the_student_notebook(tmp_path, capsys):
    solutions, assignments = tmp_path / "solutions", tmp_path / "assignments"
    solutions.mkdir()
    nbformat.write(with_common_cells(), solutions / "07_greedy.ipynb")
    assert build(solutions, assignments, check=True) == 1
    assert f"stale: {solutions / '07_greedy.ipynb'} (a common cell differs from its template" in capsys.readouterr().out
    assert "x = 1" in (solutions / "07_greedy.ipynb").read_text()  # --check writes nothing
    assert build(solutions, assignments) == 0
    setup, check = (
        common_source("common:setup", "07_greedy", "here"),
        common_source("common:check", "07_greedy", "here"),
    )
    assert 'check("07_greedy")' in check and "find_checkpoints" in setup and "google.colab" in setup
    for path in (solutions / "07_greedy.ipynb", assignments / "07_greedy.ipynb"):
        cells = nbformat.read(path, as_version=4).cells
        assert [cells[1].source, cells[-1].source] == [setup, check], path
        assert cells[1].metadata["tags"] == ["common:setup"]
    solution = nbformat.read(solutions / "07_greedy.ipynb", as_version=4)
    assert solution.cells[1].outputs == [] and solution.cells[2].outputs  # only the rewritten cells lose theirs
    capsys.readouterr()
    assert build(solutions, assignments, check=True) == 0
    assert capsys.readouterr().out == "assignments are up to date\n"


def test_a_cell_tagged_with_no_common_template_is_refused(tmp_path):
    solutions = tmp_path / "solutions"
    solutions.mkdir()
    notebook = solution_notebook(("code", "x = 1", ["common:imports"]))
    nbformat.write(notebook, solutions / "07_greedy.ipynb")
    with pytest.raises(UserError, match=r"cell 1: no common cell is tagged common:imports: expected common:setup or"):
        build(solutions, tmp_path / "assignments")
    nbformat.write(solution_notebook(("markdown", "x", ["common:setup"])), solutions / "07_greedy.ipynb")
    with pytest.raises(UserError, match=r"cell 1: a common cell is a code cell with one `common:` tag, not markdown"):
        build(solutions, tmp_path / "assignments")


def test_the_students_repository_comes_from_pyproject(tmp_path, monkeypatch):
    monkeypatch.setattr(kit, "ROOT", tmp_path)
    (tmp_path / "pyproject.toml").write_text('[tool.course]\nstudent-repository = "https://example.org/class/kit"\n')
    assert 'COURSE_KIT_REPOSITORY = "https://example.org/class/kit"' in common_source("common:setup", "07_x", "w")
    (tmp_path / "pyproject.toml").write_text('[tool.course]\nstudent-repository = "https://a.org/x\\"; import os"\n')
    with pytest.raises(UserError, match=r"student-repository should be a repository's address"):
        common_source("common:setup", "07_x", "w")


def test_generated_sections_are_rewritten_between_their_markers_and_a_missing_one_is_named():
    text = f"before\n{BEGIN.format(name='table')}old\n{END.format(name='table')}\nafter\n"
    assert with_sections(text, {"table": "new"}, "DOC.md") == text.replace("old", "new")
    with pytest.raises(UserError, match=r"^DOC.md has no generated section `other`: expected the lines <!-- BEGIN"):
        with_sections(text, {"other": "x"}, "DOC.md")
    assert without_markers(text) == "before\nold\nafter\n"


def test_the_kits_tables_of_assignments_are_those_the_manifests_give():
    """README.md's and docs/assignments.md's generated sections as `course build` would write them now."""
    assert generated.planned_documents() == {}, "run `course build`: a table of assignments is stale"
    readme, docs = (kit.ROOT / "README.md").read_text(), (kit.ROOT / "docs" / "assignments.md").read_text()
    for one in assignments():
        assert f"| [{one.name}](assignments/{one.name}.ipynb) | **{one.title}**: {one.summary}" in readme
        assert f"\n## {one.name}\n\n**{one.title}**: {one.summary}.\n" in docs
        assert one.contract in docs
