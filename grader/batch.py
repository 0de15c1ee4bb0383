"""`grader batch`: every notebook of a folder, in parallel, one results file each plus a CSV of scores.

Resumable: a notebook whose results file is newer than it and was made by the same tests, grader
version and limits (the fingerprint in the file's extra_data) is not graded again. One bad notebook
never stops the batch: whatever goes wrong is in its own results file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import asdict
from pathlib import Path

from course.kit import write_atomically
from grader import __version__
from grader.errors import GraderError
from grader.identity import Limits
from grader.runner import grade, test_files
from grader.sandbox import Zygote


def fingerprint(assignment: Path, limits: Limits) -> str:
    """What the results depend on besides the notebook: the tests, the grader's version, the limits."""
    digest = hashlib.sha256(f"{__version__} {sorted(asdict(limits).items())}".encode())
    for path in sorted(Path(assignment).glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def is_current(results_path: Path, notebook: Path, expected: str) -> bool:
    try:
        if results_path.stat().st_mtime < notebook.stat().st_mtime:
            return False
        return json.loads(results_path.read_text()).get("extra_data", {}).get("fingerprint") == expected
    except (OSError, ValueError, AttributeError):
        return False


def run_batch(
    folder: Path,
    assignment: Path,
    *,
    jobs: int = 2,
    results_dir: Path | None = None,
    csv_path: Path | None = None,
    limits: Limits = Limits(),
    progress: bool = True,
) -> list[dict]:
    """Grade every notebook in `folder`; returns one row per notebook (file, score, max_score, per-test scores)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GraderError(f"no folder at {folder}")
    test_files(assignment)  # a usage mistake stops here, before anything is graded
    notebooks = sorted(p for p in folder.glob("*.ipynb") if p.is_file())
    if not notebooks:
        raise GraderError(f"no notebooks (*.ipynb) in {folder}")
    results_dir = Path(results_dir) if results_dir else folder / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    current = fingerprint(assignment, limits)
    tasks = [(nb, results_dir / f"{nb.stem}.json") for nb in notebooks]
    to_grade = [(nb, path) for nb, path in tasks if not is_current(path, nb, current)]
    if to_grade:  # run as root, no worker sees the batch's notebooks or results (nor the tests, nor the solutions)
        _grade_in_parallel(to_grade, assignment, limits, current, jobs, progress, hidden=(folder, results_dir))
    rows = [_row(nb, path) for nb, path in tasks]
    write_csv(csv_path or results_dir / "scores.csv", rows)
    return rows


def _grade_in_parallel(tasks, assignment, limits, current, jobs, progress, hidden) -> None:
    """`jobs` threads, each waiting on one grading process at a time: the processes, forked by the zygote, do the work."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    with Zygote() as zygote, ThreadPoolExecutor(jobs) as pool:
        work = [(nb, path, assignment, limits, current, zygote, hidden) for nb, path in tasks]
        bar = tqdm(total=len(work), unit="notebook", disable=not progress or None, desc="grading")
        for _ in pool.map(_grade_one, work):
            bar.update()
        bar.close()


def _grade_one(task) -> None:
    notebook, results_path, assignment, limits, current, zygote, hidden = task
    try:
        grade(
            notebook,
            assignment,
            results_path=results_path,
            limits=limits,
            zygote=zygote,
            hidden=hidden,
            extra_data={"fingerprint": current, "notebook": notebook.name},
        )
    except Exception as error:  # a bug of ours must not stop the batch: the row says so
        print(f"grader batch: {notebook.name}: grading failed ({type(error).__name__}: {error})", flush=True)


def _row(notebook: Path, results_path: Path) -> dict:
    try:
        results = json.loads(results_path.read_text())
    except (OSError, ValueError):
        return {"notebook": notebook.name, "score": "", "max_score": "", "tests": {}, "error": "no results"}
    tests = {t.get("extra_data", {}).get("test", t["name"]): t["score"] for t in results["tests"]}
    return {"notebook": notebook.name, "score": results["score"], "max_score": results["max_score"], "tests": tests}


def write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(name for row in rows for name in row["tests"]))
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(["notebook", "score", "max_score", *columns])
    for row in rows:
        writer.writerow([row["notebook"], row["score"], row["max_score"], *(row["tests"].get(c, "") for c in columns)])
    write_atomically(path, table.getvalue())
