"""Trusted helpers of the 06_speculative tests: small language models that run HERE, in the grader, and are exposed
to the student's `speculative_generate`, and the checks that read what those models saw. They ship with the
visible tests, so nothing here accepts, rejects or resamples a draft: the tests compare what the student's code
returns with the target model's own sampling distribution (computed here exactly, by enumerating continuations)
and with the forwards the models recorded. The hidden tests' reference (the exact law of one round) is in
spec_reference.py, which only they load.

`CachedModel` is grader.testing's `PrefixModel` (logits after a context = `rule(context)`, the same checks of what
student code hands it, the same bounds on the work it can be made to do) that also speaks the course model's
KV-cache protocol with one layer: `model(ids, cache=cache)` calls `cache.update(0, k, v)` once, with the new ids as
its keys and values (float32, shape (1, 1, T, 1)), and computes the logits of the new positions from what update
returns: every id of the context, oldest first. So the cache is the model's memory, as in the course model: a
rejected draft left in it is a token the model conditions on later. Every forward is recorded (`Forward`): which
cache, how many positions were cached before it, the new ids and the whole context; `loop_problems` turns the
records of one call into feedback.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import torch

from grader.rpc import StudentObject
from grader.testing import (
    PrefixModel,
    expect_frequencies,
    expect_tensor,
    hashed_model,
    logit_offset,
    type_name,
)


@dataclass
class Forward:
    """One call of a model by student code."""

    cache: tuple | None  # which cache object (None: called without a cache)
    cached: int  # positions in the cache before this forward
    new: tuple[int, ...]  # the ids of the new positions
    context: tuple[int, ...]  # every id the model attended over: the cached ones, then the new ones


def cache_key(cache) -> tuple:
    """One key per student cache object: its handle (a proxy is rebuilt at every crossing)."""
    return ("handle", cache.handle) if isinstance(cache, StudentObject) else ("object", id(cache))


def hashed_rule(seed: int, vocab_size: int, scale: float = 1.5):
    """grader.testing.hashed_model's logits: N(0, scale^2) per prefix, seeded by (seed, prefix). The same seed at
    another scale gives the same logits scaled: a flatter or a more peaked copy of one model."""
    return hashed_model(vocab_size, seed, scale).rule


def peak_rule(token: int, height: float, vocab_size: int):
    """Logits equal but for `token`'s, `height` higher, whatever the context: a temperature moves much of the mass."""

    def rule(prefix):
        return [(height if t == token else 0.0) + logit_offset(prefix) for t in range(vocab_size)]

    return rule


def only(tokens, rule):
    """`rule` with every token but `tokens` at the logit -inf: a model that never samples them."""

    def masked(prefix):
        return [logit if t in tokens else -math.inf for t, logit in enumerate(rule(prefix))]

    return masked


class CachedModel(PrefixModel):
    """A PrefixModel called as the course model is, with a KVCache (see the module); `name` says which model it is
    in feedback ("target", "draft")."""

    def __init__(self, rule, vocab_size: int, block_size: int = 64, name: str = "model"):
        super().__init__(rule, vocab_size, block_size, max_rows=1)
        self.name = name
        self.forwards: list[Forward] = []
        self.timeline: list[tuple[str, int]] = []  # (model name, forward index) in call order, shared by a pair
        self._updates: dict = {}  # cache key -> (the cache, its bound update): one round trip saved per forward

    def probs_after(self, context: tuple[int, ...], temperature: float = 1.0) -> torch.Tensor:
        """The target's sampling distribution (float64) of the token after `context`, at `temperature`."""
        return torch.softmax(self.logits(tuple(context)).double() / temperature, dim=-1)

    def __call__(self, idx, cache=None):
        self.calls += 1
        if self.calls > self.limits.calls:
            raise ValueError(
                f"the {self.name} was called more than {self.limits.calls} times in one test: far more than needed"
            )
        expect_tensor(idx, what=f"the ids given to the {self.name}")
        vocab, block = self.config.vocab_size, self.config.block_size
        if idx.dim() == 2 and idx.shape[1] == 0:  # before the dtype: torch.tensor([[]]) is float32
            raise ValueError(
                f"the {self.name} was called on 0 positions: run it on the tokens its cache does not hold yet (was its "
                "cache cropped after the last round?)"
            )
        expect_tensor(idx, dtype=torch.int64, what=f"the ids given to the {self.name}")
        if idx.dim() != 2 or idx.shape[0] != 1 or not 1 <= idx.shape[1] <= block:
            raise ValueError(
                f"the {self.name} takes ids of shape (1, positions), 1 to {block} positions, not {tuple(idx.shape)}"
            )
        if bool(((idx < 0) | (idx >= vocab)).any()):
            raise ValueError(f"the {self.name} was given ids outside its vocabulary 0..{vocab - 1}")
        self.positions += idx.numel()
        if self.positions > self.limits.positions:
            raise ValueError(f"the {self.name} was run on more than {self.limits.positions} positions in one test")
        new = tuple(idx[0].tolist())
        context = new if cache is None else self._through(cache, idx, new)
        self.timeline.append((self.name, len(self.forwards)))
        self.forwards.append(
            Forward(None if cache is None else cache_key(cache), len(context) - len(new), new, context)
        )
        first = len(context) - len(new)
        return torch.stack([self.logits(context[: t + 1]) for t in range(first, len(context))])[None]

    def _through(self, cache, idx, new) -> tuple[int, ...]:
        """The context as the cache returns it after this forward's update: checked, then read as ids."""
        key = cache_key(cache)
        if key not in self._updates:
            try:
                self._updates[key] = (cache, cache.update)
            except AttributeError:
                raise TypeError(
                    f"the {self.name} was given a cache without an update method ({type_name(cache)})"
                ) from None
        ids = idx.float()[:, None, :, None]  # (1, 1, T, 1): one layer, one head, head_dim 1
        result = self._updates[key][1](0, ids, ids.clone())
        if type(result) not in (tuple, list) or len(result) != 2:
            raise TypeError(f"KVCache.update returned a {type_name(result)}, not the pair (k_all, v_all)")
        keys = result[0]
        block = self.config.block_size
        if type(keys) is not torch.Tensor or keys.dim() != 4 or keys.shape[:2] != (1, 1) or keys.shape[3] != 1:
            shape = tuple(keys.shape) if type(keys) is torch.Tensor else type_name(keys)
            raise ValueError(
                f"KVCache.update(0, k, v) with k of shape {tuple(ids.shape)} returned keys of shape {shape}"
            )
        if not len(new) <= keys.shape[2] <= block:
            raise ValueError(
                f"KVCache.update returned {keys.shape[2]} positions after an update of {len(new)}: the {self.name}'s "
                f"context holds 1 to {block} positions, the new ones last"
            )
        if not torch.equal(keys[0, 0, -len(new) :, 0], ids[0, 0, :, 0]):
            raise ValueError("KVCache.update did not return the new positions last, after the kept ones")
        context = keys[0, 0, :, 0]
        if not bool(((context >= 0) & (context < self.config.vocab_size) & (context == context.round())).all()):
            raise ValueError("KVCache.update returned keys that are not what was stored in it")
        return tuple(int(t) for t in context.tolist())


def model_pair(vocab_size: int, target_rule, draft_rule, block_size: int = 64):
    """A target and a draft over the same vocabulary (CachedModels), their forwards recorded on one timeline."""
    target = CachedModel(target_rule, vocab_size, block_size, name="target")
    draft = CachedModel(draft_rule, vocab_size, block_size, name="draft")
    draft.timeline = target.timeline  # one record of the order of both models' forwards
    return target, draft


def hashed_pair(vocab_size: int, target_seed: int, draft_seed: int, **options):
    """model_pair of two hashed models (the same seed: the draft is the target)."""
    return model_pair(vocab_size, hashed_rule(target_seed, vocab_size), hashed_rule(draft_seed, vocab_size), **options)


def continuation_law(model: CachedModel, prompt: list[int], length: int, temperature: float = 1.0) -> dict:
    """{continuation (a tuple of `length` ids): its probability} under sampling from `model` at `temperature`."""
    law = {(): 1.0}
    for _ in range(length):
        grown = {}
        for tokens, mass in law.items():
            probs = model.probs_after(tuple(prompt) + tokens, temperature).tolist()
            for token, p in enumerate(probs):
                if p > 0:
                    grown[(*tokens, token)] = mass * p
        law = grown
    return law


def generate(
    student, target: CachedModel, draft: CachedModel, prompt: list[int], max_new_tokens: int, k: int, **options
):
    """The new ids of student.speculative_generate on the exposed models, after checking the result's form."""
    out = student.speculative_generate(
        target.exposed(), draft.exposed(), torch.tensor([prompt]), max_new_tokens, k, **options
    )
    return check_ids(out, prompt, max_new_tokens, target.config.vocab_size)


def check_ids(out, prompt: list[int], max_new_tokens: int, vocab_size: int) -> list[int]:
    """The new ids of a speculative_generate result: an int64 tensor (1, prompt + max_new_tokens) that starts
    with the prompt."""
    expect_tensor(out, dtype=torch.int64, shape=(1, len(prompt) + max_new_tokens), what="speculative_generate's result")
    ids = out[0].tolist()
    assert ids[: len(prompt)] == prompt, "speculative_generate's result should start with the prompt, then the new ids"
    assert all(0 <= t < vocab_size for t in ids), f"the result holds ids outside the vocabulary 0..{vocab_size - 1}"
    return ids[len(prompt) :]


def expect_law(samples, law: dict, what: str) -> None:
    """The outcomes `samples` (hashable: tokens, tuples) are independent draws from `law` ({outcome: probability}):
    grader.testing.expect_frequencies, one check per outcome of non-zero probability, on the outcomes numbered in
    the law's order. The message names the outcome furthest from its probability, in standard deviations."""
    samples = list(samples)
    unknown = Counter(s for s in samples if law.get(s, 0.0) == 0.0)
    if unknown:
        outcome, count = unknown.most_common(1)[0]
        raise AssertionError(f"{what} {outcome} came out {count} times, but the target never samples it")
    numbered = {outcome: number for number, outcome in enumerate(law)}
    try:
        expect_frequencies(torch.tensor([numbered[s] for s in samples]), list(law.values()), what)
    except AssertionError as failure:
        counts, n = Counter(samples), len(samples)

        def deviations(item):  # |frequency - p| over the standard deviation of a frequency, times sqrt(n)
            return abs(counts[item[0]] / n - item[1]) / math.sqrt(max(item[1] * (1 - item[1]), 1e-12))

        outcome, p = max(law.items(), key=deviations)
        raise AssertionError(
            f"{what} {outcome} came out with frequency {counts[outcome] / n:.4f} in {n} draws, but the target samples "
            f"it with probability {p:.4f} ({failure})"
        ) from None


def expect_continuations(samples: list[tuple[int, ...]], law: dict) -> None:
    """Independent continuations `samples` are draws from `law`: the whole continuation, then each position."""
    expect_law(samples, law, "the continuation")
    for position in range(len(next(iter(law)))):
        single = {}
        for tokens, p in law.items():
            single[tokens[position]] = single.get(tokens[position], 0.0) + p
        expect_law((s[position] for s in samples), single, f"new token {position + 1}: id")


def loop_problems(target: CachedModel, draft: CachedModel, prompt: list[int], new: list[int], k: int) -> list[str]:
    """What is wrong with the forwards of one speculative_generate call that returned `new` after `prompt`: each
    model keeps one cache of its own; no forward attends over a token that is not in the output (a rejected draft
    left in a cache); after its first forward, the target runs at most the k + 1 positions of a round and the draft
    at most the two it may not have seen (the last draft and the token the target added)."""
    output = tuple(prompt) + tuple(new)
    found = []
    caches = {}
    for model in (target, draft):
        if not model.forwards:
            found.append(f"speculative_generate never called the {model.name}")
            continue
        if any(f.cache is None for f in model.forwards):
            found.append(f"the {model.name} was called without a cache: give each model a KVCache of its own")
        keys = {f.cache for f in model.forwards if f.cache is not None}
        if len(keys) > 1:
            found.append(f"the {model.name} was given {len(keys)} different caches: keep one for the whole generation "
                         "and crop it, instead of starting again")  # fmt: skip
        caches[model.name] = keys
    if caches.get("target") and caches.get("draft") and caches["target"] & caches["draft"]:
        found.append("the target and the draft were given the same cache: each model needs a KVCache of its own")
    for index, f in enumerate(target.forwards):
        if f.context[: f.cached] != output[: f.cached]:
            found.append(f"the target's forward {index + 1} attended over cached tokens that are not the output's "
                         "(a rejected draft left in its cache?): crop the target's cache after every round")  # fmt: skip
            break
        if index and len(f.new) > k + 1:
            found.append(f"the target's forward {index + 1} ran {len(f.new)} positions; after the first, a round runs "
                         f"only what the target has not seen: the newest token and the k = {k} drafts")  # fmt: skip
            break
    for index in _draft_round_starts(target, draft):
        f = draft.forwards[index]
        if f.context[: f.cached] != output[: f.cached]:
            found.append(f"the draft's forward {index + 1} (the first of a round) attended over cached tokens that are "
                         "not the output's (a rejected draft left in its cache?): crop the draft's cache too")  # fmt: skip
            break
    for index, f in enumerate(draft.forwards[1:], start=2):
        if len(f.new) > 2:
            found.append(f"the draft's forward {index} ran {len(f.new)} positions: after the first, the draft has seen "
                         "everything but at most two tokens (its last draft and the token the target added)")  # fmt: skip
            break
    return found


def _draft_round_starts(target: CachedModel, draft: CachedModel) -> list[int]:
    """The indices of the draft's forwards that come first after one of the target's: the start of each round but
    the first."""
    starts, after_target = [], False
    for name, index in target.timeline:
        if name == target.name:
            after_target = True
        elif name == draft.name and after_target:
            starts.append(index)
            after_target = False
    return starts
