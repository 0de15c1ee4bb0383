"""The lecture notebooks: committed without outputs, shaped as slide decks, run top to bottom on the tiny checkpoint
and export to slides that hide the code an audience need not read."""

from __future__ import annotations

import base64
import html
import re

import nbformat
import pytest
import torch

from course import fixtures
from course.errors import UserError
from course.kit import ROOT
from course.lectures import cli, decks, gltr, inside, kv_cache, loading, sampling, style

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


@pytest.mark.slow
@pytest.mark.parametrize("path", LECTURES, ids=lambda p: p.name)
def test_lecture_runs_and_exports_to_slides(path, exported_lecture):
    deck, nb = exported_lecture(path)

    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    figures = [out for out in outputs if "image/png" in out.get("data", {})]
    assert figures, f"{path.name} drew no figure"

    body = deck.read_text()
    assert deck.name == f"{path.stem}.slides.html"
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


def markdown_said(nb) -> str:
    """The Markdown that a notebook's code cells displayed (what the slides say in sentences computed from data)."""
    return "\n".join(
        out["data"]["text/markdown"]
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if "text/markdown" in out.get("data", {})
    )


GENERATION_CLAIM = re.compile(
    r"The cache made the \d+ tokens ([\d.]+)× faster: (\d+) ms with the cache, (\d+) ms without, medians of \d+ runs"
)
CURVE_CLAIM = re.compile(
    r"costs ([\d.]+)× more without the cache and ([\d.]+)× more with it; "
    r"at \d+ tokens ([\d.]+) ms with the cache, ([\d.]+) ms without \(([\d.]+)× faster\)"
)
NOT_SHOWN = "These timings do not show the cache's gain"


def assert_timings_never_contradict_the_lesson(said: str, measurements: int) -> None:
    """Every timing sentence either states the cache's gain with numbers that show it, or says that the numbers
    do not show it; `measurements` sentences in all."""
    generation = GENERATION_CLAIM.findall(said)
    curves = CURVE_CLAIM.findall(said)
    for ratio, with_ms, without_ms in generation:
        assert int(without_ms) > int(with_ms), f"'faster' with {with_ms} ms with the cache, {without_ms} ms without"
        assert float(ratio) == pytest.approx(int(without_ms) / int(with_ms), abs=0.1 + 1 / int(with_ms))
    for growth_without, growth_with, with_ms, without_ms, ratio in curves:
        assert float(growth_without) > float(growth_with)
        assert float(without_ms) > float(with_ms) and float(ratio) > 1
    assert len(generation) + len(curves) + said.count(NOT_SHOWN) == measurements, said
    assert "slower" not in said


def test_timing_sentences_state_the_gain_only_when_the_numbers_show_it():
    shown = kv_cache.generation_verdict(64, 800.0, 1800.0, repeats=3)
    assert (
        shown == "The cache made the 64 tokens 2.2× faster: 800 ms with the cache, 1800 ms without, medians of 3 runs."
    )
    opposite = kv_cache.generation_verdict(64, 7516.0, 5328.0, repeats=3)  # what a loaded machine once gave
    assert opposite.startswith(NOT_SHOWN) and "7516 ms with the cache, 5328 ms without" in opposite
    assert kv_cache.generation_verdict(64, 1000.0, 1100.0).startswith(NOT_SHOWN)  # within the 1.2 margin
    curve = kv_cache.timing_verdict([16, 122], [1.0, 1.6], [2.0, 14.4])
    assert curve.startswith("From 16 to 122 tokens of context the next token costs 7.2× more without the cache")
    # the figure: the time with the cache grew more than without it
    assert kv_cache.timing_verdict([16, 122], [1.0, 23.3], [2.0, 9.4]).startswith(NOT_SHOWN)
    assert kv_cache.timing_verdict([16, 122], [1.0, 1.0], [1.0, 1.1]).startswith(NOT_SHOWN)
    for sentence in (shown, opposite, curve):
        assert_timings_never_contradict_the_lesson(sentence, 1)


def test_timings_are_interleaved_after_a_warm_up_and_their_median_is_reported(monkeypatch):
    clock = iter(range(1000))
    monkeypatch.setattr(kv_cache.time, "perf_counter", lambda: next(clock) / 1000)  # each reading 1 ms later
    order = []
    durations = {"a": iter([5, 1, 9]), "b": iter([2, 2, 2])}

    def run(name):
        def step():
            order.append(name)
            for _ in range(next(durations[name], 0)):
                next(clock)

        return step

    medians = kv_cache.interleaved_medians({"a": run("a"), "b": run("b")}, repeats=2, warmup=1)
    assert order == ["a", "b", "a", "b", "a", "b"]  # a warm-up round, then the timed rounds in turns
    # timed: a took 1 and 9 extra readings, b 2 and 2; each reading pair adds 1 ms
    assert medians == {"a": pytest.approx(6.0), "b": pytest.approx(3.0)}


@pytest.mark.slow
def test_the_timing_lecture_never_contradicts_its_lesson_on_a_busy_machine(exported_lecture):
    """02_kv_cache is executed beside one CPU-bound process per processor (see `exported_lecture`): its three live
    timings (a whole generation, the tiny model's curve, the course preset's curve) each state the cache's gain
    with numbers that show it, or say that the numbers do not show it."""
    lecture = ROOT / "lectures" / "02_kv_cache.ipynb"
    assert "from course.lectures import kv_cache" in lecture.read_text()  # so conftest runs it beside busy loops
    _, nb = exported_lecture(lecture)
    assert_timings_never_contradict_the_lesson(markdown_said(nb), measurements=3)


def test_a_lecture_figure_records_its_smallest_text_in_its_png():
    import io

    import matplotlib.pyplot as plt
    from PIL import Image

    fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
    ax.set_title("a title", fontsize=20)
    ax.tick_params(labelsize=9)
    ax.text(0.5, 0.5, " ", fontsize=4)  # blank: nothing to read
    assert style.smallest_text_px(fig) == pytest.approx(9 * 100 / 72)
    with Image.open(io.BytesIO(base64.b64decode(style.figure_png(fig)))) as png:
        assert png.info[style.SMALLEST_TEXT] == "12.5"
    plt.close(fig)


def test_prompts_are_cut_between_words():
    assert style.prompt_tail("He was born in the United", 14) == "…in the United"
    assert style.prompt_tail("In the", 14) == "In the"  # short enough: whole, no ellipsis
    assert style.prompt_tail("Supercalifragilistic", 8) == "…gilistic"  # one long word: cut inside it


def small_checkpoint(folder, preset_name="tiny"):
    from course.checkpoint import save_checkpoint
    from course.model import GPT, preset
    from course.tokenizer import Tokenizer

    tokenizer = Tokenizer.train(["A tiny corpus for a tiny tokenizer, with words that repeat: the the the."] * 20, 300)
    return save_checkpoint(folder, GPT(preset(preset_name, tokenizer.vocab_size)), tokenizer)


def test_make_figures_will_not_replace_a_larger_presets_figures(tmp_path, monkeypatch, capsys):
    import json

    monkeypatch.setenv("COURSE_CHECKPOINT", str(small_checkpoint(tmp_path / "runs" / "tiny")))
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / cli.FIGURES_SOURCE).write_text(json.dumps({"preset": "laptop", "parameters": 5864448, "steps": 3800}))
    lecture = ROOT / "lectures" / "01_sampling.ipynb"
    assert cli.main([str(lecture), "--out", str(tmp_path / "decks"), "--figures", str(figures), "--online"]) == 2
    said = capsys.readouterr().err
    assert "holds figures drawn by the laptop preset" in said and "--force" in said and said[-1] == "\n"
    assert not (tmp_path / "decks").exists() and sorted(p.name for p in figures.iterdir()) == [cli.FIGURES_SOURCE]
    assert cli.checkpoint_summary(tmp_path / "runs" / "tiny")["preset"] == "tiny"
    cli.check_figures_may_be_replaced(figures, {"preset": "course"}, force=False)  # a larger one may
    cli.check_figures_may_be_replaced(figures, {"preset": "tiny"}, force=True)
