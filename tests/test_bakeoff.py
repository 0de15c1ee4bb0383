"""`course bakeoff`: one-line errors for a missing checkpoint and a notebook without the metric functions (fast),
and a small end-to-end run on the session's tiny checkpoint: the table, the CSV, the figure, the same numbers
under the same seed (slow)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from course.assignments import grading
from course.bakeoff import (
    COLUMNS,
    METRIC_FUNCTIONS,
    PROMPT_TOKENS,
    STRATEGIES,
    Sweep,
    human_windows,
    last_position_logits,
)
from course.cli import main
from course.errors import UserError
from course.generation import generate
from course.model import GPT, GPTConfig

SOLUTION = grading(METRIC_FUNCTIONS).solution


def test_last_position_logits_decodes_the_same_tokens():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=2, n_head=2, n_embd=16)).eval()
    prompts = torch.randint(0, 50, (3, 5))
    greedy = lambda logits, history: logits.argmax(-1)  # noqa: E731
    full = generate(model, prompts, 6, greedy)  # past the context of 8: the window slides
    with last_position_logits(model):
        assert model(prompts).shape == (3, 1, 50)
        assert torch.equal(generate(model, prompts, 6, greedy), full)
    assert model(prompts).shape == (3, 5, 50)  # the hook is gone


def test_human_windows_stay_inside_articles_and_follow_the_seed():
    eot = 0
    tokens = np.arange(1, 1001, dtype=np.uint16)
    tokens[::97] = eot  # an article boundary every 97 tokens
    windows = human_windows(tokens, samples=5, length=20, eot_id=eot, seed=3)
    assert len(windows) == 5 and all(len(w) == PROMPT_TOKENS + 20 and eot not in w for w in windows)
    assert all(w == list(range(w[0], w[0] + len(w))) for w in windows)  # contiguous text from the split
    assert human_windows(tokens, samples=5, length=20, eot_id=eot, seed=3) == windows
    assert human_windows(tokens, samples=5, length=20, eot_id=eot, seed=4) != windows
    with pytest.raises(UserError, match="inside one article"):
        human_windows(tokens, samples=5, length=80, eot_id=eot, seed=3)


def test_the_sweep_finds_where_the_generated_perplexity_meets_the_human_one():
    rows = {
        "top_p": {0.5: {"perplexity": 20.0}, 0.9: {"perplexity": 60.0}, 1.0: {"perplexity": 140.0}},
        "temperature": {0.8: {"perplexity": 10.0}, 1.0: {"perplexity": 30.0}},
    }
    result = Sweep(rows, {"perplexity": 100.0, "repetition %": 0.0})
    assert result.meets_human("top_p") == pytest.approx(0.95)  # halfway from 60 to 140, between 0.9 and 1.0
    assert result.sentence("top_p") == "nucleus p 0.95 gives text as surprising as the human text (perplexity 100.0)"
    assert result.meets_human("temperature") is None
    assert result.sentence("temperature") == (
        "no temperature from 0.8 to 1 reaches the human text's perplexity (100.0): the generated text stays below it"
    )


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
    code = main(["bakeoff", str(tmp_path / "nowhere"), "--metrics", str(SOLUTION)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "nowhere" in err and "Traceback" not in err


def test_notebook_without_metric_functions_is_one_line(tmp_path, capsys):
    sampler = grading(["sample_next"]).solution  # a notebook without the metric functions
    code = main(["bakeoff", str(tmp_path), "--metrics", str(sampler)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "`beam_search`" in err and "`zipf_coefficient`" in err, err


def test_missing_notebook_is_one_line(tmp_path, capsys):
    code = main(["bakeoff", str(tmp_path), "--metrics", str(tmp_path / "absent.ipynb")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "absent.ipynb" in err


@pytest.mark.slow
def test_bakeoff_table_csv_figure_and_seed(tiny_checkpoint, course_cli, tmp_path):
    options = ("--metrics", str(SOLUTION), "--samples", "2", "--length", "6", "--seed", "5", "--quiet")
    first = course_cli(
        "bakeoff",
        str(tiny_checkpoint),
        *options,
        "--csv",
        str(tmp_path / "a.csv"),
        "--figure",
        str(tmp_path / "a.png"),
        timeout=600,
    )
    assert first.returncode == 0, first.stderr[-2000:]
    rows = list(csv.reader((tmp_path / "a.csv").open()))
    assert rows[0] == ["method", *COLUMNS]
    names = [row[0] for row in rows[1:]]
    assert names[-1] == "human" and names[:-1] == [s.name for s in STRATEGIES][: len(names) - 1]
    assert all(len(row) == len(COLUMNS) + 1 and all(float(v) == float(v) for v in row[1:]) for row in rows[1:])
    greedy, human = dict(zip(COLUMNS, map(float, rows[1][1:]))), dict(zip(COLUMNS, map(float, rows[-1][1:])))
    assert (
        greedy["perplexity"] < human["perplexity"]
    )  # greedy text is the model's own favourite: the paper's first finding
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "human" in first.stdout and "greedy" in first.stdout
    again = course_cli(
        "bakeoff", str(tiny_checkpoint), *options, "--csv", str(tmp_path / "b.csv"), "--sweep", "--sweep-figure",
        str(tmp_path / "sweep.png"), timeout=600,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    assert (tmp_path / "b.csv").read_text() == (tmp_path / "a.csv").read_text()  # the sweep draws on its own seeds
    assert "nucleus p (temperature 1)" in again.stdout and "temperature (no filter)" in again.stdout
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
