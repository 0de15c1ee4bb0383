"""course.patterns on models whose next-token probabilities are known by construction, and on a seeded tiny GPT."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from course import patterns
from course.model import GPT, GPTConfig

WORDS = ["red", "blue", ",", ":", "France", "Japan", "May", "country", "month", "big", "small"]


class WordTokenizer:
    """One token per space-separated word of WORDS."""

    vocab = {word: i for i, word in enumerate(WORDS)}

    def encode(self, text: str) -> list[int]:
        return [self.vocab[word] for word in text.split()]


def log_probs(target: torch.Tensor | None, hit: float) -> torch.Tensor:
    """Log-probabilities over WORDS: `hit` on `target`, the rest shared evenly (uniform when target is None)."""
    if target is None:
        return torch.full((len(WORDS),), -math.log(len(WORDS)))
    row = torch.full((len(WORDS),), math.log((1 - hit) / (len(WORDS) - 1)))
    row[target] = math.log(hit)
    return row


class StubModel(torch.nn.Module):
    """A model whose logits at position t are `rule(ids[b, : t + 1])`."""

    def __init__(self, rule, block_size: int = 64):
        super().__init__()
        self.rule = rule
        self.config = SimpleNamespace(block_size=block_size, vocab_size=len(WORDS))
        self.unused = torch.nn.Parameter(torch.zeros(()))  # gives the model a device

    def forward(self, ids):
        return torch.stack([torch.stack([self.rule(row[: t + 1]) for t in range(len(row))]) for row in ids])


def copy_last_rule(prefix: torch.Tensor) -> torch.Tensor:
    """Induction: 0.9 on the token that followed the last earlier occurrence of the current token, else uniform."""
    current, earlier = prefix[-1], prefix[:-1]
    seen = (earlier == current).nonzero()
    return log_probs(prefix[seen[-1, 0] + 1] if len(seen) else None, 0.9)


def lookup_rule(answers: dict[str, str], hit: float = 0.9):
    """After "INPUT :", 0.9 on answers[INPUT]; uniform anywhere else."""
    vocab = WordTokenizer.vocab

    def rule(prefix: torch.Tensor) -> torch.Tensor:
        if len(prefix) >= 2 and prefix[-1] == vocab[":"] and WORDS[prefix[-2]] in answers:
            return log_probs(vocab[answers[WORDS[prefix[-2]]]], hit)
        return log_probs(None, hit)

    return rule


PAIRS = [("France", "country"), ("Japan", "country"), ("May", "month")]


def test_pattern_ids_mark_each_word():
    ids, spans = patterns.pattern_ids(WordTokenizer(), ["red", "blue"], cycles=2, separator=" ,")
    assert ids == [0, 2, 1, 2, 0, 2, 1]  # red , blue , red , blue
    assert [list(s) for s in spans] == [[0], [2], [4], [6]]


def test_pattern_pull_of_a_copying_model_rises_once_the_pattern_has_been_seen():
    model = StubModel(copy_last_rule)
    pull = patterns.pattern_pull(model, WordTokenizer(), ["red", "blue"], repeats=3, separator="")
    # red blue red blue red blue: the first "blue" and "red" follow a token never seen before (uniform, 1/11);
    # from then on each word follows a token whose successor the model copies (0.9).
    expected = torch.tensor([1 / 11, 1 / 11, 0.9, 0.9, 0.9])
    torch.testing.assert_close(pull, expected, rtol=1e-5, atol=1e-6)


def test_probability_by_occurrence_groups_tokens_by_how_often_their_ngram_was_seen():
    model = StubModel(copy_last_rule)
    ids = [0, 1, 4] * 3  # red blue France, three times
    table = patterns.probability_by_occurrence(model, ids, n=2)
    assert list(table) == [0, 1, 2]
    assert table[0] == pytest.approx((1 / 11, 3), rel=1e-5)  # the first time each bigram is written
    assert table[1] == pytest.approx((0.9, 3), rel=1e-5)
    assert table[2] == pytest.approx((0.9, 2), rel=1e-5)
    after_prompt = patterns.probability_by_occurrence(model, ids, n=2, start=4)  # n-grams still counted from 0
    assert list(after_prompt) == [1, 2]
    assert after_prompt[1] == pytest.approx((0.9, 3), rel=1e-5)


def test_few_shot_prompt():
    prompt = patterns.few_shot_prompt([("France", "country"), ("May", "month")], "Japan")
    assert prompt == "France : country\nMay : month\nJapan :"
    assert patterns.few_shot_prompt([], "Japan", template="Q: {input} A: {label}") == "Q: Japan A:"


def test_few_shot_accuracy_counts_the_most_likely_label():
    knows = StubModel(lookup_rule({"France": "country", "Japan": "country", "May": "month"}))
    confused = StubModel(lookup_rule({"France": "month", "Japan": "month", "May": "country"}))
    tokenizer = WordTokenizer()
    assert patterns.few_shot_accuracy(knows, tokenizer, PAIRS, shots=[0, 1, 2], trials=2) == {0: 1.0, 1: 1.0, 2: 1.0}
    assert patterns.few_shot_accuracy(confused, tokenizer, PAIRS, shots=[0, 2], trials=2) == {0: 0.0, 2: 0.0}
    assert patterns.majority_share(PAIRS) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="only 2 pairs besides the query"):
        patterns.few_shot_accuracy(knows, tokenizer, PAIRS, shots=[3])


def test_candidate_log_probs_sum_over_the_candidate_tokens():
    model = StubModel(lookup_rule({"France": "country"}))
    scores = patterns.candidate_log_probs(model, WordTokenizer(), "France :", ["country", "country big", "month"])
    uniform = -math.log(len(WORDS))
    expected = torch.tensor([math.log(0.9), math.log(0.9) + uniform, math.log(0.1 / 10)])
    torch.testing.assert_close(scores, expected)


def test_candidates_of_different_lengths_score_as_they_would_alone():
    """The batch pads the shorter rows on the right: causal attention keeps the padding out of every score."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(WORDS), block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()
    tokenizer = WordTokenizer()
    candidates = ["country", "month big small", "red blue"]
    batched = patterns.candidate_log_probs(model, tokenizer, "France : big", candidates)
    prompt = tokenizer.encode("France : big")
    alone = [patterns.token_log_probs(model, prompt + tokenizer.encode(c))[len(prompt) - 1 :].sum() for c in candidates]
    torch.testing.assert_close(batched, torch.stack(alone), rtol=1e-5, atol=1e-5)


def test_too_long_for_the_context_is_a_clear_error():
    model = StubModel(copy_last_rule, block_size=4)
    with pytest.raises(ValueError, match="do not fit the model's context of 4"):
        patterns.pattern_pull(model, WordTokenizer(), ["red", "blue"], repeats=3)


def test_pull_summary():
    pulling = {"red/blue": torch.tensor([0.01, 0.01, 0.05, 0.05]), "one/two": torch.tensor([0.1, 0.1, 0.4, 0.4])}
    # ratios 5 and 4: geometric mean sqrt(20) = 4.47
    assert patterns.pull_summary(pulling) == (
        "The context pulls: after 5 words of the pattern its next word is 4.5x as likely as at the start "
        "(red/blue 0.01 → 0.05, one/two 0.1 → 0.4)"
    )
    flat = {"red/blue": torch.tensor([0.01, 0.01, 0.012, 0.012])}
    assert patterns.pull_summary(flat).startswith("The context barely moves the model:")
    assert patterns.pull_summary({"a/b": torch.tensor([0.4, 0.4, 0.1, 0.1])}).startswith("The context pushes away:")


def test_occurrence_summary():
    table = {0: (0.1, 30), 1: (0.3, 10), 2: (0.5, 10)}
    assert patterns.occurrence_summary(table) == (
        "A repeated phrase raises its own probability: tokens that complete a 3-gram seen before get p = 0.4 on "
        "average (20 tokens), 4.0x the 0.1 of tokens that complete a new one (30 tokens)"
    )
    assert "does not raise" in patterns.occurrence_summary({0: (0.1, 30), 1: (0.12, 5)})
    assert patterns.occurrence_summary({0: (0.2, 12)}).startswith("The text repeats no 3-gram: all 12 tokens")


def test_few_shot_summary():
    # floor 0.5 over 100 queries: two standard errors are 2 * sqrt(0.25 / 100) = 0.1
    assert patterns.few_shot_summary("countries or months", {0: 0.5, 2: 0.75, 4: 0.75}, floor=0.5, queries=100) == (
        "countries or months: 75% at best (2 examples, 100 queries), which beats the 50% of always giving the most "
        "common label by more than 10%; with no examples 50%"
    )
    assert "is within 10% (two standard errors) of the 50%" in patterns.few_shot_summary(
        "t", {0: 0.5, 1: 0.58}, floor=0.5, queries=100
    )
