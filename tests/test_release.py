"""`course release`: the student kit holds no solution and no hidden test, and works on its own."""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile

import pytest

from course import kit
from course.assignments import Assignment, assignments, names
from course.cli import main as course_main
from course.errors import UserError
from course.release import release, shipped_test_files, visible_test_files

# Every assignment but the last: what each shipped one reuses is shipped too (it reuses earlier ones only)
SHIPPED, LEFT_OUT = names()[:-1], names()[-1]
REUSING = next(one for one in assignments() if one.reuses)  # one that gives stubs for (or builds on) another's
TRIVIAL = 12  # characters: `else:`, `return ids` appear in any Python file


def solution_regions(notebook) -> list[list[str]]:
    """Each region's lines (stripped, trivial ones left out), read from the notebook's JSON without the kit."""
    regions, inside = [], None
    for cell in json.loads(notebook.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        for line in "".join(cell["source"]).splitlines():
            if re.match(r"\s*#\s*BEGIN SOLUTION", line):
                inside = []
            elif re.match(r"\s*#\s*END SOLUTION", line):
                regions.append(inside)
                inside = None
            elif inside is not None and len(line.strip()) >= TRIVIAL:
                inside.append(line.strip())
    return [region for region in regions if region]


def seen_lines(path) -> set[str]:
    text = path.read_text(errors="replace")
    if path.suffix == ".ipynb":
        text = "\n".join("".join(cell["source"]) for cell in json.loads(text)["cells"])
    return {line.strip() for line in text.splitlines()}


def in_release(release_dir, *args, timeout=300) -> subprocess.CompletedProcess:
    """Run Python as a student of the release would: in its folder, with its own packages first."""
    environment = {**os.environ, "PYTHONPATH": str(release_dir)}
    return subprocess.run(
        [sys.executable, *args], cwd=release_dir, env=environment, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def student_kit(tmp_path_factory):
    out = tmp_path_factory.mktemp("published") / "sampling-kit"
    assert course_main(["release", str(out), "--assignments", *SHIPPED, "--lectures", "01_sampling", "--zip"]) == 0
    return out


def test_no_solution_reaches_the_release(student_kit):
    """No file holds half of any region's lines, nor any solution line of 40 characters or more (shorter ones,
    such as `for _ in range(max_new_tokens):`, also open the library's own generation loop)."""
    files = [p for p in student_kit.rglob("*") if p.is_file() and p.suffix != ".pt"]
    assert len(files) > 40
    for solution in sorted((kit.ROOT / "solutions").glob("*.ipynb")):
        regions = solution_regions(solution)
        assert regions, solution
        for path in files:
            seen = seen_lines(path)
            for region in regions:
                found = [line for line in region if line in seen]
                assert 2 * len(found) < len(region), f"{path} holds a solution region of {solution.name}: {found}"
                assert not [line for line in found if len(line) >= 40], f"{path}: {found}"


def test_no_hidden_test_reaches_the_release(student_kit):
    names, docstrings = set(), set()
    for hidden in (kit.ROOT / "grader" / "assignments").glob("*/test_hidden.py"):
        for node in ast.walk(ast.parse(hidden.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                names.add(node.name)
                docstrings.add((ast.get_docstring(node) or "").split("\n")[0])
    assert len(names) > 50
    assert not list(student_kit.rglob("test_hidden.py"))
    for path in student_kit.rglob("*.py"):
        text = path.read_text()
        assert not [name for name in names if re.search(rf"\b{name}\b", text)], path
        assert not [doc for doc in docstrings if doc and doc in text], path


def test_the_release_holds_what_students_need_and_nothing_else(student_kit):
    top = sorted(p.name for p in student_kit.iterdir())
    assert top == [
        ".gitignore",
        "Makefile",
        "README.md",
        "assignments",
        "course",
        "data",
        "grader",
        "lectures",
        "pyproject.toml",
    ]
    assert sorted(p.name for p in (student_kit / "assignments").iterdir()) == [f"{n}.ipynb" for n in SHIPPED]
    assert sorted(p.name for p in (student_kit / "grader" / "assignments").iterdir()) == SHIPPED
    readme = (student_kit / "README.md").read_text()
    makefile = (student_kit / "Makefile").read_text()
    for one in assignments()[:-1]:  # the manifest, the visible tests and what `ship` lists: no other file
        folder = student_kit / "grader" / "assignments" / one.name
        assert sorted(p.name for p in folder.iterdir()) == sorted(["assignment.toml", "test_visible.py", *one.ship])
        assert f"`{one.name}.ipynb` ({one.title})" in readme
        assert f"\t$(VENV)/bin/grader check {one.name} --notebook assignments/{one.name}.ipynb\n" in makefile
    assert not list(student_kit.rglob("__pycache__")) and not list(student_kit.rglob(".build.json"))
    assert "## For students" in readme and "## For instructors" not in readme and "make check" in readme
    assert "<!--" not in readme  # the markers of the kit README's generated sections
    with zipfile.ZipFile(student_kit.with_name("sampling-kit.zip")) as bundle:
        in_zip = sorted(bundle.namelist())
    on_disk = sorted(
        f"sampling-kit/{p.relative_to(student_kit).as_posix()}" for p in student_kit.rglob("*") if p.is_file()
    )
    assert in_zip == on_disk


@pytest.mark.slow  # a grading in a fresh interpreter of the release
def test_a_student_checks_a_blank_notebook_in_the_release(student_kit):
    name = SHIPPED[-1]
    checked = in_release(student_kit, "-m", "grader.cli", "check", name, "--notebook", f"assignments/{name}.ipynb")
    assert checked.returncode == 0, checked.stderr
    assert re.search(r"^Score: 0/\d+$", checked.stdout, flags=re.MULTILINE), checked.stdout
    found = in_release(
        student_kit,
        "-c",
        "from grader.runner import ASSIGNMENTS_DIR, find_assignment, test_files;"
        f"print(ASSIGNMENTS_DIR); print([p.name for p in test_files(find_assignment({name!r}))])",
    )
    assert found.stdout.split("\n")[:2] == [str(student_kit / "grader" / "assignments"), "['test_visible.py']"], found


def test_generate_without_a_sampler_asks_for_one_in_the_release(student_kit):
    generated = in_release(student_kit, "-m", "course.cli", "generate", "runs/tiny", "--prompt", "The film")
    assert generated.returncode == 2
    assert generated.stderr.strip().endswith("give --sampler NOTEBOOK (a notebook that defines `sample_next`)")


DEVELOPER_NOTES = ("development machine", "this project", "has run this version")
README_COMMAND = re.compile(r"`((?:course|grader|make) [^`]+)`")


def readme_commands(readme: str) -> list[list[str]]:
    """The commands of a README's code spans, as argument lists: not the messages (`course prepare: error: ...`), nor
    patterns (with '...' or a placeholder such as DIR or NAME), nor a bare mention of a subcommand (`grader batch`);
    `make demo` is a command."""
    commands = []
    for span in README_COMMAND.findall(readme):
        words = span.split()
        bare = len(words) == 2 and words[0] != "make"
        if ":" in words[1] or "..." in span or any(word.isupper() for word in words) or bare:
            continue
        commands.append(shlex.split(span))
    return commands


def test_the_student_readme_speaks_only_of_what_was_shipped(student_kit, tmp_path):
    readme = (student_kit / "README.md").read_text()
    assert LEFT_OUT not in readme
    assert not [note for note in DEVELOPER_NOTES if note in readme]
    small = tmp_path / "small-kit"
    first, *others = names()
    assert course_main(["release", str(small), "--assignments", first]) == 0
    readme = (small / "README.md").read_text()
    assert first in readme and not [name for name in others if name in readme]
    steps = re.findall(r"^(\d+)\. ", readme, flags=re.MULTILINE)
    assert steps == [str(n) for n in range(1, len(steps) + 1)]  # renumbered


@pytest.fixture(scope="module")
def full_kit(tmp_path_factory):
    """A release of every assignment, `course release`'s default (the README's commands of every assignment, the
    bake-off's among them; what each assignment's hidden tests load, left behind)."""
    out = tmp_path_factory.mktemp("published") / "full-kit"
    assert course_main(["release", str(out)]) == 0
    return out


INDENTED_COMMAND = re.compile(r"^ {4,}((?:course|grader|make) .+)$", flags=re.MULTILINE)
MADE_BY_THE_KIT = ("runs/", "data/cache/")  # by training and by `course prepare`
KIT_PATH = re.compile(r"`([\w.-]+(?:/[\w.-]*)*)`")
PARSE_EACH = """
import contextlib, io, json, sys
from course.cli import make_parser as course
from grader.cli import make_parser as grader
refused = []
for command in json.loads(sys.argv[1]):
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said), contextlib.redirect_stdout(io.StringIO()):
            {"course": course, "grader": grader}[command[0]]().parse_args(command[1:])
    except SystemExit as exit:
        if exit.code:
            refused.append([command, said.getvalue().strip()[-300:]])
print(json.dumps(refused))
"""


def what_a_student_reads(release_dir) -> dict[str, str]:
    """The student README and every notebook's text cells, by file."""
    texts = {"README.md": (release_dir / "README.md").read_text()}
    for notebook in sorted((release_dir / "assignments").glob("*.ipynb")):
        cells = json.loads(notebook.read_text())["cells"]
        texts[notebook.name] = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return texts


def stated_commands(text: str) -> list[list[str]]:
    """readme_commands, and the commands of indented code blocks (filtered alike, comments left out)."""
    spans = "".join(f"`{line.split(' #')[0].strip()}`" for line in INDENTED_COMMAND.findall(text))  # no comment
    return readme_commands(text) + readme_commands(spans)


@pytest.mark.parametrize("kit_name", ["student_kit", "full_kit"])
def test_every_command_file_and_target_a_student_reads_of_is_in_the_release(kit_name, request):
    """In the README and in every notebook: each `course` and `grader` command parses with the release's own
    parsers, each `make` target is in the release's Makefile, each notebook or folder a command names and each
    path of the kit (its first part a file or folder of this repository: `bench/decode.py`) is in the release.
    (runs/ and data/cache/ are made by training and preparing; a notebook's commands may name notebooks beside it.)"""
    release_dir = request.getfixturevalue(kit_name)
    targets = set(re.findall(r"^([\w-]+):", (release_dir / "Makefile").read_text(), flags=re.MULTILINE))
    kit_names = {path.name for path in kit.ROOT.iterdir()} - {"runs"}
    commands, missing = [], []
    for source, text in what_a_student_reads(release_dir).items():
        for command in stated_commands(text):
            if command[0] == "make":
                missing += [f"{source}: make {target}" for target in command[1:] if target not in targets]
                continue
            commands.append(command)
            for word in command[1:]:
                named = (word.endswith(".ipynb") or word.endswith("/")) and not word.startswith(MADE_BY_THE_KIT)
                if named and not ((release_dir / word).exists() or (release_dir / "assignments" / word).exists()):
                    missing.append(f"{source}: {shlex.join(command)} names {word}")
        for path in KIT_PATH.findall(text):
            of_the_kit = "/" in path and path.split("/")[0] in kit_names and not path.startswith(MADE_BY_THE_KIT)
            if of_the_kit and not (release_dir / path).exists():
                missing.append(f"{source}: `{path}`")
    assert not missing, f"named to students but not in the release: {missing}"
    assert {command[0] for command in commands} == {"course", "grader"}
    assert {"make env", "make check"} <= set(README_COMMAND.findall((release_dir / "README.md").read_text()))
    parsed = in_release(release_dir, "-c", PARSE_EACH, json.dumps(commands))
    assert parsed.returncode == 0, parsed.stderr
    assert json.loads(parsed.stdout) == [], "commands the release's parsers refuse"


PRESET = re.compile(r"\b(tiny|laptop|course)`? preset|\b(course) model\b|`(tiny|laptop)` model")  # not "a tiny model"
PRESET_FIGURES = {  # a figure stated in a sentence that names one preset: how to read it from the preset
    r"~?(?:about )?([\d.]+)M parameters": lambda model, defaults: model.num_params() / 1e6,
    r"([\d,]+) steps\b": lambda model, defaults: defaults.get("max_steps"),
    r"(\d+) epochs\b": lambda model, defaults: defaults.get("epochs"),
    r"(\d+) layers\b": lambda model, defaults: model.config.n_layer,
    r"(\d+) heads\b": lambda model, defaults: model.config.n_head,
    r"(?:width|`n_embd`) (\d+)": lambda model, defaults: model.config.n_embd,
    r"context(?: of)? ([\d,]+)": lambda model, defaults: model.config.block_size,
}


def test_every_figure_stated_about_a_preset_is_the_presets(full_kit):
    """A sentence of the README or a notebook that names one preset states its parameters (to 5%, the text rounds
    them), steps, epochs, layers, heads, width and context as the preset defines them."""
    from course.model import GPT, preset
    from course.train import PRESET_DEFAULTS

    checked, wrong = 0, []
    for source, text in what_a_student_reads(full_kit).items():
        for sentence in re.split(r"(?<=[.;])\s+|\n\n", text):
            named = {name for names in PRESET.findall(sentence) for name in names if name}
            if len(named) != 1:
                continue
            [name] = named
            defaults = PRESET_DEFAULTS[name]
            model = GPT(preset(name, defaults["vocab_size"]))
            for pattern, read in PRESET_FIGURES.items():
                for stated in re.findall(pattern, sentence):
                    value, actual = float(stated.replace(",", "")), read(model, defaults)
                    checked += 1
                    if actual is None or abs(value - actual) > 0.05 * actual:
                        wrong.append(f"{source}: {name} {pattern!r} says {stated}, the preset {actual}")
    assert not wrong, wrong
    assert checked >= 10, f"only {checked} figures found: has the text's wording changed?"


@pytest.mark.slow
def test_the_student_readme_commands_run_for_a_student_who_did_the_work(full_kit, tiny_checkpoint, tmp_path):
    """The README's `grader check` and `course generate` commands, as written, in a copy of the release where the
    student has trained (runs/tiny) and completed every notebook. No solutions/ is there: nothing may need it.
    (The bake-off command is only parsed: the session's checkpoint, 60 steps, writes greedy text of one token, on
    which a Zipf coefficient is undefined.)"""
    kit_copy = tmp_path / "student"
    shutil.copytree(full_kit, kit_copy)
    shutil.copytree(tiny_checkpoint, kit_copy / "runs" / "tiny")
    for notebook in (kit.ROOT / "solutions").glob("*.ipynb"):
        shutil.copy(notebook, kit_copy / "assignments" / notebook.name)
    commands = readme_commands((kit_copy / "README.md").read_text())
    runnable = [c for c in commands if c[:2] in (["grader", "check"], ["course", "generate"])]
    assert [c[:2] for c in runnable] == [["grader", "check"], ["course", "generate"]]
    for command in runnable:
        ran = in_release(kit_copy, "-m", f"{command[0]}.cli", *command[1:])
        assert ran.returncode == 0, f"{shlex.join(command)}: {ran.stdout[-2000:]}{ran.stderr[-2000:]}"
        assert ran.stdout.strip()
    assert not (kit_copy / "solutions").exists()


@pytest.fixture
def giving_away(monkeypatch) -> list[str]:
    """REUSING as it could be written: with the solution of an assignment it reuses in a cell of given code. Returns
    the assignments to ship together, the reused one first."""
    from course import release as release_module

    reused = REUSING.reuses[0]
    planned = release_module.planned_assignments
    regions = solution_regions(kit.ROOT / "solutions" / f"{reused}.ipynb")
    given = "\n".join(line for region in regions for line in region)

    def with_given_solution(folder):
        built = planned(folder)
        notebook = json.loads(built[f"{REUSING.name}.ipynb"])
        notebook["cells"].append(
            {
                "cell_type": "code",
                "id": "given",
                "metadata": {},
                "outputs": [],
                "source": given,
                "execution_count": None,
            }
        )
        built[f"{REUSING.name}.ipynb"] = json.dumps(notebook).encode("utf-8")
        return built

    monkeypatch.setattr(release_module, "planned_assignments", with_given_solution)
    return [*REUSING.reuses, REUSING.name]


def test_a_notebook_that_gives_another_solution_is_refused(tmp_path, giving_away):
    reused = giving_away[0]
    with pytest.raises(UserError) as info:
        release(tmp_path / "kit", giving_away)
    assert str(info.value).startswith(
        f"the release would give answers away: assignments/{REUSING.name}.ipynb holds the solution of {reused}. "
    )
    assert str(info.value).endswith(f"pass --reveal {reused}")
    assert not (tmp_path / "kit").exists()


def test_a_revealed_solution_may_appear(tmp_path, capsys, giving_away):
    reused = giving_away[0]
    assert release(tmp_path / "kit", giving_away, reveal=[reused]) == 0
    assert "wrote " + str(tmp_path / "kit") in capsys.readouterr().out
    given = solution_regions(kit.ROOT / "solutions" / f"{reused}.ipynb")[0]
    assert set(given) <= seen_lines(tmp_path / "kit" / "assignments" / f"{REUSING.name}.ipynb")


def test_an_assignment_ships_only_with_those_it_reuses(tmp_path):
    with pytest.raises(UserError, match=rf"^{REUSING.name} reuses {REUSING.reuses[0]}.*: ship them together$"):
        release(tmp_path / "kit", [REUSING.name])
    assert not (tmp_path / "kit").exists()


def test_a_file_the_visible_tests_load_ships_only_when_the_manifest_lists_it(tmp_path):
    folder = tmp_path / "grader" / "assignments" / "07_example"
    folder.mkdir(parents=True)
    (folder / "test_visible.py").write_text('support = helper_module(__file__, "support.py")\n')
    (folder / "support.py").write_text("X = 1\n")
    (folder / "mutants.toml").write_text("")
    listed = Assignment("07_example", folder, "Example", "an example", ("f",), ship=("support.py",))
    assert [p.name for p in shipped_test_files(listed)] == ["assignment.toml", "test_visible.py", "support.py"]
    unlisted = Assignment("07_example", folder, "Example", "an example", ("f",))
    with pytest.raises(UserError, match=r"^07_example: the visible tests load support.py, which assignment.toml's"):
        shipped_test_files(unlisted)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--assignments", "05_beam"], f"no assignment '05_beam': expected one of {', '.join(names()[:2])}"),
        (["--lectures", "09_nothing"], "no lecture '09_nothing': expected one of 01_sampling"),
        (
            ["--assignments", names()[0], "--reveal", names()[1]],
            f"no assignment '{names()[1]}' among those shipped",
        ),
    ],
)
def test_mistakes_are_one_line(tmp_path, capsys, arguments, message):
    assert course_main(["release", str(tmp_path / "kit"), *arguments]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"course release: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "kit").exists()


def test_a_release_whose_colab_cell_clones_the_placeholder_says_so(tmp_path, capsys):
    from course.build import PLACEHOLDER_REPOSITORY

    first = names()[0]
    assert release(tmp_path / "kit", [first]) == 0
    out = capsys.readouterr().out
    assert f"note: on Colab, {first} would clone the placeholder {PLACEHOLDER_REPOSITORY}: " in out
    assert "set `student-repository` under [tool.course] in pyproject.toml" in out


def test_an_existing_folder_is_never_written_into(tmp_path, capsys):
    (tmp_path / "kit").mkdir()
    (tmp_path / "kit" / "notes.txt").write_text("mine")
    assert course_main(["release", str(tmp_path / "kit")]) == 2
    assert capsys.readouterr().err == (
        f"course release: error: {tmp_path / 'kit'} exists and is not an empty folder: give a new one "
        "(a release is written whole)\n"
    )
    assert [p.name for p in (tmp_path / "kit").iterdir()] == ["notes.txt"]


def test_only_the_files_the_visible_tests_load_are_shipped(tmp_path):
    """A file ships when a shipped Python file of the folder holds its name as a string or imports it; a name in a
    comment or inside a docstring loads nothing, and what only test_hidden.py loads stays behind."""
    (tmp_path / "test_visible.py").write_text(
        '"""The hidden tests compare with hidden_support.py; see also notes.py."""\n'
        'support = helper_module(__file__, "shared_support.py")  # not hidden_support.py\n'
    )
    (tmp_path / "test_hidden.py").write_text('secret = helper_module(__file__, "hidden_support.py")\n')
    (tmp_path / "shared_support.py").write_text(
        'import inner_support\nCASES = Path(__file__).with_name("cases.json")\n'
    )
    (tmp_path / "inner_support.py").write_text("X = 1\n")
    (tmp_path / "cases.json").write_text("[]\n")
    (tmp_path / "hidden_support.py").write_text("ANSWER = 42\n")
    (tmp_path / "notes.py").write_text("NOTE = 1\n")
    assert [p.name for p in visible_test_files(tmp_path)] == [
        "test_visible.py",
        "shared_support.py",
        "cases.json",
        "inner_support.py",
    ]


def test_what_the_hidden_tests_load_stays_behind(full_kit):
    """Of each assignment's folder only its manifest, test_visible.py and what `ship` lists reach a release of every
    assignment: the modules only the hidden tests load (references that hold correct answers), mutants.toml and the
    folder's README.md stay in the kit, though a shipped helper may mention them."""
    left_behind = []
    for one in assignments():
        shipped = {"assignment.toml", "test_visible.py", *one.ship}
        in_release = full_kit / "grader" / "assignments" / one.name
        assert sorted(p.name for p in in_release.iterdir()) == sorted(shipped), one.name
        left_behind += [p for p in one.folder.iterdir() if p.is_file() and p.name not in shipped]
    assert {p.name for p in left_behind} >= {"test_hidden.py", "mutants.toml"}
    assert not [p for p in left_behind if (full_kit / p.relative_to(kit.ROOT)).exists()]


def hidden_predictions() -> dict[str, str]:
    """PREDICT_ name -> the source of the answer a hidden test expects (`expect_prediction(student.NAME, ANSWER, ...)`)."""
    found = {}
    for hidden in (kit.ROOT / "grader" / "assignments").glob("*/test_hidden*.py"):
        for node in ast.walk(ast.parse(hidden.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "expect_prediction":
                found[node.args[0].attr] = ast.unparse(node.args[1])
    return found


def test_no_shipped_file_states_a_hidden_prediction(full_kit):
    """Predictions are graded by hidden tests only: no shipped file but the student's notebook names one, and the
    notebook does not assign it (its cell is a stub whose hint lists the choices)."""
    predictions = hidden_predictions()
    assert len(predictions) >= 10 and all(name.startswith("PREDICT_") for name in predictions)
    notebooks = set((full_kit / "assignments").glob("*.ipynb"))
    for path in full_kit.rglob("*"):
        if not path.is_file() or path.suffix in (".pt", ".zip"):
            continue
        if path in notebooks:
            code = "\n".join(
                "".join(cell["source"]) for cell in json.loads(path.read_text())["cells"] if cell["cell_type"] == "code"
            )
            assigned = {
                target.id
                for node in ast.walk(ast.parse(code))
                if isinstance(node, ast.Assign)
                for target in node.targets
                if isinstance(target, ast.Name)
            }
            assert not assigned & set(predictions), (path.name, assigned & set(predictions))
        else:
            text = path.read_text(errors="replace")
            assert not [name for name in predictions if name in text], path
