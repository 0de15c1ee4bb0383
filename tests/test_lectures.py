"""The lecture notebooks: committed without outputs, shaped as slide decks, run top to bottom on the tiny checkpoint
and export to slides that hide the code an audience need not read."""

from __future__ import annotations

import base64
import html
import os
import re

import nbformat
import pytest
import torch

from course import fixtures
from course.errors import UserError
from course.kit import ROOT
from course.lectures import cli, decks, gltr, inside, loading, sampling

LECTURES = sorted((ROOT / "lectures").glob("*.ipynb"))
HIDDEN = {decks.HIDE_INPUT, decks.HIDE_CELL}


def test_there_are_lectures():
    names = [path.name for path in LECTURES]
    assert names == [
        "01_sampling.ipynb",
        "02_kv_cache.ipynb",
        "03_inside_the_model.ipynb",
        "04_patterns_and_prompting.ipynb",
        "05_detection_and_watermarks.ipynb",
    ]


def slide_type(cell) -> str:
    return cell.metadata.get("slideshow", {}).get("slide_type", "-")


def is_hidden(cell) -> bool:
    return bool(HIDDEN & set(cell.metadata.get("tags", [])))


@pytest.mark.parametrize("path", LECTURES, ids=lambda p: p.name)
def test_lecture_is_a_deck(path):
    """A title slide first; every section heading starts a slide; most code hidden from the slides."""
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), f"{path.name}: cell 0 is not a title"
    assert slide_type(first) == "slide"
    assert len(first.source.strip().splitlines()) >= 2, f"{path.name}: the title cell says nothing under the title"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and cell.source.startswith("## "):
            assert slide_type(cell) in ("slide", "subslide"), f"{path.name} cell {i} opens a section but no slide"
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    hidden = [cell for cell in code if is_hidden(cell)]
    assert len(hidden) > len(code) / 2, f"{path.name}: only {len(hidden)} of {len(code)} code cells are hidden"


@pytest.mark.parametrize("path", LECTURES, ids=lambda p: p.name)
def test_outputs_are_stripped(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i} has outputs: clear them before committing"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"


def test_without_a_checkpoint_the_lecture_says_how_to_make_one(tmp_path, monkeypatch):
    monkeypatch.delenv("COURSE_CHECKPOINT", raising=False)
    lecture_folder = tmp_path / "lectures"
    lecture_folder.mkdir()
    with pytest.raises(loading.LectureStop) as stop:
        loading.lecture_checkpoints(lecture_folder)
    message = "\n".join(stop.value._render_traceback_())
    assert "runs/course, runs/laptop, runs/tiny" in message and str(lecture_folder) in message
    assert "course train --preset tiny --out runs/tiny" in message
    monkeypatch.setenv("COURSE_CHECKPOINT", str(tmp_path / "nowhere"))
    with pytest.raises(loading.LectureStop, match="not a checkpoint folder"):
        loading.lecture_checkpoints(lecture_folder)


def test_repeated_ngram_fraction():
    assert sampling.repeated_ngram_fraction([1, 2, 3, 4, 5, 6]) == 0
    assert sampling.repeated_ngram_fraction([1, 2] * 10, n=2) == pytest.approx(17 / 19)


def page_text(body: str) -> str:
    """The text a reader sees in an HTML page (tags and scripts dropped, entities decoded)."""
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", body, flags=re.S | re.I)
    return html.unescape(re.sub(r"<[^>]+>", "", body))


def distinctive_lines(cell, others: str) -> list[str]:
    """The lines of a cell's source long enough to be recognised and found in no other shown text."""
    return [line.strip() for line in cell.source.splitlines() if len(line.strip()) >= 25 and line.strip() not in others]


def assert_hidden_code_is_not_shown(nb, body: str) -> None:
    text = page_text(body)
    shown = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown" or not is_hidden(cell))
    hidden = [cell for cell in nb.cells if cell.cell_type == "code" and is_hidden(cell)]
    checked = 0
    for cell in hidden:
        for line in distinctive_lines(cell, shown):
            assert line not in text, f"the slides show code of a hidden cell: {line!r}"
            checked += 1
    assert checked, "no hidden line to look for"
    # ...and the same extraction does find what is meant to be shown (so the check above can fail)
    for cell in nb.cells:
        if cell.cell_type == "code" and not is_hidden(cell):
            for line in distinctive_lines(cell, ""):
                assert line in text, f"a code cell meant for the slides is missing: {line!r}"


def test_slides_hide_tagged_code_and_keep_its_output():
    md = nbformat.v4.new_markdown_cell("# A title\nsaid in one line")
    setup = nbformat.v4.new_code_cell(
        "hidden_setup_value = 'neither code nor output shown'", metadata={"tags": ["remove-cell"]}
    )
    setup.outputs = [nbformat.v4.new_output("stream", text="output of the set-up cell\n")]
    figure = nbformat.v4.new_code_cell(
        "draw_the_figure_of_the_lesson(with_hidden_code=True)", metadata={"tags": ["remove-input"]}
    )
    figure.outputs = [nbformat.v4.new_output("stream", text="output of the figure cell\n")]
    lesson = nbformat.v4.new_code_cell("kept_tokens = cumulative_mass_before_each_token < p")
    nb = nbformat.v4.new_notebook(cells=[md, setup, figure, lesson])
    text = page_text(decks.slides_html(nb))
    assert "said in one line" in text and "kept_tokens = cumulative_mass_before_each_token < p" in text
    assert "output of the figure cell" in text
    assert "draw_the_figure_of_the_lesson" not in text
    assert "hidden_setup_value" not in text and "output of the set-up cell" not in text
    assert_hidden_code_is_not_shown(nb, decks.slides_html(nb))


def test_slides_use_local_reveal_when_given():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Title\nline")])
    body = decks.slides_html(nb, assets="assets")
    assert 'src="assets/requirejs/require.js"' in body and '"assets/reveal.js/dist/reveal.js"' in body
    assert "unpkg.com" not in body


def test_tagged_figures_are_each_cells_last_image_and_a_tag_without_one_is_refused():
    def png_output(payload: bytes):
        return nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(payload).decode()})

    drawn = nbformat.v4.new_code_cell("draw()", metadata={"tags": ["remove-input", "figure:cuts"]})
    drawn.outputs = [png_output(b"first"), nbformat.v4.new_output("stream", text="x\n"), png_output(b"last")]
    untagged = nbformat.v4.new_code_cell("draw()")
    untagged.outputs = [png_output(b"not a README figure")]
    assert decks.tagged_figures(nbformat.v4.new_notebook(cells=[drawn, untagged])) == {"cuts": b"last"}

    blank = nbformat.v4.new_code_cell("print(1)", metadata={"tags": ["figure:lens"]})
    with pytest.raises(UserError, match="cell 1 is tagged figure:lens but drew no image"):
        decks.tagged_figures(nbformat.v4.new_notebook(cells=[drawn, blank]))


def test_export_of_a_missing_notebook_is_one_line(tmp_path):
    with pytest.raises(UserError, match="expected a Jupyter notebook") as error:
        decks.export_slides(tmp_path / "nowhere.ipynb", tmp_path)
    assert "\n" not in str(error.value)
    assert cli.main([str(tmp_path / "nowhere.ipynb"), "--out", str(tmp_path), "--online"]) == 2
    assert not list(tmp_path.glob("*.html"))
    # checked before anything is fetched or written
    assert cli.main([str(tmp_path / "nowhere.ipynb"), "--out", str(tmp_path / "decks")]) == 2
    assert not (tmp_path / "decks").exists()


def simple_top_k(logits, k):
    return logits.masked_fill(logits < logits.topk(k).values[-1], -float("inf"))


def simple_top_p(logits, p):
    probs, order = logits.softmax(-1).sort(descending=True)
    removed = order[probs.cumsum(-1) - probs >= p]
    return logits.clone().index_fill_(0, removed, -float("inf"))


@pytest.mark.parametrize("source", [fixtures.distributions, fixtures.essay_distributions])
def test_the_cut_slide_says_top_p_adapts_on_the_shipped_distributions(source):
    shipped = source()
    panels = [shipped["peaked"], shipped["flat"]]
    verdict = sampling.cut_verdict(panels, simple_top_k, simple_top_p, k=10, p=0.9)
    assert verdict.startswith("Top-p (p = 0.9) adapts to the shape, top-k (k = 10) does not: ")
    assert "top-k keeps 10, top-p 1;" in verdict  # the peaked prompt: one token holds 90% of the mass
    flat_only = sampling.cut_verdict([shipped["flat"]], simple_top_k, simple_top_p, k=10, p=0.9)
    assert flat_only.startswith("Top-p (p = 0.9) keeps more tokens than top-k (k = 10) after each prompt")


def test_repetition_verdict():
    assert sampling.repetition_verdict({"greedy": 0.8, "sampling": 0.0}) == (
        "Share of repeated 4-grams in each continuation: greedy 80% (a loop), sampling 0%."
    )


def test_gltr_verdict_says_truncation_only_when_the_numbers_do():
    human, full = "human", "T = 1"
    said = gltr.gltr_verdict({human: 0.40, full: 0.38, "top-k 10": 0.70, "top-p 0.9": 0.55}, human, full)
    assert said.startswith("Share of tokens in the model's top 10: human 40%, T = 1 38%, top-k 10 70%, top-p 0.9 55%.")
    assert "More predictable to the model than the human text: top-k 10, top-p 0.9." in said
    assert "Truncation is what makes machine text predictable" in said
    # the full sample stands out too: no word about truncation
    said = gltr.gltr_verdict({human: 0.40, full: 0.60, "top-k 10": 0.70}, human, full)
    assert "Truncation" not in said
    said = gltr.gltr_verdict({human: 0.40, full: 0.41, "top-k 10": 0.42}, human, full)
    assert "No sample is more predictable" in said and "Truncation" not in said


def test_kv_substitution_verdict():
    # (d_true, d_prev, d_rand): changes in loss, nats per token; within 0.01 counts as none
    assert "helps" in inside.kv_substitution_verdict([2, 3], -0.05, 0.0, 0.1)
    assert "The substitution hurts" in inside.kv_substitution_verdict([2, 3], 0.05, 0.0, 0.1)
    unharmed = inside.kv_substitution_verdict([2, 3], -0.001, 0.0, 0.013)
    assert "lose nothing" in unharmed and "hurts" in unharmed and "cannot tell" in unharmed
    assert "cannot tell" not in inside.kv_substitution_verdict([2, 3], 0.0, 0.05, 0.1)
    assert "says little" in inside.kv_substitution_verdict([3], 0.0, 0.0, 0.004)


def test_embedding_verdict():
    # (unchanged, true next token, random token) in nats; within 0.01 counts as equal
    assert "Later positions lose nothing" in inside.embedding_verdict(3.0, 3.005, 3.5, 2, 4)
    assert "carry more than a guess" in inside.embedding_verdict(3.0, 3.2, 3.5, 2, 4)
    assert "no better than a random one" in inside.embedding_verdict(3.0, 3.5, 3.5, 2, 4)
    assert "enters layer 2, by the embedding of the token that follows it (layers 2-3 then" in (
        inside.embedding_verdict(3.0, 3.5, 3.5, 2, 4)
    )
    assert "(layer 3 then" in inside.embedding_verdict(3.0, 3.5, 3.5, 3, 4)


def test_standardized_logits_and_segment_kinds():
    z = inside.standardized(torch.tensor([[1.0, 2.0, 3.0], [10.0, 20.0, 30.0]]))
    torch.testing.assert_close(z[0], z[1])  # the same shape at another scale: the same histogram
    torch.testing.assert_close(z.mean(-1), torch.zeros(2))
    torch.testing.assert_close(z.std(-1), torch.ones(2))
    assert [inside.segment_kind(s) for s in ("attn 0", "mlp 0", "attn 11")] == ["attn", "mlp", "attn"]
    with pytest.raises(ValueError, match="expected a site"):
        inside.segment_kind("embed")


@pytest.fixture(scope="session")
def deck_folder(tmp_path_factory):
    """Where this session's exported decks go, with reveal.js beside them when it can be had offline
    (tests/test_slides.py renders them in a browser)."""
    folder = tmp_path_factory.getbasetemp() / "lecture-slides"
    try:
        decks.provide_slide_assets(folder, fetch=False)
    except UserError:
        pass  # the decks load reveal.js from the web; tests/test_slides.py then says why it skips
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("path", LECTURES, ids=lambda p: p.name)
def test_lecture_runs_and_exports_to_slides(path, tiny_checkpoint, wikitext2_dir, deck_folder, monkeypatch):
    monkeypatch.setenv("COURSE_CHECKPOINT", str(tiny_checkpoint))
    monkeypatch.setenv("COURSE_DATA_DIR", str(wikitext2_dir))
    # On a shared 2-core machine, torch's thread pool spinning against other processes costs far more than it gains.
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    deck, nb = decks.export_slides(path, deck_folder)  # UserError naming the cell on any error

    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    figures = [out for out in outputs if "image/png" in out.get("data", {})]
    assert figures, f"{path.name} drew no figure"

    body = deck.read_text()
    assert deck == deck_folder / f"{path.stem}.slides.html"
    assert "Reveal.initialize" in body
    title = nb.cells[0].source.splitlines()[0].removeprefix("# ")
    assert title in page_text(body)
    assert_hidden_code_is_not_shown(nb, body)
    # every figure of a cell that is not removed whole is on the slides
    shown = [
        out
        for cell in nb.cells
        if cell.cell_type == "code" and decks.HIDE_CELL not in cell.metadata.get("tags", [])
        for out in cell.outputs
        if "image/png" in out.get("data", {})
    ]
    assert shown and body.count('src="data:image/png;base64,') >= len(shown)
    # the README's figures (`make figures`) are images of this run
    assert all(png.startswith(b"\x89PNG") for png in decks.tagged_figures(nb).values())
