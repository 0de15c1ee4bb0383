"""Trusted helpers of the 04_kv_cache tests: the real model wrapped in a recorder, a trusted next_token,
the uncached reference (the library's own loop), and the checks that turn what was recorded into feedback.

How the tests observe decoding where student code cannot rewrite it: the test runs the real course
model HERE, in the grader, wrapped in a `Recorder` and exposed to the student's `generate`. When the
student's code calls `model(ids, cache=cache)`, the forward runs here with a proxy of the student's
cache, so its attention layers call the student's `cache.update(...)` across the boundary. The
recorder logs every forward (how many positions, what `len(cache)` said, which ids) and recomputes
each one without a cache, so a cache that returns the wrong keys, or a loop that numbers positions
wrongly, shows up at the step where it happens. Nothing here raises into student code except the
model's own errors and the recorder's refusals; problems are recorded and asserted by the test after
the call returns.

The model runs here, on ids the student chose, so the recorder bounds that work before the model
sees them: int64 ids, at most MAX_BATCH rows, from one to block_size positions (the model itself
refuses positions past its context, counting the cached ones), every id in the vocabulary, and at most
FORWARDS_PER_CALL_NEEDED times the forwards the test asks for. A refusal is a ValueError or TypeError
whose sentence the test's feedback repeats.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch

from course.generation import generate
from course.model import GPT, GPTConfig
from grader.rpc import StudentObject
from grader.testing import StudentError, expect_tensor, expose, type_name

TOLERANCE = 1e-4  # fp32 logits, with vs without the cache (SPEC 5.3)
SMALL = dict(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=16)
MAX_BATCH = 8  # the tests' prompts have at most 3 rows; a generate never runs more rows than its prompt has
FORWARDS_PER_CALL_NEEDED = 10  # a generate may call the model this many times the calls it needs, no more


def small_model(seed: int = 0, **overrides) -> GPT:
    """A small seeded course GPT: the many round trips of a test stay fast."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**SMALL, **overrides})).eval()
    for p in model.parameters():  # larger than GPT-2's init, so logits differ clearly between positions
        p.data.mul_(4.0)
    return model


def prompt(batch: int, positions: int, vocab: int = SMALL["vocab_size"], seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, positions), generator=torch.Generator().manual_seed(seed))


def handle_key(cache):
    """One key per student cache object: its handle (a proxy is rebuilt at every crossing)."""
    return ("handle", cache.handle) if isinstance(cache, StudentObject) else ("object", id(cache))


@dataclass
class Forward:
    """One call of the model by student code."""

    index: int
    batch: int | None = None
    positions: int | None = None  # new positions run in this forward
    with_cache: bool = False
    cached: int | None = None  # len(cache) at the start of the forward
    ids: torch.Tensor | None = None
    run_through_cache: int | None = None  # positions this cache had been given before, as seen here
    max_diff: float | None = None  # largest difference from a full recomputation without a cache
    error: str | None = None


class Recorder:
    """The real model as the student's generate sees it. Use `exposed()` as the `model` argument."""

    def __init__(self, model: GPT):
        self.model = model
        self.max_forwards: int | None = None  # set by `run_generate` from the number of tokens it asks for
        self.forwards: list[Forward] = []
        self._contexts: dict = {}  # cache key -> ids (batch, n) that went through that cache
        self._update_methods: dict = {}  # cache key -> its bound update (one round trip saved per layer)

    @property
    def block_size(self) -> int:
        return self.model.config.block_size

    @property
    def config(self):  # for in-process use (the project's own tests); student code sees `exposed()`'s copy
        return self.model.config

    def exposed(self):
        c = self.model.config
        config = SimpleNamespace(
            vocab_size=c.vocab_size, block_size=c.block_size, n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd
        )
        return expose(self, methods=("__call__", "forward"), attributes={"config": config})

    def forward(self, idx, cache=None):
        return self(idx, cache=cache)

    def __call__(self, idx, cache=None):
        if self.max_forwards is not None and len(self.forwards) > self.max_forwards:
            raise ValueError(self.forwards[-1].error)  # recorded once, at the first call past the limit
        record = Forward(index=len(self.forwards), with_cache=cache is not None)
        self.forwards.append(record)
        refusal = self._refusal(idx)
        if refusal is not None:
            record.error = str(refusal)
            raise refusal
        record.batch, record.positions = idx.shape
        if self.max_forwards is not None and record.index == self.max_forwards:
            record.error = (
                f"the model was called more than {self.max_forwards} times, {FORWARDS_PER_CALL_NEEDED} times what "
                "this test needs: generate should call it once per new token"
            )
            raise ValueError(record.error)
        record.ids = idx.clone()
        spy = None if cache is None else CacheSpy(cache, record, self._update_methods)
        try:
            with torch.no_grad():
                logits = self.model(idx, cache=spy)
        except StudentError as error:  # the student's cache failed inside the model's attention
            record.error = record.error or str(error)
            raise
        except Exception as error:  # the model's own error (past the context counting the cache, bad shapes)
            record.error = record.error or f"{type(error).__name__}: {error}"
            raise
        if cache is not None:
            self._check_against_full(record, cache, idx, logits)
        return logits

    def _refusal(self, idx) -> Exception | None:
        """Why the model must not run on `idx`, checked in order of cost; None when it may."""
        if type(idx) is not torch.Tensor or idx.dim() != 2:
            what = f"a tensor of shape {tuple(idx.shape)}" if type(idx) is torch.Tensor else f"a {type(idx).__name__}"
            return TypeError(f"the model was called with {what}; it takes ids of shape (batch, positions)")
        if idx.dtype != torch.int64:
            return TypeError(f"the model was called with ids of dtype {idx.dtype}; it takes token ids as torch.int64")
        batch, positions = idx.shape
        if batch > MAX_BATCH:
            return ValueError(
                f"the model was called with a batch of {batch}; the tests never need more than {MAX_BATCH} rows "
                "(one per prompt)"
            )
        if positions == 0:
            return ValueError("the model was called with ids of 0 positions; give it at least one token")
        if positions > self.block_size:  # the model checks again, counting the positions already cached
            return ValueError(
                f"the model was called with {positions} positions, which do not fit the context length "
                f"{self.block_size}"
            )
        vocab = self.model.config.vocab_size
        outside = idx[(idx < 0) | (idx >= vocab)]
        if outside.numel():
            return ValueError(f"the model was called with token id {outside[0].item()}; ids run from 0 to {vocab - 1}")
        return None

    def _check_against_full(self, record: Forward, cache, idx, logits) -> None:
        key = handle_key(cache)
        before = self._contexts.pop(key, None)
        record.run_through_cache = 0 if before is None else before.size(1)
        if record.cached == 0:
            context = idx
        elif before is not None and before.size(1) == record.cached and before.size(0) == idx.size(0):
            context = torch.cat([before, idx], dim=1)
        else:
            return  # len(cache) disagrees with what went through it: reported by the checks
        self._contexts[key] = context
        if context.size(1) <= self.block_size:
            with torch.no_grad():
                full = self.model(context)[:, -idx.size(1) :]
            record.max_diff = (logits - full).abs().max().item()


class CacheSpy:
    """What the real model gets as its cache (a `course.model.KVCacheProtocol`): passes len() and update() on
    to the student's cache, records len(cache) as the model read it, and checks what update returns before
    the attention uses it."""

    def __init__(self, cache, record: Forward, methods: dict):
        self.cache, self.record, self.methods = cache, record, methods

    def __len__(self):
        n = len(self.cache)
        if self.record.cached is None:
            self.record.cached = n
        return n

    def update(self, layer, k, v):
        key = handle_key(self.cache)
        if key not in self.methods:  # keeping the object also keeps its id() from being reused in process
            self.methods[key] = (self.cache, self.cache.update)
        result = self.methods[key][1](layer, k, v)
        if type(result) not in (tuple, list) or len(result) != 2:
            self.record.error = f"KVCache.update returned a {type_name(result)}, not the pair (k_all, v_all)"
            raise TypeError(self.record.error)
        for name, got, new in zip(("keys", "values"), result, (k, v)):
            if (
                type(got) is not torch.Tensor
                or got.dim() != 4
                or got.shape[:2] != new.shape[:2]
                or got.size(3) != new.size(3)
            ):
                shape = tuple(got.shape) if type(got) is torch.Tensor else type_name(got)
                self.record.error = (
                    f"KVCache.update({layer}, k, v) with k and v of shape {tuple(new.shape)} returned {name} of "
                    f"shape {shape}; expected (batch, heads, positions, head_dim) = "
                    f"({new.size(0)}, {new.size(1)}, positions, {new.size(3)})"
                )
                raise ValueError(self.record.error)
        return result


class Picker:
    """A trusted next_token (`course.generation.NextToken`): records the logits it is given, and the history
    when it is given one; picks greedily, or the second most likely token.

    `history` is optional: a `generate` written to the earlier one-argument call, `next_token(logits)`,
    grades exactly as before.
    """

    def __init__(self, rule: str = "greedy"):
        self.rule = rule
        self.seen: list[torch.Tensor] = []
        self.histories: list = []
        self.chosen: list[torch.Tensor] = []
        self.problem: str | None = None

    def exposed(self):
        return expose(self)

    def __call__(self, logits, history=None):
        if type(logits) is not torch.Tensor:
            self.problem = self.problem or f"next_token was given a {type(logits).__name__}, not a tensor of logits"
            raise TypeError(self.problem)
        if logits.dim() != 2:
            self.problem = self.problem or (
                f"next_token was given logits of shape {tuple(logits.shape)}: it takes the last position's "
                "logits, shape (batch, vocab)"
            )
        self.seen.append(logits.clone())
        if history is not None:
            self.histories.append(history.clone() if type(history) is torch.Tensor else history)
        chosen = pick(logits, self.rule)
        self.chosen.append(chosen)
        return chosen


def pick(logits: torch.Tensor, rule: str) -> torch.Tensor:
    if rule == "greedy":
        return logits.argmax(dim=-1)
    if rule == "second":
        return logits.topk(2, dim=-1).indices[..., 1]
    raise ValueError(rule)


def reference(model: GPT, prompt_ids: torch.Tensor, max_new_tokens: int, rule: str = "greedy"):
    """Decoding without a cache, here, by the library's loop: (ids, [logits of each step, (batch, vocab)])."""
    picker = Picker(rule)
    ids = generate(model, prompt_ids, max_new_tokens, picker)
    return ids, picker.seen


# ---------------------------------------------------------------- running and checking


def run_generate(
    student, recorder: Recorder, prompt_ids, max_new_tokens, picker: Picker | None = None, timeout=60, **kwargs
):
    """Call the student's generate with the recorded model; on failure, say what the recorder saw."""
    recorder.max_forwards = FORWARDS_PER_CALL_NEEDED * prompt_ids.size(0) * (max_new_tokens + 1)
    args = [recorder.exposed(), prompt_ids, max_new_tokens]
    if picker is not None:
        kwargs["next_token"] = picker.exposed()
    try:
        out = student.with_timeout(timeout).generate(*args, **kwargs)
    except StudentError as error:
        failed = next((f for f in recorder.forwards if f.error), None)
        if failed is not None:
            hint = ""
            if "do not fit the context length" in failed.error:
                hint = (
                    " (the model has positions for block_size tokens only: without a cache, run the last "
                    "block_size tokens; with one, re-fill a fresh cache from the last window when it is full)"
                )
            detail = f"; it failed in the model call of step {failed.index} ({describe_forward(failed)})"
            if failed.error.split(": ", 1)[-1] not in str(error):
                detail += f": {failed.error}"
            raise AssertionError(f"generate failed: {error}{detail}{hint}") from None
        raise
    return out


def describe_forward(f: Forward) -> str:
    positions = f"{f.positions} position{'s' if f.positions != 1 else ''}" if f.positions is not None else "bad ids"
    cache = f"with a cache holding {f.cached}" if f.with_cache else "without a cache"
    return f"{positions}, {cache}"


def check_result(out, prompt_ids, max_new_tokens) -> torch.Tensor:
    batch, positions = prompt_ids.shape
    expect_tensor(out, dtype=torch.int64, shape=(batch, positions + max_new_tokens), what="generate's result")
    assert torch.equal(out[:, :positions], prompt_ids), (
        "generate's result should start with the prompt (the prompt followed by the new tokens), but its first "
        f"{positions} tokens are not the prompt"
    )
    return out


def cached_run_problems(recorder: Recorder, prompt_ids, max_new_tokens, out, picker: Picker | None = None) -> list[str]:
    """What is wrong with a use_cache=True run, earliest step first (empty when all is right)."""
    found: list[tuple[int, int, str]] = []  # (step, rank at that step, message)
    forwards = recorder.forwards
    block = recorder.block_size
    batch, positions = prompt_ids.shape
    if picker is not None and picker.problem:
        found.append((-1, 0, picker.problem))
    if not forwards:
        return [p for _, _, p in found] + ["generate never called the model"]
    first = forwards[0]
    if not first.with_cache:
        found.append((0, 0, "the first forward ran without a cache: with use_cache=True, create a KVCache and pass it: "
                            "model(ids, cache=cache)"))  # fmt: skip
    elif first.positions is not None and (first.positions != min(positions, block) or first.cached != 0):
        found.append((0, 0, f"the first forward ran the model on {first.positions} positions with {first.cached} "
                            f"already cached; it should run the whole prompt ({min(positions, block)} positions) "
                            "into an empty cache"))  # fmt: skip
    seen = min(positions, block)  # positions in the model's context after each forward
    for f in forwards[1:]:
        if f.positions is None:
            continue
        within = seen < block
        step = f.index
        if not f.with_cache:
            found.append((step, 0, f"step {step} ran the model without a cache; with use_cache=True every step after "
                                   "the prompt should run one new position with the cache"))  # fmt: skip
        elif within and f.positions != 1:
            found.append((step, 0, f"after the prompt, step {step} ran the model on {f.positions} positions; with a "
                                   "cache each step should run exactly one new position (the token just chosen)"))  # fmt: skip
        elif f.cached is not None and f.run_through_cache is not None and f.cached not in (0, f.run_through_cache):
            found.append((step, 0, f"at step {step} len(cache) was {f.cached}, but {f.run_through_cache} positions "
                                   "had gone through that cache: len(cache) should be the number of cached positions"))  # fmt: skip
        elif within and f.cached == 0:
            found.append((step, 0, f"at step {step} the cache was empty (len(cache) == 0) although the context still "
                                   "fits: keep one cache across the steps instead of starting a new one"))  # fmt: skip
        elif not within and f.cached != 0 and f.positions != 1:
            found.append((step, 0, f"past the context length, step {step} ran {f.positions} positions after "
                                   f"{f.cached} cached ones"))  # fmt: skip
        seen = min(seen + 1, block)
    for f in forwards:
        if f.error:
            found.append((f.index, 1, f"step {f.index} ({describe_forward(f)}) failed: {f.error}"))
        if f.max_diff is not None and not f.max_diff <= TOLERANCE:
            found.append((f.index, 2, f"at step {f.index} the logits the model computed with your cache differ from a "
                                      f"full recomputation without it by {f.max_diff:.3g}: update should return, for "
                                      "its layer, the keys and the values of every position so far, oldest first, "
                                      "along dim 2 (batch, heads, positions, head_dim)"))  # fmt: skip
    # the token fed at each step is the one chosen at the step before
    chosen = picker.chosen if picker is not None else None
    for f in forwards[1:]:
        if f.error or f.positions != 1 or f.ids is None:
            continue
        step = f.index - 1
        if chosen is not None and step < len(chosen):
            expected = chosen[step].reshape(-1)
        elif out is not None and type(out) is torch.Tensor and out.dim() == 2 and positions + step < out.size(1):
            expected = out[:, positions + step]
        else:
            continue
        fed = f.ids.reshape(-1)
        if fed.shape == expected.shape and not torch.equal(fed, expected.to(fed.dtype)):
            found.append((f.index, 3, f"step {f.index} fed token {fed.tolist()} to the model, but the token chosen at "
                                      f"step {step} was {expected.tolist()}: feed the token just chosen"))  # fmt: skip
            break
    if len(forwards) not in (max_new_tokens, max_new_tokens + 1) and not any(f.error for f in forwards):
        found.append((len(forwards), 9, f"generate ran the model {len(forwards)} times for {max_new_tokens} new "
                                        "tokens: run it once per new token"))  # fmt: skip
    return [message for _, _, message in sorted(found, key=lambda x: (x[0], x[1]))]


def logits_problems(picker: Picker, expected_steps: list[torch.Tensor]) -> list[str]:
    """Compare the logits next_token was given at each step with the uncached reference."""
    if picker.problem:
        return [picker.problem]
    if len(picker.seen) != len(expected_steps):
        return [f"next_token was called {len(picker.seen)} times for {len(expected_steps)} new tokens: once per token"]
    for step, (seen, expected) in enumerate(zip(picker.seen, expected_steps)):
        if seen.shape != expected.shape:
            return [f"at step {step} next_token was given logits of shape {tuple(seen.shape)}, not (batch, vocab) "
                    f"= {tuple(expected.shape)}"]  # fmt: skip
        diff = (seen.float() - expected).abs().max().item()
        if not diff <= TOLERANCE:
            return [f"at step {step} the logits given to next_token differ from decoding without a cache by {diff:.3g} "
                    f"(more than {TOLERANCE:g})"]  # fmt: skip
    return []


def first_token_difference(out, expected) -> str | None:
    if torch.equal(out, expected):
        return None
    differs = (out != expected).any(dim=0).nonzero()
    position = int(differs[0])
    return f"position {position}"


def random_kv(shape, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of `shape` (batch, heads, positions, head_dim), seeded."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)


def checked_update(cache, layer: int, k: torch.Tensor, v: torch.Tensor, what: str = "update"):
    """cache.update(layer, k, v), checked to be two plain tensors of k's and v's dtypes."""
    result = cache.update(layer, k, v)
    assert type(result) in (tuple, list) and len(result) == 2, (
        f"update should return two tensors (k_all, v_all), but it returned a {type_name(result)}"
    )
    k_all, v_all = result
    expect_tensor(k_all, dtype=k.dtype, what=f"the keys returned by {what}")
    expect_tensor(v_all, dtype=v.dtype, what=f"the values returned by {what}")
    return k_all, v_all
