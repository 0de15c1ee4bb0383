"""Shared fixtures: the local WikiText-2 and one tiny checkpoint trained once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_WIKITEXT2 = ROOT.parent / "shared" / "data" / "wikitext-2"


def _wikitext2_dir() -> Path | None:
    for candidate in (os.environ.get("COURSE_DATA_DIR"), SHARED_WIKITEXT2):
        if candidate and (Path(candidate) / "wiki.train.tokens").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def wikitext2_dir() -> Path:
    path = _wikitext2_dir()
    if path is None:
        pytest.skip("WikiText-2 not found: set COURSE_DATA_DIR or place it in ../shared/data/wikitext-2")
    return path


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
