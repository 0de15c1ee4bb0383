"""What the whole kit shares: its root folder, where WikiText is found, and atomic writes.

Atomic means a reader (or the next run, after a crash) sees the old content or the new, never a part:
everything is written under a fresh hidden name beside the target, fsync'ed, then renamed over it in one
step. New files and folders get the mode the umask asks for (0o666 & ~umask, 0o777 & ~umask), as if
written in place: the temporary names are created with open permissions and the kernel applies the
umask, which is why they do not come from `tempfile` (its files are always 0600, its folders 0700).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from course.errors import UserError

ROOT = Path(__file__).resolve().parents[1]  # the kit's folder: course/, grader/, solutions/, lectures/, runs/ ...
DATA_DIR_VARIABLE = "COURSE_DATA_DIR"


def data_dir(flag: str | os.PathLike | None = None) -> Path | None:
    """The local WikiText folder named by the `--data-dir` flag, else by $COURSE_DATA_DIR, else None: then
    `course.data` looks for what an earlier `course prepare` recorded, and only then asks the Hugging Face hub.

    A folder that is named but does not exist is an error, whichever way it was named."""
    from_environment = not flag
    chosen = flag or os.environ.get(DATA_DIR_VARIABLE)
    if not chosen:
        return None
    folder = Path(chosen)
    if not folder.is_dir():
        named_by = f" (from ${DATA_DIR_VARIABLE})" if from_environment else ""
        raise UserError(f"expected a folder holding the WikiText files at {folder}{named_by}, found no such folder")
    return folder


# --- atomic writes --------------------------------------------------------------------------------


def _create_beside(path: Path, suffix: str, create: Callable[[Path], None]) -> Path:
    """A new entry beside `path` under an unused hidden name, made by `create` (which fails if the name exists)."""
    while True:
        candidate = path.with_name(f".{path.name}.{secrets.token_hex(6)}{suffix}")
        try:
            create(candidate)
            return candidate
        except FileExistsError:
            continue


def _new_file(path: Path) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def _fsync(path: Path) -> None:
    """Flush a file, or a folder's entries (a rename into it), to disk. Windows flushes only a handle open
    for writing, and cannot open a folder (nor needs to)."""
    if os.name == "nt" and path.is_dir():
        return
    fd = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file's path beside `path`, for a writer that wants a file name; when the block
    ends, that file replaces `path` in one step. On an error it is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _create_beside(path, ".tmp", _new_file)
    try:
        yield temporary
        _fsync(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_atomically(path: str | os.PathLike, content: bytes | str) -> None:
    """Write `content` (text as UTF-8) to `path` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)


# --- atomic folders -------------------------------------------------------------------------------
# A folder cannot be renamed over another, so a swap takes two renames: the old folder moves aside to a
# backup name, then the new one moves in. A crash between the two leaves only the backup, which
# `recover_interrupted_swap` puts back.


def _backup_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.previous")


def _move_folder(source: Path, target: Path) -> None:
    """Rename `source` to the free name `target`, durably."""
    os.replace(source, target)
    _fsync(target.parent)


def recover_interrupted_swap(path: str | os.PathLike) -> None:
    """Put back the folder `path` if a swap died after moving it aside (see `atomic_folder`)."""
    path = Path(path)
    backup = _backup_path(path)
    if backup.exists() and not path.exists():
        _move_folder(backup, path)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; when the block ends it replaces `path` as a whole
    (every file in it fsync'ed first). On an error it is removed and `path` is left as it was.

    The files in it get the umask's mode whoever wrote them: some writers (safetensors) make private files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted_swap(path)
    staging = _create_beside(path, ".partial", lambda name: os.mkdir(name, 0o777))
    try:
        yield staging
        file_mode = stat.S_IMODE(staging.stat().st_mode) & 0o666  # the folder was made 0o777 & ~umask
        for entry in staging.iterdir():
            if entry.is_file():
                entry.chmod(file_mode)
            _fsync(entry)
        _fsync(staging)
        backup = _backup_path(path)
        shutil.rmtree(backup, ignore_errors=True)
        if path.exists():
            _move_folder(path, backup)
        _move_folder(staging, path)
        shutil.rmtree(backup, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
