"""Patterns in the context against what the weights know: the measurements of lecture 04.

- `pattern_pull`: how likely the model continues a repeated pattern ("red , blue , red , blue , ...") after
  each number of words of it, all read off one forward pass.
- `probability_by_occurrence`: on any text (the model's own greedy text in the lecture), the probability the
  model gave each token against how often the phrase it completes had already occurred: a repeated phrase
  raising its own probability is what keeps greedy decoding in a loop.
- `few_shot_accuracy`: "input : label" examples followed by a query; the model's answer is the candidate label
  it finds most likely. Accuracy against the number of examples.

Every function takes the model and token ids (or a tokenizer for text), runs in `torch.no_grad`, and returns
plain numbers or tensors on the CPU.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def model_device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def token_log_probs(model, ids) -> torch.Tensor:
    """`(positions - 1,)`: the natural log-probability the model gives each token of the 1-D `ids` after the
    first, given the tokens before it. The ids must fit the model's context."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    if ids.dim() != 1 or ids.numel() < 2:
        raise ValueError(f"expected a 1-D sequence of at least two token ids, got shape {tuple(ids.shape)}")
    if ids.numel() > model.config.block_size:
        raise ValueError(f"{ids.numel()} tokens do not fit the model's context of {model.config.block_size}")
    ids = ids.to(model_device(model))
    logits = model(ids[None, :-1])[0]
    return F.log_softmax(logits.float(), dim=-1).gather(-1, ids[1:, None])[:, 0].cpu()


def pattern_ids(tokenizer, words: Sequence[str], cycles: int, separator: str = " ,") -> tuple[list[int], list[range]]:
    """The ids of `words` repeated `cycles` times, joined by `separator` ("red , blue , red , blue"), and where
    each word's tokens lie in them. Each piece is encoded on its own (the first word as given, every later one
    after a space), so each word has the same ids at every repetition."""
    if len(words) < 1 or cycles < 1:
        raise ValueError("expected at least one word and one cycle")
    ids, spans = [], []
    separator_ids = tokenizer.encode(separator)
    for i in range(cycles * len(words)):
        word = words[i % len(words)]
        if i > 0:
            ids += separator_ids
        word_ids = tokenizer.encode(word if i == 0 else " " + word)
        spans.append(range(len(ids), len(ids) + len(word_ids)))
        ids += word_ids
    return ids, spans


@torch.no_grad()
def pattern_pull(model, tokenizer, words: Sequence[str], repeats: int, separator: str = " ,") -> torch.Tensor:
    """The pull of a repeated pattern: entry n - 1 is the probability the model gives the pattern's next word
    (all of its tokens) once n words of the pattern are in the context, for n = 1 .. len(words) * repeats - 1.
    One forward pass over the whole pattern; it must fit the model's context."""
    ids, spans = pattern_ids(tokenizer, words, repeats, separator)
    log_probs = token_log_probs(model, ids)  # entry t scores ids[t + 1]
    word_log_probs = [log_probs[span.start - 1 : span.stop - 1].sum() for span in spans[1:]]
    return torch.stack(word_log_probs).exp()


@torch.no_grad()
def probability_by_occurrence(model, ids, n: int = 3, start: int = 1) -> dict[int, tuple[float, int]]:
    """For every token that ends an n-gram of the 1-D `ids`: the probability the model gave it, grouped by how
    many times that n-gram had occurred before. Returns {times seen before: (mean probability, how many
    tokens)}, sorted by times seen. Only the tokens from position `start` on are reported (the model's own text
    after a prompt), but n-grams are counted from the beginning. A phrase that raises its own probability shows
    as a rising mean."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    if n < 1 or not 1 <= start < len(ids):
        raise ValueError(f"expected n >= 1 and start in 1..{len(ids) - 1}, got n = {n} and start = {start}")
    probs = token_log_probs(model, ids).exp()
    seen: dict[tuple[int, ...], int] = {}
    groups: dict[int, list[float]] = {}
    tokens = ids.tolist()
    for end in range(max(n - 1, 1), len(tokens)):  # the first token has no probability
        gram = tuple(tokens[end - n + 1 : end + 1])
        before = seen.get(gram, 0)
        if end >= start:
            groups.setdefault(before, []).append(probs[end - 1].item())
        seen[gram] = before + 1
    return {k: (sum(v) / len(v), len(v)) for k, v in sorted(groups.items())}


def few_shot_prompt(examples: Sequence[tuple[str, str]], query: str, template: str = "{input} : {label}") -> str:
    """The examples written with `template`, one a line, then the query's line up to (not including) the space
    before its label: "France : country\\nMay : month\\nJapan :"."""
    marker = "\x00"
    query_line = template.format(input=query, label=marker).split(marker)[0].rstrip()
    return "\n".join([template.format(input=x, label=y) for x, y in examples] + [query_line])


@torch.no_grad()
def candidate_log_probs(model, tokenizer, prompt: str, candidates: Sequence[str]) -> torch.Tensor:
    """`(len(candidates),)`: the log-probability of each candidate (all its tokens, after a space) following
    `prompt`, computed for all candidates in one batch."""
    prompt_ids = tokenizer.encode(prompt)
    rows = [prompt_ids + tokenizer.encode(" " + c) for c in candidates]
    longest = max(len(r) for r in rows)
    if longest > model.config.block_size:
        raise ValueError(f"a prompt of {longest} tokens does not fit the model's context of {model.config.block_size}")
    batch = torch.tensor([r + [0] * (longest - len(r)) for r in rows], device=model_device(model))
    log_probs = F.log_softmax(model(batch[:, :-1]).float(), dim=-1)
    scores = []
    for i, row in enumerate(rows):
        positions = torch.arange(len(prompt_ids) - 1, len(row) - 1, device=batch.device)
        scores.append(log_probs[i, positions, batch[i, positions + 1]].sum())
    return torch.stack(scores).cpu()


def few_shot_accuracy(
    model,
    tokenizer,
    pairs: Sequence[tuple[str, str]],
    shots: Sequence[int],
    trials: int = 3,
    seed: int = 0,
    template: str = "{input} : {label}",
) -> dict[int, float]:
    """{k: accuracy} for each number of examples k in `shots`. Every pair (input, label) is a query `trials`
    times, each time after k examples drawn at random (seeded) from the other pairs; the model's answer is the
    label, among all the labels of `pairs`, it finds most likely after the prompt (`few_shot_prompt`)."""
    if len(pairs) < 2:
        raise ValueError("expected at least two (input, label) pairs")
    if max(shots) > len(pairs) - 1:
        raise ValueError(f"{max(shots)} examples asked for, but only {len(pairs) - 1} pairs besides the query")
    labels = sorted({label for _, label in pairs})
    rng = random.Random(seed)
    accuracy = {}
    for k in shots:
        right = total = 0
        for _ in range(trials if k > 0 else 1):  # with no examples every trial is the same prompt
            for i, (query, label) in enumerate(pairs):
                examples = rng.sample([p for j, p in enumerate(pairs) if j != i], k)
                scores = candidate_log_probs(model, tokenizer, few_shot_prompt(examples, query, template), labels)
                right += labels[int(scores.argmax())] == label
                total += 1
        accuracy[k] = right / total
    return accuracy


def majority_share(pairs: Sequence[tuple[str, str]]) -> float:
    """The accuracy of always answering the most common label: the floor a few-shot accuracy must beat."""
    counts: dict[str, int] = {}
    for _, label in pairs:
        counts[label] = counts.get(label, 0) + 1
    return max(counts.values()) / len(pairs)


# ------------------------------------------------------------------ the sentences the lecture says about its numbers


def pull_summary(pulls: dict[str, torch.Tensor], cycle: int = 2) -> str:
    """One sentence on `pattern_pull` results ({pattern name: probabilities}): the mean probability of the next
    word over the first `cycle` words against the last `cycle`, and whether the context pulls (twice as likely
    or more on average, geometric mean over the patterns), pushes away (half or less), or barely moves it."""
    ratios, parts = [], []
    for name, pull in pulls.items():
        first, last = pull[:cycle].mean().item(), pull[-cycle:].mean().item()
        ratios.append(last / first)
        parts.append(f"{name} {first:.2g} → {last:.2g}")
    ratio = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    n = max(len(p) for p in pulls.values()) + 1
    if ratio >= 2:
        verdict = f"The context pulls: after {n} words of the pattern its next word is {ratio:.1f}x as likely"
    elif ratio <= 0.5:
        verdict = f"The context pushes away: after {n} words of the pattern its next word is {ratio:.2f}x as likely"
    else:
        verdict = f"The context barely moves the model: after {n} words of the pattern its next word is {ratio:.2f}x as likely"
    return f"{verdict} as at the start ({', '.join(parts)})"


def occurrence_summary(table: dict[int, tuple[float, int]], n: int = 3) -> str:
    """One sentence on `probability_by_occurrence`: the mean probability of tokens that complete an n-gram seen
    before against those that complete a new one, and how many of each."""
    new_p, new_count = table.get(0, (math.nan, 0))
    repeats = [(p, count) for k, (p, count) in table.items() if k > 0]
    repeat_count = sum(count for _, count in repeats)
    if repeat_count == 0:
        return f"The text repeats no {n}-gram: all {new_count} tokens complete a new one (mean probability {new_p:.2g})"
    repeat_p = sum(p * count for p, count in repeats) / repeat_count
    if new_count == 0:
        return (
            f"Every one of the {repeat_count} tokens completes a {n}-gram seen before (mean probability {repeat_p:.2g})"
        )
    ratio = repeat_p / new_p
    verdict = "raises its own probability" if ratio >= 1.5 else "does not raise its own probability"
    return (
        f"A repeated phrase {verdict}: tokens that complete a {n}-gram seen before get p = {repeat_p:.2g} on average "
        f"({repeat_count} tokens), {ratio:.1f}x the {new_p:.2g} of tokens that complete a new one ({new_count} tokens)"
    )


def few_shot_summary(task: str, accuracy: dict[int, float], floor: float, queries: int) -> str:
    """One sentence on `few_shot_accuracy` results ({k: accuracy}, over `queries` distinct queries): the best accuracy
    and where, against `floor` (the accuracy of always answering the most common label). It beats the floor only
    by more than two standard errors of an accuracy at the floor over that many queries
    (conservative: the repeated draws of examples for one query are not independent answers)."""
    best_k = max(accuracy, key=lambda k: (accuracy[k], -k))
    best = accuracy[best_k]
    margin = 2 * math.sqrt(floor * (1 - floor) / queries)
    examples = f"{best_k} example{'s' if best_k != 1 else ''}"
    if best > floor + margin:
        verdict = f"beats the {floor:.0%} of always giving the most common label by more than {margin:.0%}"
    else:
        verdict = (
            f"is within {margin:.0%} (two standard errors) of the {floor:.0%} of always giving the most common label"
        )
    sentence = f"{task}: {best:.0%} at best ({examples}, {queries} queries), which {verdict}"
    if 0 in accuracy and best_k != 0:
        sentence += f"; with no examples {accuracy[0]:.0%}"
    return sentence
