"""course.kit: the kit's root folder, where WikiText is found, atomic writes of files and folders, their modes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from course import kit
from course.errors import UserError
from course.kit import ROOT, atomic_folder, atomic_path, write_atomically


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_root_is_the_repository():
    assert Path(__file__).resolve() == ROOT / "tests" / "test_kit.py"
    assert all((ROOT / name).is_dir() for name in ("course", "grader", "solutions", "lectures"))


# --- where WikiText is found ---------------------------------------------------------------------


@pytest.fixture
def folders(tmp_path):
    (tmp_path / "flag").mkdir()
    (tmp_path / "env").mkdir()
    return tmp_path / "flag", tmp_path / "env"


def test_the_flag_beats_the_environment(folders, monkeypatch):
    flag, env = folders
    monkeypatch.setenv("COURSE_DATA_DIR", str(env))
    assert kit.data_dir(flag) == flag
    assert kit.data_dir(str(flag)) == flag


def test_without_the_flag_the_environment_is_used(folders, monkeypatch):
    _, env = folders
    monkeypatch.setenv("COURSE_DATA_DIR", str(env))
    assert kit.data_dir() == env
    assert kit.data_dir("") == env


@pytest.mark.parametrize("variable", [None, ""])
def test_without_either_it_is_the_hub(variable, monkeypatch):
    if variable is None:
        monkeypatch.delenv("COURSE_DATA_DIR", raising=False)
    else:
        monkeypatch.setenv("COURSE_DATA_DIR", variable)
    assert kit.data_dir() is None


def test_a_folder_that_does_not_exist_is_one_line_naming_it_and_who_named_it(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    monkeypatch.setenv("COURSE_DATA_DIR", str(missing))
    with pytest.raises(UserError) as error:
        kit.data_dir()
    assert str(error.value) == (
        f"expected a folder holding the WikiText files at {missing} (from $COURSE_DATA_DIR), found no such folder"
    )
    with pytest.raises(UserError) as error:
        kit.data_dir(missing)
    assert str(error.value) == f"expected a folder holding the WikiText files at {missing}, found no such folder"


# --- atomic files --------------------------------------------------------------------------------


def test_write_replaces_the_file_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "out" / "results.json"
    write_atomically(path, "old\n")
    write_atomically(path, b"new\n")
    assert path.read_bytes() == b"new\n"
    assert os.listdir(path.parent) == ["results.json"]


def test_text_is_written_as_utf8(tmp_path):
    write_atomically(tmp_path / "note.txt", "naïve ␣ → \r\n")
    assert (tmp_path / "note.txt").read_bytes() == "naïve ␣ → \r\n".encode()


def test_an_error_keeps_the_old_content_and_removes_the_temporary_file(tmp_path):
    path = tmp_path / "scores.csv"
    path.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as temporary:
        temporary.write_text("half of the new")
        raise KeyboardInterrupt
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["scores.csv"]


def test_temporary_files_are_fresh_hidden_names_beside_the_target(tmp_path):
    path = tmp_path / "scores.csv"
    (tmp_path / "scores.csv.tmp").write_text("someone else's")
    with atomic_path(path) as first, atomic_path(path) as second:
        assert first != second
        assert first.parent == second.parent == tmp_path
        assert first.name.startswith(".scores.csv.") and second.name.startswith(".scores.csv.")
        first.write_text("1")
        second.write_text("2")
    assert path.read_text() == "1"  # the last to finish (the outer block) wins
    assert (tmp_path / "scores.csv.tmp").read_text() == "someone else's"
    assert sorted(os.listdir(tmp_path)) == ["scores.csv", "scores.csv.tmp"]


@pytest.mark.parametrize(("mask", "file_mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_written_file_has_the_mode_the_umask_asks_for(mask, file_mode, tmp_path, umask):
    umask(mask)
    path = tmp_path / "results.json"
    write_atomically(path, "{}")
    assert mode(path) == file_mode
    path.chmod(0o600)
    write_atomically(path, "{}")  # a new file: the mode comes from the umask, not from the file it replaces
    assert mode(path) == file_mode


def test_course_build_writes_notebooks_readable_by_all(tmp_path, umask):
    umask(0o022)  # inherited by the child
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "course.cli",
            "build",
            "--solutions",
            str(ROOT / "solutions"),
            "--assignments",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    written = sorted(tmp_path.iterdir())
    notebooks = sorted(path.name for path in (ROOT / "solutions").glob("*.ipynb"))
    assert [path.name for path in written] == [".build.json", *notebooks]  # the notebooks and the build's record
    assert [mode(path) for path in written] == [0o644] * len(written)


# --- atomic folders ------------------------------------------------------------------------------


def test_a_folder_is_replaced_as_a_whole(tmp_path):
    path = tmp_path / "ckpt"
    with atomic_folder(path) as staging:
        (staging / "old.txt").write_text("old")
    with atomic_folder(path) as staging:
        assert staging.parent == tmp_path and list(staging.iterdir()) == []
        (staging / "new.txt").write_text("new")
    assert os.listdir(path) == ["new.txt"]
    assert os.listdir(tmp_path) == ["ckpt"]


def test_an_error_keeps_the_old_folder_and_removes_the_new_one(tmp_path):
    path = tmp_path / "ckpt"
    with atomic_folder(path) as staging:
        (staging / "old.txt").write_text("old")
    with pytest.raises(OSError, match="No space"), atomic_folder(path) as staging:
        (staging / "new.txt").write_text("new")
        raise OSError("No space left on device")
    assert os.listdir(path) == ["old.txt"]
    assert os.listdir(tmp_path) == ["ckpt"]


@pytest.mark.parametrize(("mask", "folder_mode", "file_mode"), [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)])
def test_a_written_folder_has_the_modes_the_umask_asks_for(mask, folder_mode, file_mode, tmp_path, umask):
    umask(mask)
    with atomic_folder(tmp_path / "cache") as staging:
        write_atomically(staging / "meta.json", "{}")
        (staging / "train.bin").write_bytes(b"\0\0")
        (staging / "weights.bin").touch(mode=0o600)  # as safetensors writes its files
    assert mode(tmp_path / "cache") == folder_mode
    assert [mode(path) for path in sorted((tmp_path / "cache").iterdir())] == [file_mode] * 3
