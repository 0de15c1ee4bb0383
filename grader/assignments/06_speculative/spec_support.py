"""Trusted helpers of the 06_speculative tests: small language models that run HERE, in the grader, and are exposed
to the student's `speculative_generate`, and the checks that read what those models saw. They ship with the
visible tests, so nothing here accepts, rejects or resamples a draft: the tests compare what the student's code
returns with the target model's own sampling distribution (computed here exactly, by enumerating continuations)
and with the forwards the models recorded. The hidden tests' reference (the exact law of one draft block) is in
spec_reference.py, which only they load.

`ChainModel` has a vocabulary of a few tokens; the probabilities of the token after a context depend on the
context's last two tokens (a second-order Markov chain), through a table drawn from a seed, optionally limited to
some `allowed` tokens (the others get the logit -inf). Its logits are log-probabilities plus a constant that
differs from row to row, as a real model's are (only a softmax turns them into probabilities).

It speaks the course model's KV-cache protocol with one layer: `model(ids, cache=cache)` calls
`cache.update(0, k, v)` once, with the new ids as its keys and values (float32, shape (1, 1, T, 1)), and computes
the logits of the new positions from what update returns: every id of the context, oldest first. So the cache is
the model's memory, as in the course model: a rejected draft left in it is a token the model conditions on
later. (It has no position embeddings, so it does not read `len(cache)`; the student's loop does.)

The model checks what student code hands it before doing any work (int64 ids of shape (1, T), ids in the
vocabulary, the context within `block_size`, what update returns), and counts its forwards, so that a runaway
loop is stopped with a sentence the test's feedback repeats. Every forward is recorded (`Forward`): which cache,
how many positions were cached before it, the new ids and the whole context; `loop_problems` turns the records
of one call into feedback.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from grader.rpc import StudentObject
from grader.testing import expect_tensor, expose, frequency_tolerance, type_name

START = -1  # the "token" before the first one: the first position's row of the table is keyed on it
MAX_FORWARDS = 5000  # per model and test; the largest test's correct loop needs about 1,200
DELTA = 1e-9  # each frequency is checked at this false-failure probability (grader.testing.frequency_tolerance)


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


def hashed_rule(seed: int, scale: float = 1.5):
    """Logits drawn from N(0, scale^2) for each pair of last ids, seeded by a hash of (seed, pair): the same in every
    run and every process."""

    def rule(state: tuple[int, int], vocab_size: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(zlib.crc32(repr((seed, state)).encode()))
        return torch.randn(vocab_size, generator=g, dtype=torch.float64) * scale

    return rule


def peak_rule(token: int, height: float):
    """Logits 0 but for `token`, whose logit is `height`, whatever the context: a temperature moves much of the mass."""

    def rule(state: tuple[int, int], vocab_size: int) -> torch.Tensor:
        logits = torch.zeros(vocab_size, dtype=torch.float64)
        logits[token] = height
        return logits

    return rule


class ChainModel:
    """A language model whose next-token logits depend on the last two ids of the context (see the module), through
    `rule(state, vocab_size)`: float64 logits for the pair `state` of last ids (START before the first)."""

    def __init__(self, vocab_size: int, rule, allowed=None, block_size: int = 64, name: str = "model"):
        self.config = SimpleNamespace(vocab_size=vocab_size, block_size=block_size, n_layer=1)
        self.rule, self.name = rule, name
        self.allowed = allowed  # the tokens the model ever samples (None: all); the others get the logit -inf
        self.forwards: list[Forward] = []
        self.timeline: list[tuple[str, int]] = []  # (model name, forward index) in call order, shared by a pair
        self._rows: dict[tuple[int, int], torch.Tensor] = {}
        self._updates: dict = {}  # cache key -> (the cache, its bound update): one round trip saved per forward

    def exposed(self):
        config = SimpleNamespace(**vars(self.config))
        return expose(self, methods=("__call__", "forward"), attributes={"config": config})

    def logits_after(self, context: tuple[int, ...]) -> torch.Tensor:
        """The float32 logits of the token after `context` (at least one id): the rule's for the last two ids."""
        state = (context[-2] if len(context) > 1 else START, context[-1])
        if state not in self._rows:
            logits = self.rule(state, self.config.vocab_size)
            if self.allowed is not None:
                keep = torch.zeros(self.config.vocab_size, dtype=torch.bool)
                keep[list(self.allowed)] = True
                logits = logits.masked_fill(~keep, float("-inf"))
            self._rows[state] = (logits + 1.0 + zlib.crc32(repr(state).encode()) % 97 / 10).float()
        return self._rows[state]

    def probs_after(self, context: tuple[int, ...], temperature: float = 1.0) -> torch.Tensor:
        """The target's sampling distribution (float64) of the token after `context`, at `temperature`."""
        return torch.softmax(self.logits_after(context).double() / temperature, dim=-1)

    def forward(self, idx, cache=None):
        return self(idx, cache)

    def __call__(self, idx, cache=None):
        if len(self.forwards) >= MAX_FORWARDS:
            raise ValueError(
                f"the {self.name} was called more than {MAX_FORWARDS} times in one test: far more than needed"
            )
        expect_tensor(idx, what=f"the ids given to the {self.name}")
        vocab, block = self.config.vocab_size, self.config.block_size
        if idx.dim() == 2 and idx.shape[1] == 0:
            raise ValueError(
                f"the {self.name} was called on 0 positions: run it on the tokens its cache does not hold yet (was its "
                "cache cropped after the last round?)"
            )
        if idx.dim() != 2 or idx.shape[0] != 1 or not 1 <= idx.shape[1] <= block:
            raise ValueError(
                f"the {self.name} takes ids of shape (1, positions), 1 to {block} positions, not {tuple(idx.shape)}"
            )
        expect_tensor(idx, dtype=torch.int64, what=f"the ids given to the {self.name}")
        if bool(((idx < 0) | (idx >= vocab)).any()):
            raise ValueError(f"the {self.name} was given ids outside its vocabulary 0..{vocab - 1}")
        new = tuple(idx[0].tolist())
        context = new if cache is None else self._through(cache, idx, new)
        self.timeline.append((self.name, len(self.forwards)))
        self.forwards.append(
            Forward(None if cache is None else cache_key(cache), len(context) - len(new), new, context)
        )
        first = len(context) - len(new)
        return torch.stack([self.logits_after(context[: t + 1]) for t in range(first, len(context))])[None]

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


def model_pair(vocab_size: int, target_rule, draft_rule, **options):
    """A target and a draft over the same vocabulary (ChainModels), their forwards recorded on one timeline."""
    target = ChainModel(vocab_size, target_rule, name="target", **options)
    draft = ChainModel(vocab_size, draft_rule, name="draft", **options)
    draft.timeline = target.timeline  # one record of the order of both models' forwards
    return target, draft


def continuation_law(model: ChainModel, prompt: list[int], length: int, temperature: float = 1.0) -> dict:
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


def generate(student, target: ChainModel, draft: ChainModel, prompt: list[int], max_new_tokens: int, k: int, **options):
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


def frequency_problem(counts: dict, law: dict, draws: int, what: str) -> str | None:
    """The outcome whose frequency among `draws` is furthest outside its Bernstein bound (DELTA) under `law`
    ({outcome: probability}), as a sentence naming `what` was drawn; None when every frequency is within its bound.
    An outcome the law gives probability 0 must never occur."""
    for outcome, count in counts.items():
        if law.get(outcome, 0.0) == 0.0 and count:
            return f"{what} {outcome} came out {count} times, but the target never samples it"
    worst, worst_ratio = None, 1.0
    for outcome, p in law.items():
        frequency = counts.get(outcome, 0) / draws
        tolerance = frequency_tolerance(p, draws, DELTA)
        if abs(frequency - p) / tolerance > worst_ratio:
            worst, worst_ratio = (outcome, frequency, p, tolerance), abs(frequency - p) / tolerance
    if worst is None:
        return None
    outcome, frequency, p, tolerance = worst
    return (
        f"{what} {outcome} came out with frequency {frequency:.4f} in {draws} draws, but the target samples it with "
        f"probability {p:.4f} (tolerance {tolerance:.4f}, a bound a correct sampler misses less than once in "
        f"{1 / DELTA:.0e} runs)"
    )


def tally(samples) -> dict:
    counts: dict = {}
    for sample in samples:
        counts[sample] = counts.get(sample, 0) + 1
    return counts


def marginals(law: dict, length: int) -> list[dict]:
    """The law of each position of the continuations, from their joint law."""
    found = [dict() for _ in range(length)]
    for tokens, p in law.items():
        for position, token in enumerate(tokens):
            found[position][token] = found[position].get(token, 0.0) + p
    return found


def sample_problem(samples: list[tuple[int, ...]], law: dict, what: str = "the continuation") -> str | None:
    """What is wrong with independent continuations `samples` as draws from `law`: the joint frequencies and those
    of each position, within Bernstein bounds."""
    problem = frequency_problem(tally(samples), law, len(samples), what)
    length = len(next(iter(law)))
    for position, single in enumerate(marginals(law, length)):
        problem = problem or frequency_problem(
            tally(s[position] for s in samples), single, len(samples), f"new token {position + 1}: id"
        )
    return problem


def loop_problems(target: ChainModel, draft: ChainModel, prompt: list[int], new: list[int], k: int) -> list[str]:
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
    rounds = _draft_round_starts(target, draft)
    for index in rounds:
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


def _draft_round_starts(target: ChainModel, draft: ChainModel) -> list[int]:
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
