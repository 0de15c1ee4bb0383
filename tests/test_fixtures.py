"""The shipped next-token distributions show what the lecture says of them (every claim tested on the fixtures).

Probabilities are float32 softmaxes of the shipped logits; the thresholds are the issue's, not fitted to the file.
"""

from __future__ import annotations

import pytest
import torch

from course import fixtures


def top_p_kept(logits: torch.Tensor, p: float) -> int:
    """How many tokens top-p keeps: those whose higher-ranked mass is below p."""
    probs = torch.softmax(logits.float(), dim=-1).sort(descending=True).values
    return int(((probs.cumsum(-1) - probs) < p).sum())


def test_the_model_fixture_has_a_peaked_and_a_flat_prompt_with_their_tokens():
    shipped = fixtures.distributions()
    tokens = fixtures.token_strings()
    assert {"peaked", "flat"} <= set(shipped)
    for name, (prompt, logits) in shipped.items():
        assert prompt == fixtures.PROMPTS[name]
        assert logits.dtype == torch.float32 and logits.shape == (len(tokens),)
        assert torch.isfinite(logits).all()
    assert fixtures.describe().startswith("a model trained with the kit (")


def test_on_the_peaked_prompt_the_model_is_sure_and_top_p_keeps_few_tokens():
    _, logits = fixtures.distributions()["peaked"]
    assert torch.softmax(logits, dim=-1).max() >= 0.6
    assert top_p_kept(logits, 0.9) <= 50


def test_the_flat_prompt_keeps_at_least_twenty_times_as_many():
    shipped = fixtures.distributions()
    peaked, flat = (top_p_kept(shipped[name][1], 0.9) for name in ("peaked", "flat"))
    assert flat >= 20 * peaked


@pytest.mark.parametrize(("name", "top3"), [("peaked", 0.9962), ("flat", 0.63)])
def test_the_essays_distributions_hold_their_stated_top_3_mass(name, top3):
    prompt, logits = fixtures.essay_distributions()[name]
    probs = torch.softmax(logits, dim=-1)
    assert probs.sum() == pytest.approx(1.0, abs=1e-6)
    assert probs.topk(3).values.sum() == pytest.approx(top3, abs=1e-6)
    assert (probs[:-1] >= probs[1:]).all()  # listed from the most to the least likely
    tokens = fixtures.token_strings(f"essay-{name}")
    assert len(tokens) == len(logits) == len(set(tokens))


def test_the_essays_peaked_prompt_keeps_one_token_under_top_p_and_the_flat_many():
    essays = fixtures.essay_distributions()
    assert top_p_kept(essays["peaked"][1], 0.9) == 1
    assert top_p_kept(essays["flat"][1], 0.9) >= 20


@pytest.mark.slow
def test_regenerating_writes_the_fixture_atomically_from_a_checkpoint(tiny_checkpoint, tmp_path):
    out = tmp_path / "distributions.pt"
    assert fixtures.main([str(tiny_checkpoint), "--out", str(out)]) == 0
    saved = torch.load(out, weights_only=True)
    assert set(saved["prompts"]) == set(fixtures.PROMPTS)
    assert len(saved["tokens"]) == len(saved["logits"]["peaked"])
    assert "steps of the tiny preset" in saved["source"]


def test_regenerating_from_a_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert fixtures.main([str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere" in err


@pytest.mark.parametrize("source", [fixtures.distributions, fixtures.essay_distributions])
def test_the_lectures_titles_say_peaked_vs_flat_on_the_shipped_distributions(source):
    """The lecture's figure titles are computed from the data they show; on the shipped fixtures they say the
    peaked prompt needs far fewer tokens for 90% of the mass than the flat one."""
    from course.lectures import sampling

    shipped = source()
    panels = [shipped["peaked"], shipped["flat"]]
    assert sampling.spread_verdict(panels).startswith("Peaked vs flat: 90% of the mass takes ")
    assert sampling.spread_verdict([shipped["flat"], shipped["flat"]]).startswith("These prompts are spread alike")
    title = sampling.temperature_verdict(shipped["flat"][1], (0.5, 1.0, 2.0), lambda x, t: x / t)
    assert title.startswith("Temperature reshapes, never reorders: the top token holds ")
