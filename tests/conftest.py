"""Shared fixtures: the local WikiText-2 and one tiny checkpoint trained once per test session."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from course import kit

# Where the Makefile and CI point $COURSE_DATA_DIR; a test session also finds it without them. The library
# itself only knows the flag and the variable (`course.kit.data_dir`).
SHARED_WIKITEXT2 = kit.ROOT.parent / "shared" / "data" / "wikitext-2"


def _wikitext2_dir() -> Path | None:
    for candidate in (kit.data_dir(), SHARED_WIKITEXT2):
        if candidate and (candidate / "wiki.train.tokens").is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def wikitext2_dir() -> Path:
    path = _wikitext2_dir()
    if path is None:
        pytest.skip("WikiText-2 not found: set COURSE_DATA_DIR or place it in ../shared/data/wikitext-2")
    return path


@pytest.fixture
def umask():
    """The test runs under umask 022, and `umask(0o077)` sets another; the session's comes back after it."""
    if os.name == "nt":
        pytest.skip("Windows has no umask")
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


@pytest.fixture(scope="session")
def course_cache_dir(tmp_path_factory) -> Path:
    """One data cache (tokenizer + encoded splits) shared by every test of the session."""
    return tmp_path_factory.mktemp("course-cache")


def run_course(*args: str, cache_dir: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, COURSE_CACHE_DIR=str(cache_dir))
    return subprocess.run(
        [sys.executable, "-m", "course.cli", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


@pytest.fixture(scope="session")
def course_cli(course_cache_dir):
    """`course ARGS...` in a fresh interpreter with the session's data cache: course_cli("eval", path)."""
    return lambda *args, timeout=900: run_course(*args, cache_dir=course_cache_dir, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, wikitext2_dir, course_cache_dir) -> Path:
    """A tiny model trained briefly on WikiText-2: good enough to exercise every tool, fast to make."""
    out = tmp_path_factory.mktemp("tiny-ckpt") / "tiny"
    for args in (
        ("prepare", "--data-dir", str(wikitext2_dir)),
        ("train", "--preset", "tiny", "--max-steps", "60", "--out", str(out), "--data-dir", str(wikitext2_dir)),
    ):
        result = run_course(*args, cache_dir=course_cache_dir)
        assert result.returncode == 0, f"course {' '.join(args)} failed:\n{result.stderr[-3000:]}"
    return out


@contextlib.contextmanager
def busy_machine():
    """One CPU-bound process per processor beside the block, as on a laptop that runs other programs in class."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdout=subprocess.DEVNULL)
        for _ in range(os.cpu_count() or 1)
    ]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


# A lecture that times things live (with course.lectures.kv_cache) is executed on a machine made busy on purpose.
TIMES_LIVE = "from course.lectures import kv_cache"


@pytest.fixture(scope="session")
def exported_lecture(tmp_path_factory, tiny_checkpoint, wikitext2_dir):
    """`exported_lecture(path)`: (deck, executed notebook) of a lecture notebook run on the tiny checkpoint, each
    lecture executed once a session, its deck in one folder with reveal.js beside it when it can be had offline.
    A lecture that times things live runs beside `busy_machine()`."""
    from course.errors import UserError
    from course.lectures import decks

    folder = tmp_path_factory.mktemp("lecture-slides")
    try:
        decks.provide_slide_assets(folder, fetch=False)
    except UserError:
        pass  # the decks load reveal.js from the web; tests/test_slides.py then says why it skips
    done = {}

    def export(path: Path):
        if path not in done:
            with pytest.MonkeyPatch.context() as env:
                env.setenv("COURSE_CHECKPOINT", str(tiny_checkpoint))
                env.setenv("COURSE_DATA_DIR", str(wikitext2_dir))
                with busy_machine() if TIMES_LIVE in path.read_text() else contextlib.nullcontext():
                    done[path] = decks.export_slides(path, folder)  # UserError naming the cell on any error
        return done[path]

    return export


# The mutation tests record what each wrong implementation lost; the tables are printed after the results.
MUTANT_TABLES = pytest.StashKey[dict[str, list[tuple[str, ...]]]]()


@pytest.fixture(scope="session")
def mutant_table(request):
    """`mutant_table(title, *header)`: that table's list of rows, header first; append one tuple of cells a row."""
    tables = request.config.stash.setdefault(MUTANT_TABLES, {})
    return lambda title, *header: tables.setdefault(title, [header])


def pytest_terminal_summary(terminalreporter, config):
    """The mutant tables recorded in this session, columns aligned."""
    for title, rows in config.stash.get(MUTANT_TABLES, {}).items():
        terminalreporter.write_sep("-", title)
        widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
        for row in rows:
            terminalreporter.write_line("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[-1]]))
