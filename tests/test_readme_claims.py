"""The README's claims, checked against the code that they describe: the checkpoint order, the presets' sizes, the
troubleshooting messages, the data it needs, the source of its figures."""

from __future__ import annotations

import json
import re

import torch

from course.checkpoint import CHECKPOINT_VARIABLE, PREFERRED_RUNS, find_checkpoints
from course.cli import main as course_main
from course.kit import ROOT
from course.model import GPT, preset
from course.train import PRESET_DEFAULTS

README = (ROOT / "README.md").read_text()


def test_the_checkpoint_order_is_the_codes(tmp_path, monkeypatch):
    runs = ", else ".join(f"`runs/{name}`" for name in PREFERRED_RUNS)
    assert f"take the folder in `${CHECKPOINT_VARIABLE}`\nwhen it is set, else {runs}, each looked for" in README
    # ...and the code does what the sentence says: the variable first, then the runs, largest first
    for name in PREFERRED_RUNS:
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "config.json").write_text("{}")
        (tmp_path / "runs" / name / "model.safetensors").write_bytes(b"")
    monkeypatch.setenv(CHECKPOINT_VARIABLE, str(tmp_path / "runs" / "tiny"))
    assert list(find_checkpoints(tmp_path / "lectures")) == ["env", *PREFERRED_RUNS[:-1]]


def test_the_preset_table_gives_each_presets_size_and_vocabulary():
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]+\|[^|]+)\|", README, flags=re.MULTILINE))
    assert set(rows) == set(PRESET_DEFAULTS)
    for name, cells in rows.items():
        vocabulary = PRESET_DEFAULTS[name]["vocab_size"]
        with torch.device("meta"):
            parameters = GPT(preset(name, vocabulary)).num_params()
        shown = f"{parameters / 1e6:.1f}M"
        assert [cell.strip() for cell in cells.split("|")] == [shown, f"{vocabulary:,}"], name


def test_the_missing_corpus_message_is_the_one_the_kit_prints(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "cache"))
    row = re.search(r"^\| `(course prepare: error: expected wiki\.train\.tokens[^`]*)`", README, flags=re.MULTILINE)
    assert row, "the README's troubleshooting has no row for a folder without WikiText"
    assert course_main(["prepare", "--data-dir", str(tmp_path)]) == 2
    printed = capsys.readouterr().err.strip()
    # the README's message with its placeholders (DIR, ...) read as "anything"
    pattern = ".*".join(re.escape(part) for part in re.split(r"DIR|\.\.\.", row[1]))
    assert re.fullmatch(pattern, printed), printed


def test_the_first_lines_say_where_the_data_comes_from():
    first = README.split("# Sampling & Inference")[0]
    makefile = (ROOT / "Makefile").read_text()
    assert "make demo" in first and "COURSE_DATA_DIR" in first and "../shared/data/wikitext-2" in first
    assert "SHARED_DATA := $(abspath ../shared/data/wikitext-2)" in makefile  # what the sentence says


def test_the_figures_caption_names_the_checkpoint_that_drew_them():
    drew = json.loads((ROOT / "docs" / "figures" / "source.json").read_text())
    assert f"drawn by the {drew['preset']} preset's checkpoint ({drew['parameters'] / 1e6:.1f}M parameters" in README
    assert f"{drew['steps']:,} steps)" in README


def test_the_gradescope_sentence_is_the_benchmarks_table():
    """The README's claim holds for every row of the benchmark's table, and the table has a row per assignment: a new
    assignment adds its row to bench/RESULTS.md, and the README's sentence stays true without an edit."""
    results = (ROOT / "bench" / "RESULTS.md").read_text()
    section = results.split("## Grading in Gradescope's default container")[1].split("\n## ")[0]
    rows = re.findall(r"^\| (\d\d_\w+) \| ([\d.]+) s \| (\d+) MB \| (\d+)/(\d+) \|$", section, flags=re.MULTILINE)
    assert sorted(name for name, *_ in rows) == sorted(path.stem for path in (ROOT / "solutions").glob("*.ipynb"))
    assert all(score == total for *_, score, total in rows)  # each solution at full marks
    sentence = " ".join(README.split())
    assert "well inside both limits, under two thirds of the memory and a tenth of the time" in sentence
    gradescope_memory_mb, gradescope_timeout_s = 768, 600
    for name, wall, peak, *_ in rows:
        assert int(peak) < gradescope_memory_mb * 2 / 3 and float(wall) < gradescope_timeout_s / 10, name
