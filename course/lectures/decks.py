"""Lecture notebooks as reveal.js decks: execute a notebook in a fresh kernel, export it with the code an audience
need not read hidden, keep reveal.js beside the decks (offline), and pick out the README's figures."""

from __future__ import annotations

import os
from pathlib import Path

from course.kit import ROOT

# The web libraries nbconvert's reveal.js template loads, as npm packages, and the files of each a deck needs.
# A deck exported beside a folder `assets/` holding them works offline; without it, it loads them from the web.
SLIDE_ASSETS = {
    "reveal.js@4.0.2": ("dist/", "plugin/notes/"),
    "requirejs@2.3.7": ("require.js",),
    "jquery@2.2.4": ("dist/jquery.min.js",),
}
ASSETS = "assets"
# Hidden from the slides: the code of cells tagged `remove-input` (their output stays), whole `remove-cell` cells.
HIDE_INPUT, HIDE_CELL = "remove-input", "remove-cell"
# A cell tagged `figure:NAME` draws a figure the README shows: `--figures DIR` writes its image to DIR/NAME.png.
FIGURE_TAG = "figure:"


def slides_path(notebook: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / f"{Path(notebook).stem}.slides.html"


def fetch_slide_assets(out_dir: str | os.PathLike) -> Path:
    """Put the files of SLIDE_ASSETS in `out_dir/assets/<package>/`, fetched with `npm pack` (the npm
    registry must be reachable), so that the decks in `out_dir` work without network. Returns the folder."""
    import shutil
    import subprocess
    import tarfile
    import tempfile

    from course.errors import UserError
    from course.kit import atomic_folder

    npm = shutil.which("npm")
    if npm is None:
        raise UserError("npm not found: install Node.js to fetch reveal.js for offline decks")
    target = Path(out_dir) / ASSETS
    with tempfile.TemporaryDirectory() as download, atomic_folder(target) as staging:
        result = subprocess.run(
            [npm, "pack", "--silent", *SLIDE_ASSETS], cwd=download, capture_output=True, text=True, timeout=300
        )
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise UserError(f"npm pack {' '.join(SLIDE_ASSETS)} failed: {last}")
        for spec, wanted in SLIDE_ASSETS.items():
            name, version = spec.rsplit("@", 1)
            with tarfile.open(Path(download) / f"{name}-{version}.tgz") as archive:
                for member in archive.getmembers():
                    inner = member.name.removeprefix("package/")
                    if not (member.isfile() and inner.startswith(wanted)):
                        continue
                    if Path(inner).is_absolute() or ".." in Path(inner).parts:
                        raise UserError(f"npm pack {spec}: the archive holds an unsafe path {member.name!r}")
                    # regular files only, written by hand: tarfile's extraction filters need Python 3.11.4 or later
                    destination = Path(staging, name, inner)
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    destination.write_bytes(archive.extractfile(member).read())
    return target


def provide_slide_assets(out_dir: str | os.PathLike, fetch: bool = True) -> Path:
    """`out_dir/assets` for offline decks: kept if there, else copied from the kit's lectures/slides/assets (made
    by `make slides`), else (with `fetch`) fetched with npm. UserError when there is none."""
    import shutil

    from course.errors import UserError

    target = Path(out_dir) / ASSETS
    kit_copy = ROOT / "lectures" / "slides" / ASSETS
    if target.is_dir():
        return target
    if kit_copy.is_dir() and kit_copy.resolve() != target.resolve():
        from course.kit import atomic_folder

        with atomic_folder(target) as staging:
            shutil.copytree(kit_copy, staging, dirs_exist_ok=True)
        return target
    if not fetch:
        raise UserError(f"no reveal.js in {kit_copy}: `python -m course.lectures` (no notebook) fetches it with npm")
    return fetch_slide_assets(out_dir)


def slides_html(notebook, assets: str | None = None) -> str:
    """An executed notebook (a NotebookNode) as a reveal.js deck, with the code of `remove-input` cells and the
    whole of `remove-cell` cells left out. `assets`: a URL or relative path to a folder made by
    `fetch_slide_assets` (else the libraries are loaded from the web)."""
    from nbconvert import SlidesExporter
    from traitlets.config import Config

    config = Config()
    config.TagRemovePreprocessor.enabled = True
    config.TagRemovePreprocessor.remove_input_tags = {HIDE_INPUT}
    config.TagRemovePreprocessor.remove_cell_tags = {HIDE_CELL}
    config.SlidesExporter.reveal_scroll = True  # a slide taller than the screen scrolls instead of being cut off
    config.SlidesExporter.reveal_number = "c/t"  # slide numbers, to refer to in questions
    config.SlidesExporter.exclude_input_prompt = True  # no "In [3]:" beside the code that stays
    config.SlidesExporter.exclude_output_prompt = True
    if assets is not None:
        config.SlidesExporter.reveal_url_prefix = f"{assets}/reveal.js"
        config.SlidesExporter.require_js_url = f"{assets}/requirejs/require.js"
        config.SlidesExporter.jquery_url = f"{assets}/jquery/dist/jquery.min.js"
    body, _ = SlidesExporter(config=config).from_notebook_node(notebook)
    return body


def execute_lecture(notebook: str | os.PathLike, timeout: int = 600):
    """Run a lecture notebook top to bottom in a fresh kernel (in its own folder) and return it with its outputs.
    Raises UserError naming the cell when one fails (a missing checkpoint: the lecture's own message)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from course.errors import UserError

    path = Path(notebook)
    try:
        nb = nbformat.read(path, as_version=4)
    except (OSError, ValueError) as e:  # missing file, not JSON, not a notebook
        raise UserError(f"expected a Jupyter notebook at {path} ({e.__class__.__name__})") from None
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    env = dict(os.environ, MPLBACKEND="module://matplotlib_inline.backend_inline")
    # One torch thread unless OMP_NUM_THREADS says otherwise: beside other work, threads that spin for cores other
    # processes hold made lecture 03 five times slower (3 min 3 s against 37 s on a loaded 2-core machine).
    env.setdefault("OMP_NUM_THREADS", "1")
    try:
        client.execute(env=env)
    except CellExecutionError as e:
        raise UserError(f"{path.name} stopped in a cell: {e.ename}: {e.evalue}") from None
    return nb


def export_slides(notebook: str | os.PathLike, out_dir: str | os.PathLike, timeout: int = 600):
    """Execute the lecture `notebook` and write its deck to `out_dir/<name>.slides.html` (atomically). The deck
    uses the libraries in `out_dir/assets` when they are there (see `fetch_slide_assets`). Returns
    `(deck path, executed notebook)`."""
    from course.kit import write_atomically

    nb = execute_lecture(notebook, timeout)
    local = (Path(out_dir) / ASSETS / "reveal.js" / "dist" / "reveal.js").is_file()
    deck = slides_path(notebook, out_dir)
    write_atomically(deck, slides_html(nb, ASSETS if local else None))
    return deck, nb


def tagged_figures(nb) -> dict[str, bytes]:
    """{NAME: PNG bytes} of an executed notebook's cells tagged `figure:NAME` (each cell's last image)."""
    import base64

    from course.errors import UserError

    figures = {}
    for index, cell in enumerate(nb.cells):
        for tag in cell.get("metadata", {}).get("tags", []):
            if not tag.startswith(FIGURE_TAG):
                continue
            images = [out["data"]["image/png"] for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]
            if not images:
                raise UserError(f"cell {index} is tagged {tag} but drew no image")
            figures[tag.removeprefix(FIGURE_TAG)] = base64.b64decode(images[-1])
    return figures
