"""course.detection: the green-list watermark and its z-score, the GLTR features and detector, surprisal."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from course import detection
from course.generation import generate
from course.lens import token_ranks
from course.model import GPT, GPTConfig

VOCAB = 1000
KEY = 7


@pytest.fixture(scope="module")
def small_gpt():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=16)).eval()


@pytest.mark.parametrize("gamma", [0.1, 0.25, 0.5])
def test_the_green_list_holds_a_gamma_fraction_of_the_vocabulary(gamma):
    for prev in (0, 1, 999):
        assert int(detection.green_list(prev, VOCAB, gamma, KEY).sum()) == round(gamma * VOCAB)


def test_the_green_list_depends_on_the_key_and_the_previous_token_only():
    green = detection.green_list(5, VOCAB, 0.5, KEY)
    assert torch.equal(green, detection.green_list(5, VOCAB, 0.5, KEY))
    for other in (detection.green_list(6, VOCAB, 0.5, KEY), detection.green_list(5, VOCAB, 0.5, KEY + 1)):
        overlap = (green & other).float().mean().item()
        assert 0.2 < overlap < 0.3  # independent halves share about a quarter of the vocabulary
    with pytest.raises(ValueError, match="gamma must be in"):
        detection.green_list(5, VOCAB, 1.0, KEY)


def test_z_score_formula():
    assert detection.z_score(16, 16, 0.25) == pytest.approx(12 / math.sqrt(3))  # all 16 green: (16 - 4) / sqrt(3)
    assert detection.z_score(4, 16, 0.25) == 0.0
    assert detection.z_score(2, 16, 0.25) == pytest.approx(-2 / math.sqrt(3))


def test_z_score_of_a_hand_made_sequence():
    """Ten tokens after a start token, each chosen green or red after the one before: 6 green of 10."""
    colours = [True, False, True, True, False, True, False, True, False, True]
    ids = [3]
    for want_green in colours:
        green = detection.green_list(ids[-1], VOCAB, 0.5, KEY)
        ids.append(int(green.nonzero()[0] if want_green else (~green).nonzero()[0]))
    assert detection.green_mask(ids, VOCAB, 0.5, KEY).tolist() == colours
    assert detection.watermark_z_score(ids, VOCAB, 0.5, KEY) == pytest.approx(1 / math.sqrt(2.5))  # (6 - 5) / sqrt(2.5)
    assert detection.watermark_z_score(ids, VOCAB, 0.5, KEY, start=6) == pytest.approx(0.5 / math.sqrt(1.25))  # 3 of 5


class UniformModel(torch.nn.Module):
    """Every next token equally likely: what the watermark adds is all there is to see."""

    config = SimpleNamespace(block_size=512)

    def forward(self, ids):
        return torch.zeros(1, 1, VOCAB).expand(*ids.shape, VOCAB)


def sampler(seed: int):
    generator = torch.Generator().manual_seed(seed)
    return lambda logits, history: torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


def test_text_written_without_the_watermark_scores_near_zero():
    ids = generate(UniformModel(), torch.zeros(20, 1, dtype=torch.long), 200, sampler(0))
    z = torch.tensor([detection.watermark_z_score(row.tolist(), VOCAB, 0.25, KEY) for row in ids])
    # z is about standard normal: the mean of 20 within 3 standard errors (0.67) of 0, and no single one above 4.
    assert abs(z.mean().item()) < 0.67
    assert z.abs().max().item() < 4


def test_watermarked_text_scores_high_and_only_under_its_key():
    gamma, delta, length = 0.25, 2.0, 100
    marked = detection.watermark(sampler(1), gamma, delta, KEY)
    ids = generate(UniformModel(), torch.zeros(10, 1, dtype=torch.long), length, marked)
    # Green share gamma e^delta / (gamma e^delta + 1 - gamma) = 0.71 on a flat distribution: z about 10.6, with a
    # standard deviation about 1; the bound 6 is more than 4 of them below.
    expected_share = gamma * math.exp(delta) / (gamma * math.exp(delta) + 1 - gamma)
    expected_z = detection.z_score(expected_share * length, length, gamma)
    assert expected_z == pytest.approx(10.6, abs=0.1)
    for row in ids.tolist():
        assert detection.watermark_z_score(row, VOCAB, gamma, KEY) > 6
        assert abs(detection.watermark_z_score(row, VOCAB, gamma, KEY + 1)) < 4  # another key sees no watermark


def test_features_from_hand_made_ranks():
    features = detection.features_from(torch.tensor([1, 5, 20, 2000]), torch.tensor([1.0, 2.0, 3.0, 6.0]))
    torch.testing.assert_close(features, torch.tensor([0.5, 0.75, 0.25, 3.0]))
    assert len(detection.FEATURE_NAMES) == len(features)


def test_gltr_features_score_only_the_tokens_after_the_prompt(small_gpt):
    passages = torch.randint(0, 50, (3, 20), generator=torch.Generator().manual_seed(0))
    features = detection.gltr_features(small_gpt, passages, skip=5, chunk=2)
    for passage, row in zip(passages, features):
        ranks, bits = token_ranks(small_gpt, passage)
        torch.testing.assert_close(row, detection.features_from(ranks[4:], bits[4:]))  # tokens 5..19
    with pytest.raises(ValueError, match="at least max"):
        detection.gltr_features(small_gpt, passages, skip=20)


def clouds(n: int, shift: float, seed: int):
    """n human and n model feature vectors (4-d, unit Gaussians), the model's moved by `shift` along feature 1."""
    generator = torch.Generator().manual_seed(seed)
    human, model = torch.randn(n, 4, generator=generator), torch.randn(n, 4, generator=generator)
    model[:, 1] += shift
    return torch.cat([human, model]), torch.tensor([0] * n + [1] * n)


def test_the_detector_separates_what_is_separable_and_guesses_otherwise():
    features, labels = clouds(100, shift=4.0, seed=0)
    held_out, held_out_labels = clouds(100, shift=4.0, seed=1)
    detector = detection.fit_detector(features, labels)
    # The best possible accuracy here is Phi(2) = 0.977; 200 held-out passages vary by about 0.01.
    assert detector.accuracy(held_out, held_out_labels) > 0.93
    same, same_labels = clouds(100, shift=0.0, seed=2)
    guessing = detection.fit_detector(same, same_labels)
    same_held_out, same_held_out_labels = clouds(100, shift=0.0, seed=3)
    assert 0.35 < guessing.accuracy(same_held_out, same_held_out_labels) < 0.65  # chance is 0.5, sd 0.035
    with pytest.raises(ValueError, match="both present"):
        detection.fit_detector(features[:100], labels[:100])


def test_word_surprisal_is_the_bits_of_all_the_word_tokens(small_gpt):
    words = {"the": 1, "zoo": 2, "has": 3, "a": 4, "ze": 5, "bra": 6}
    tokenizer = SimpleNamespace(encode=lambda text: [words[w] for w in text.split()])
    bits = detection.word_surprisal(small_gpt, tokenizer, "the zoo has a", "ze bra")
    log_probs = F.log_softmax(small_gpt(torch.tensor([[1, 2, 3, 4, 5]]))[0], dim=-1)
    assert bits == pytest.approx(-(log_probs[3, 5] + log_probs[4, 6]).item() / math.log(2), rel=1e-5)


def test_continuation_perplexity(small_gpt):
    ids = torch.randint(0, 50, (12,), generator=torch.Generator().manual_seed(1))
    nats = F.cross_entropy(small_gpt(ids[None, :-1])[0, 3:], ids[4:])  # the tokens from position 4 on
    assert detection.continuation_perplexity(small_gpt, ids.tolist(), start=4) == pytest.approx(
        math.exp(nats.item()), rel=1e-5
    )


def test_surprise_summary():
    assert detection.surprise_summary("zebra", 8.0, 20.5) == (
        "“zebra” carries 12.5 bits more information where it is unexpected, as a reader would find "
        "(8.0 bits expected, 20.5 bits unexpected)"
    )
    assert "about the same in both contexts" in detection.surprise_summary("zebra", 30.2, 30.9)
    assert "has not learned the context" in detection.surprise_summary("zebra", 30.0, 25.0)


def test_watermark_summary():
    sentence = detection.watermark_summary([0, 1, 2, 4], [0.0, 0.5, 0.95, 1.0], [100.0, 105.0, 120.0, 180.0])
    assert sentence == (
        "δ = 2 is detected 95% of the time (z > 4) at a perplexity of 120 against 100 unwatermarked (+20%); "
        "unwatermarked text is flagged 0% of the time"
    )
    assert detection.watermark_summary([0, 1], [0.0, 0.2], [100.0, 101.0]).startswith("No δ up to 1 is detected")
    with pytest.raises(ValueError, match="the first delta must be 0"):
        detection.watermark_summary([1, 2], [0.5, 1.0], [100.0, 110.0])
