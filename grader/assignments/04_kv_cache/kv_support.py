"""Trusted helpers of the 04_kv_cache tests: the real model wrapped in a recorder, a trusted next_token, and
the checks that turn what was recorded into feedback. They ship with the visible tests, so nothing here
computes what a graded function returns: no attention, no decoding loop, no stopping rule. A test judges a
run by properties the trusted model gives (each forward's logits against the model's own forward without a
cache, the tokens against what the trusted next_token chose) or against fixed expected values; the hidden
tests' references (the attention step, decoding without a cache) are in kv_reference.py, which only they load.

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
FORWARDS_PER_CALL_NEEDED times the forwards the test asks for; `positions` and `key_mask` of exactly the
shape and dtype the ids call for (the model checks them), `attend` a function of the notebook. A refusal is
a ValueError or TypeError whose sentence the test's feedback repeats.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch

from course.model import GPT, GPTConfig
from grader.rpc import StudentObject
from grader.testing import StudentError, expect_tensor, expose, seeded, type_name

TOLERANCE = 1e-4  # fp32 logits, with vs without the cache (docs/assignments.md); also attend's fp32 outputs
SMALL = dict(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=16)
MAX_BATCH = 8  # the tests' prompts have at most 3 rows; a generate never runs more rows than its prompt has
FORWARDS_PER_CALL_NEEDED = 10  # a generate may call the model this many times the calls it needs, no more


# The feedback the checks give, by what went wrong: `say(key, **fields)` fills one in. Mutants' symptoms and the
# tests match these sentences, so a change of wording is a change of the feedback students get.
FEEDBACK = {
    # the recorder's refusals: calls of the model it does not run
    "attend_not_callable": "the model was called with attend={given}; pass your attend function",
    "too_many_forwards": (
        "the model was called more than {most} times, {factor} times what this test needs: generate should call it "
        "once per new token"
    ),
    "ids_not_2d": "the model was called with {given}; it takes ids of shape (batch, positions)",
    "ids_not_int64": "the model was called with ids of dtype {dtype}; it takes token ids as torch.int64",
    "batch_too_large": (
        "the model was called with a batch of {batch}; the tests never need more than {most} rows (one per prompt)"
    ),
    "no_positions": "the model was called with ids of 0 positions; give it at least one token",
    "past_context": "the model was called with {positions} positions, which do not fit the context length {block_size}",
    "id_outside_vocabulary": "the model was called with token id {token}; ids run from 0 to {last}",
    "row_positions_not_counted_from_0": (
        "row {row}'s tokens were given positions {got}, but they are its tokens {right} (counting from 0): number each "
        "row's own tokens from 0, the padding takes no position"
    ),
    # what the student's cache and attend returned to the model
    "update_not_a_pair": "KVCache.update returned a {given}, not the pair (k_all, v_all)",
    "update_wrong_shape": (
        "KVCache.update({layer}, k, v) with k and v of shape {new_shape} returned {name} of shape {shape}; expected "
        "(batch, heads, positions, head_dim) = ({batch}, {heads}, positions, {head_dim})"
    ),
    "update_past_context": (
        "KVCache.update({layer}, k, v) returned {name} of {positions} positions, more than the model's context length "
        "{block_size}: return the positions cached so far, no more"
    ),
    "update_not_two_tensors": "update should return two tensors (k_all, v_all), but it returned a {given}",
    "attend_wrong_output": "attend returned {got}; it should return {expected}, the shape of q",
    "attend_problem_in_layer": "in layer {layer} (T = {new} new queries, S = {keys} keys), {problem}",
    "attention_differs": (
        "with T = {new} new queries after {cached} cached keys, attend's output differs from the expected one (by more "
        "than {tolerance:g}), first for head {head}'s query {query}: softmax(q k^T / sqrt(head_dim)) v, where new "
        "query i sees the keys 0 .. S - T + i"
    ),
    # what the trusted next_token was given
    "next_token_too_many_calls": (
        "next_token was called more than {most} times, {factor} times what this test needs: call it once per row and "
        "new token"
    ),
    "next_token_not_logits": "next_token was given a {given}, not a tensor of logits",
    "next_token_too_large": "next_token was given {what} of shape {shape}, far more than this test's rows need",
    "next_token_logits_not_2d": (
        "next_token was given logits of shape {shape}: it takes the last position's logits, shape (batch, vocab)"
    ),
    "next_token_logits_not_every_row": (
        "next_token was given logits of shape {shape}; this test's prompt has {rows} rows, so it takes the last "
        "position's logits of every row, shape ({rows}, vocab)"
    ),
    "next_token_never_called": "generate never called next_token: pick each new token with next_token(logits, ids_so_far)",
    "next_token_calls_per_token": "next_token was called {calls} times for {tokens} new tokens: once per token",
    "next_token_logits_shape": "at step {step} next_token was given logits of shape {shape}, not (batch, vocab) = {expected}",
    "logits_differ_from_uncached_decoding": (
        "at step {step} the logits given to next_token differ from decoding without a cache by {diff:.3g} (more than "
        "{tolerance:g})"
    ),
    "logits_differ_from_uncached_forward": (
        "at step {step} the logits given to next_token differ from the model's forward without a cache by {diff:.3g} "
        "(more than {tolerance:g})"
    ),
    "tokens_not_next_tokens": "the new tokens are not, in order, the ones next_token returned: append what next_token returns",
    # a decoding run: its failure, its result, its forwards
    "decoder_failed_in_model": "{function} failed: {error}; it failed in the model call of step {step} ({forward})",
    "refill_hint": (
        "the model has positions for block_size tokens only: without a cache, run the last block_size tokens; with "
        "one, re-fill a fresh cache from the last window when it is full"
    ),
    "result_not_from_prompt": (
        "generate's result should start with the prompt (the prompt followed by the new tokens), but its first "
        "{positions} tokens are not the prompt"
    ),
    "model_never_called": "{function} never called the model",
    "at_step": "at step {step}, {problem}",
    "step_failed": "step {step} ({forward}) failed: {error}",
    "first_forward_without_cache": (
        "the first forward ran without a cache: with use_cache=True, create a KVCache and pass it: model(ids, "
        "cache=cache)"
    ),
    "first_forward_not_whole_prompt": (
        "the first forward ran the model on {positions} positions with {cached} already cached; it should run the "
        "whole prompt ({prompt} positions) into an empty cache"
    ),
    "step_without_cache": (
        "step {step} ran the model without a cache; with use_cache=True every step after the prompt should run one new "
        "position with the cache"
    ),
    "step_not_one_position": (
        "after the prompt, step {step} ran the model on {positions} positions; with a cache each step should run "
        "exactly one new position (the token just chosen)"
    ),
    "len_cache_not_positions": (
        "at step {step} len(cache) was {cached}, but {through} positions had gone through that cache: len(cache) "
        "should be the number of cached positions"
    ),
    "cache_emptied": (
        "at step {step} the cache was empty (len(cache) == 0) although the context still fits: keep one cache across "
        "the steps instead of starting a new one"
    ),
    "past_context_many_positions": (
        "past the context length, step {step} ran {positions} positions after {cached} cached ones"
    ),
    "refilled_too_short": (
        "past the context length, step {step} re-filled the cache from the last {positions} tokens, so the model saw a "
        "shorter context than decoding without a cache does: re-fill it from the last block_size ({block}) tokens"
    ),
    "cached_logits_differ": (
        "at step {step} the logits the model computed with your cache differ from a full recomputation without it by "
        "{diff:.3g}: update should return, for its layer, the keys and the values of every position so far, oldest "
        "first, along dim 2 (batch, heads, positions, head_dim)"
    ),
    "fed_wrong_token": (
        "step {step} fed token {fed} to the model, but the token chosen at step {chosen_step} was {chosen}: feed the "
        "token just chosen"
    ),
    "forwards_not_one_per_token": (
        "generate ran the model {forwards} times for {tokens} new tokens: run it once per new token"
    ),
    "cache_never_used": (
        "generate never passed a cache to the model: with use_cache=True (the default), create a KVCache and pass it, "
        "model(ids, cache=cache)"
    ),
    "uncached_step_with_cache": "with use_cache=False, step {step} passed a cache to the model",
    "uncached_step_not_whole_context": (
        "without the cache, step {step} ran the model on {positions} positions; it should re-run the whole context "
        "({context} tokens) cropped to the context length ({window})"
    ),
    "uncached_step_wrong_ids": (
        "without the cache, step {step} ran the model on ids that are not the prompt and the tokens chosen so far"
    ),
    # stopping at eos_id
    "logits_premise": (
        "at step {step} the logits computed with your cache differ from the model's forward without a cache by "
        "{diff:.3g} (more than {tolerance:g}), so the tokens differ from decoding without a cache before any eos_id: "
        "fix the cache and the loop first (the tests of KVCache and of the same logits at every step say where)"
    ),
    "row_token_not_next_token": (
        "row {row}'s new token {step} is not the one next_token returned for it: append what next_token returns"
    ),
    "stopping_not_judged": "stopping cannot be judged yet: {premise}",
    "result_rows": "generate's result should have {rows} rows, not {given}",
    "not_stopped_when_all_finished": (
        "every row had emitted eos_id after {length} ids, but the result has {got}: once every row has finished, stop "
        "(the result is then shorter)"
    ),
    "stopped_before_all_finished": (
        "generation stopped after {got} ids, but a row had not emitted eos_id yet: stop only once every row has "
        "finished"
    ),
    "finished_row_kept_generating": (
        "row {row} kept generating after it emitted eos_id: a finished row's later positions should all be eos_id"
    ),
    "row_differs_before_finished": "row {row} differs from decoding without stopping at id {at}, before it finished",
    # generate_batch
    "batch_result_not_rows": (
        "generate_batch should return a list of {rows} lists of ids (one per prompt), not {given}"
    ),
    "batch_row_not_ints": "row {row} of generate_batch's result should be a list of Python ints, not {given}",
    "batch_row_not_from_prompt": "row {row} of generate_batch's result does not start with prompt {row}",
    "batch_row_too_many_tokens": "row {row} has {new} new tokens, more than max_new_tokens = {most}",
    "batch_row_length": "row {row} has {got} ids where decoding its prompt alone gives {want}",
    "batch_row_not_cut_after_eos": (
        "row {row} has {got} ids where decoding its prompt alone gives {want} (cut it just after its first eos_id)"
    ),
    "batch_row_differs": (
        "row {row} differs from decoding its prompt alone (generate of that row), first at id {at} of the row"
    ),
    "batch_first_forward_without_cache": (
        "the first forward ran without a cache: with use_cache=True, pass a KVCache to the model"
    ),
    "batch_uncached_with_cache": "with use_cache=False, a forward passed a cache to the model",
    "batch_without_key_mask": (
        "the model was called without a key_mask on prompts of different lengths: every row attends to its padding; "
        "pass key_mask (batch, positions so far), False at the padding"
    ),
    "batch_key_mask_not_prompt": (
        "in the first forward, the key_mask of row {row} keeps {kept} ids that are not prompt {row} ({length} ids): it "
        "should be True exactly at the prompt's tokens, False at the padding"
    ),
    "batch_forward_failed": "at step {step} the forward failed: {error}",
    "batch_row_logits_differ": (
        "at step {step}, row {row}'s logits differ by {diff:.3g} from running that row's tokens alone: check the key "
        "mask, the positions and attend"
    ),
    "batch_step_not_one_position": (
        "at step {step} the model ran {positions} positions {cache} a cache; after the prompts, each step should run "
        "one new position per row, with the cache"
    ),
    "history_outside_vocabulary": "next_token was given a history with ids outside the vocabulary 0..{last}",
    "batch_logits_not_own_row": (
        "next_token call {call} was given logits that are not the last position's logits of its row (its own tokens, "
        "run alone): give each row its own logits[i : i + 1, -1]"
    ),
    "batch_token_not_next_token": (
        "a row's next token is not the one next_token returned for it: append what next_token returns"
    ),
    "history_not_ids": "next_token was given a history that is {given}, not ids of shape (1, length)",
    "history_of_many_rows": (
        "next_token was given a history of {rows} rows: call it once per row, with that row's own logits (1, vocab) "
        "and history (1, its length); rows have different lengths, and padding in a history counts as tokens the row "
        "has seen"
    ),
    "history_not_a_row": (
        "next_token was given a history of {length} ids that is no row's prompt and tokens so far (padding in it, or a "
        "token missing): give each row its own prompt and the tokens it has chosen"
    ),
    "history_calls_not_per_row_and_step": (
        "next_token was called {got} times with a history; it should be called {expected} times, once per unfinished "
        "row and step"
    ),
}


def say(key: str, **fields) -> str:
    """The feedback sentence FEEDBACK[key], its fields filled in."""
    return FEEDBACK[key].format(**fields)


def small_model(seed: int = 0, **overrides) -> GPT:
    """A small seeded course GPT: the many round trips of a test stay fast."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**SMALL, **overrides})).eval()
    for p in model.parameters():  # larger than GPT-2's init, so logits differ clearly between positions
        p.data.mul_(4.0)
    return model


def prompt(batch: int, positions: int, vocab: int = SMALL["vocab_size"], seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, positions), generator=seeded(seed))


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
    positions_given: torch.Tensor | None = None  # the per-row positions the student passed, if any
    key_mask: torch.Tensor | None = None  # the key mask the student passed, if any
    attend_problem: str | None = None  # the first attend call that differed from the trusted attention
    position_problem: str | None = None  # per-row positions that do not count each row's tokens from 0
    row_diffs: list[float] | None = None  # with a key mask: each row's largest difference from running it alone
    full_last: torch.Tensor | None = None  # without a key mask: the last position's logits of the full recomputation


class Recorder:
    """The real model as the student's generate sees it. Use `exposed()` as the `model` argument.
    `attend_check(y, q, k, v, key_mask)`, if given, says what is wrong with one output of the student's attend
    (or None): the first problem of a forward is recorded in its `attend_problem`."""

    def __init__(self, model: GPT, attend_check=None):
        self.model = model
        self.attend_check = attend_check
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

    def forward(self, idx, cache=None, attend=None, positions=None, key_mask=None):
        return self(idx, cache=cache, attend=attend, positions=positions, key_mask=key_mask)

    def __call__(self, idx, cache=None, attend=None, positions=None, key_mask=None):
        if self.max_forwards is not None and len(self.forwards) > self.max_forwards:
            raise ValueError(self.forwards[-1].error)  # recorded once, at the first call past the limit
        record = Forward(index=len(self.forwards), with_cache=cache is not None)
        self.forwards.append(record)
        refusal = self._refusal(idx)
        if refusal is None and attend is not None and not callable(attend):
            refusal = TypeError(say("attend_not_callable", given=type_name(attend)))
        if refusal is not None:
            record.error = str(refusal)
            raise refusal
        record.batch, record.positions = idx.shape
        if self.max_forwards is not None and record.index == self.max_forwards:
            record.error = say("too_many_forwards", most=self.max_forwards, factor=FORWARDS_PER_CALL_NEEDED)
            raise ValueError(record.error)
        record.ids = idx.clone()
        most = idx.size(0) * self.block_size  # what the model accepts at most; it checks the exact shapes
        record.positions_given = (
            positions.clone() if type(positions) is torch.Tensor and positions.numel() <= most else None
        )
        record.key_mask = key_mask.clone() if type(key_mask) is torch.Tensor and key_mask.numel() <= most else None
        spy = None if cache is None else CacheSpy(cache, record, self._update_methods, self.block_size)
        attention = None if attend is None else AttendSpy(attend, record, self.attend_check)
        try:
            with torch.no_grad():
                logits = self.model(idx, cache=spy, attend=attention, positions=positions, key_mask=key_mask)
        except StudentError as error:  # the student's cache failed inside the model's attention
            record.error = record.error or str(error)
            raise
        except Exception as error:  # the model's own error (past the context counting the cache, bad shapes)
            record.error = record.error or f"{type(error).__name__}: {error}"
            raise
        if cache is not None:
            context = self._context_through(record, cache, idx)
        else:
            context = idx if attend is not None or positions is not None or key_mask is not None else None
        if context is not None:
            self._check_against_full(record, context, logits)
        return logits

    def _refusal(self, idx) -> Exception | None:
        """Why the model must not run on `idx`, checked in order of cost; None when it may."""
        if type(idx) is not torch.Tensor or idx.dim() != 2:
            what = f"a tensor of shape {tuple(idx.shape)}" if type(idx) is torch.Tensor else f"a {type(idx).__name__}"
            return TypeError(say("ids_not_2d", given=what))
        if idx.dtype != torch.int64:
            return TypeError(say("ids_not_int64", dtype=idx.dtype))
        batch, positions = idx.shape
        if batch > MAX_BATCH:
            return ValueError(say("batch_too_large", batch=batch, most=MAX_BATCH))
        if positions == 0:
            return ValueError(say("no_positions"))
        if positions > self.block_size:  # the model checks again, counting the positions already cached
            return ValueError(say("past_context", positions=positions, block_size=self.block_size))
        vocab = self.model.config.vocab_size
        outside = idx[(idx < 0) | (idx >= vocab)]
        if outside.numel():
            return ValueError(say("id_outside_vocabulary", token=outside[0].item(), last=vocab - 1))
        return None

    def _context_through(self, record: Forward, cache, idx) -> torch.Tensor | None:
        """Every id that went through `cache`, this forward's last; None when len(cache) disagrees with them."""
        key = handle_key(cache)
        before = self._contexts.pop(key, None)
        record.run_through_cache = 0 if before is None else before.size(1)
        if record.cached == 0:
            context = idx
        elif before is not None and before.size(1) == record.cached and before.size(0) == idx.size(0):
            context = torch.cat([before, idx], dim=1)
        else:
            return None  # len(cache) disagrees with what went through it: reported by the checks
        self._contexts[key] = context
        return context

    def _check_against_full(self, record: Forward, context, logits) -> None:
        """Compare the forward's logits with the model run without a cache: on the whole context, or, with a key
        mask, on each row's own tokens (what the mask keeps) alone."""
        T = logits.size(1)
        if record.key_mask is None:
            if context.size(1) <= self.block_size:
                with torch.no_grad():
                    full = self.model(context)[:, -T:]
                record.max_diff = (logits - full).abs().max().item()
                record.full_last = full[:, -1].clone()
            return
        kept = record.key_mask  # (batch, S), checked by the model
        new_kept = kept[:, -T:]
        counted = kept.long().cumsum(dim=1)[:, -T:] - 1  # each kept token's place among its row's tokens
        given = record.positions_given
        if given is None:
            given = torch.arange(context.size(1) - T, context.size(1)).expand(kept.size(0), T)
        for row in range(kept.size(0)):
            right, got = counted[row][new_kept[row]], given[row][new_kept[row]]
            if not torch.equal(right, got):
                record.position_problem = say(
                    "row_positions_not_counted_from_0", row=row, got=got.tolist(), right=right.tolist()
                )
                break
        diffs = []
        for row in range(kept.size(0)):
            tokens, n_new = context[row][kept[row]], int(new_kept[row].sum())
            if n_new and tokens.numel() <= self.block_size:
                with torch.no_grad():
                    alone = self.model(tokens[None])[0, -n_new:]
                diffs.append((logits[row][new_kept[row]] - alone).abs().max().item())
            else:
                diffs.append(0.0)
        record.row_diffs = diffs
        record.max_diff = max(diffs)


class CacheSpy:
    """What the real model gets as its cache (a `course.model.KVCacheProtocol`): passes len() and update() on
    to the student's cache, records len(cache) as the model read it, and checks what update returns before
    the attention uses it: two tensors of the new keys' shape but for their positions, of which there are
    no more than the model's context holds."""

    def __init__(self, cache, record: Forward, methods: dict, block_size: int):
        self.cache, self.record, self.methods, self.block_size = cache, record, methods, block_size

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
            self.record.error = say("update_not_a_pair", given=type_name(result))
            raise TypeError(self.record.error)
        for name, got, new in zip(("keys", "values"), result, (k, v)):
            if (
                type(got) is not torch.Tensor
                or got.dim() != 4
                or got.shape[:2] != new.shape[:2]
                or got.size(3) != new.size(3)
            ):
                shape = tuple(got.shape) if type(got) is torch.Tensor else type_name(got)
                self.record.error = say(
                    "update_wrong_shape",
                    layer=layer,
                    new_shape=tuple(new.shape),
                    name=name,
                    shape=shape,
                    batch=new.size(0),
                    heads=new.size(1),
                    head_dim=new.size(3),
                )
                raise ValueError(self.record.error)
            if got.size(2) > self.block_size:
                self.record.error = say(
                    "update_past_context", layer=layer, name=name, positions=got.size(2), block_size=self.block_size
                )
                raise ValueError(self.record.error)
        return result


class AttendSpy:
    """What the real model gets as its attention step: calls the student's attend, checks the shape and dtype of what
    it returns before the model uses it, and records the first problem `check` finds (see Recorder)."""

    def __init__(self, attend, record: Forward, check=None):
        self.attend, self.record, self.check, self.calls = attend, record, check, 0

    def __call__(self, q, k, v, key_mask):
        layer, self.calls = self.calls, self.calls + 1
        y = self.attend(q, k, v, key_mask)
        if type(y) is not torch.Tensor or y.shape != q.shape or y.dtype != q.dtype:
            self.record.error = say("attend_wrong_output", got=describe(y), expected=describe(q))
            raise ValueError(self.record.error)
        if self.record.attend_problem is None and self.check is not None:
            problem = self.check(y, q, k, v, key_mask)
            if problem is not None:
                self.record.attend_problem = say(
                    "attend_problem_in_layer", layer=layer, new=q.size(2), keys=k.size(2), problem=problem
                )
        return y


def describe(value) -> str:
    if type(value) is torch.Tensor:
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"a {value.student_type if isinstance(value, NotIds) else type_name(value)}"


# ---------------------------------------------------------------- attention inputs, the trusted next_token


def attention_inputs(batch, heads, new, keys, head_dim, seed, dtype=torch.float32):
    """Seeded q (batch, heads, new, head_dim) and k, v (batch, heads, keys, head_dim)."""
    g = seeded(seed)
    q = torch.randn(batch, heads, new, head_dim, generator=g, dtype=dtype)
    k = torch.randn(batch, heads, keys, head_dim, generator=g, dtype=dtype)
    v = torch.randn(batch, heads, keys, head_dim, generator=g, dtype=dtype)
    return q, k, v


def expect_attention(y, expected: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> None:
    """attend's output `y` for queries `q` and keys `k` is `expected` (a fixed value), within TOLERANCE."""
    expect_tensor(y, dtype=q.dtype, shape=tuple(q.shape), what="attend's output")
    T, S = q.size(2), k.size(2)
    wrong = (~((y.double() - expected.double()).abs() <= TOLERANCE)).any(dim=-1).nonzero()  # NaN is wrong too
    assert not wrong.numel(), say(
        "attention_differs", new=T, cached=S - T, tolerance=TOLERANCE, head=int(wrong[0, 1]), query=int(wrong[0, 2])
    )


class Picker:
    """A trusted next_token (`course.generation.NextToken`): records the logits it is given, and the history
    when it is given one; picks greedily, or the second most likely token, or follows a `script` (call i gives
    every row `script[i]`, or row r `script[i][r]` where it is a list, the last one once the script is used up),
    whatever the logits.

    `history` is optional: a `generate` written to the earlier one-argument call, `next_token(logits)`,
    grades exactly as before. What it keeps is bounded by what the test asks for (`expect`): at most
    `max_calls` calls, each with logits no larger than the model's whole output for the test's rows and a
    history no longer than their ids; of a history that is not a tensor only its type is kept.
    """

    def __init__(self, rule: str = "greedy", script: list[int] = ()):
        self.rule, self.script = rule, list(script)
        self.recorder: Recorder | None = None  # set by `call_decoder`: each call notes the forward before it
        self.after_forward: list[int] = []  # per call, the index of the last forward run before it
        self.seen: list[torch.Tensor] = []
        self.histories: list = []
        self.chosen: list[torch.Tensor] = []
        self.problem: str | None = None
        self.max_calls: int | None = None  # set by `expect`, from the test's rows and tokens
        self.most: dict[str, int] = {}  # "logits", "a history" -> the most elements one call may be given

    def expect(self, calls: int, logits: int, history: int) -> None:
        """Bound the calls and, per call, the elements of the logits and of the history."""
        self.max_calls, self.most = calls, {"logits": logits, "a history": history}

    def exposed(self):
        return expose(self)

    def __call__(self, logits, history=None):
        if self.max_calls is not None and len(self.seen) >= self.max_calls:
            self.problem = self.problem or say(
                "next_token_too_many_calls", most=self.max_calls, factor=FORWARDS_PER_CALL_NEEDED
            )
            raise ValueError(self.problem)
        if type(logits) is not torch.Tensor:
            self.problem = self.problem or say("next_token_not_logits", given=type_name(logits))
            raise TypeError(self.problem)
        for what, given in (("logits", logits), ("a history", history)):
            if type(given) is torch.Tensor and given.numel() > self.most.get(what, given.numel()):
                self.problem = self.problem or say("next_token_too_large", what=what, shape=tuple(given.shape))
                raise ValueError(self.problem)
        if logits.dim() != 2:
            self.problem = self.problem or say("next_token_logits_not_2d", shape=tuple(logits.shape))
        self.seen.append(logits.clone())
        if self.recorder is not None:
            self.after_forward.append(len(self.recorder.forwards) - 1)
        if history is not None:
            self.histories.append(history.clone() if type(history) is torch.Tensor else NotIds(type_name(history)))
        if self.script:
            chosen = self._scripted(logits, self.script[min(len(self.seen), len(self.script)) - 1])
        else:
            chosen = pick(logits, self.rule)
        self.chosen.append(chosen)
        return chosen

    def _scripted(self, logits: torch.Tensor, entry) -> torch.Tensor:
        if isinstance(entry, int):
            return torch.full(logits.shape[:-1], entry, dtype=torch.long)
        if tuple(logits.shape[:-1]) != (len(entry),):
            self.problem = self.problem or say(
                "next_token_logits_not_every_row", shape=tuple(logits.shape), rows=len(entry)
            )
            raise ValueError(self.problem)
        return torch.tensor(entry, dtype=torch.long)


@dataclass(frozen=True)
class NotIds:
    """What a Picker keeps of a history that is not a tensor of ids: the name of its type."""

    student_type: str


def pick(logits: torch.Tensor, rule: str) -> torch.Tensor:
    if rule == "greedy":
        return logits.argmax(dim=-1)
    if rule == "second":
        return logits.topk(2, dim=-1).indices[..., 1]
    raise ValueError(rule)


# ---------------------------------------------------------------- running and checking


def run_generate(
    student, recorder: Recorder, prompt_ids, max_new_tokens, picker: Picker | None = None, timeout=60, **kwargs
):
    """Call the student's generate with the recorded model; on failure, say what the recorder saw."""
    batch = prompt_ids.size(0)
    return call_decoder(student, "generate", recorder, prompt_ids, batch, max_new_tokens, picker, timeout, kwargs)


def run_generate_batch(
    student, recorder: Recorder, prompts: list[list[int]], max_new_tokens, picker=None, timeout=60, **kwargs
):
    """Call the student's generate_batch with the recorded model; on failure, say what the recorder saw."""
    batch = len(prompts)
    return call_decoder(student, "generate_batch", recorder, prompts, batch, max_new_tokens, picker, timeout, kwargs)


def call_decoder(student, function, recorder, prompts, batch, max_new_tokens, picker, timeout, kwargs):
    recorder.max_forwards = FORWARDS_PER_CALL_NEEDED * batch * (max_new_tokens + 1)
    args = [recorder.exposed(), prompts, max_new_tokens]
    if picker is not None:
        picker.recorder = recorder
        longest = prompts.size(1) if type(prompts) is torch.Tensor else max(map(len, prompts), default=0)
        c = recorder.model.config
        picker.expect(
            calls=recorder.max_forwards,
            logits=batch * c.block_size * c.vocab_size,  # the model's whole output: a loop that forgot [:, -1]
            history=batch * (longest + max_new_tokens),
        )
        kwargs["next_token"] = picker.exposed()
    try:
        out = getattr(student.with_timeout(timeout), function)(*args, **kwargs)
    except StudentError as error:
        failed = next((f for f in recorder.forwards if f.error), None)
        if failed is not None:
            message = say(
                "decoder_failed_in_model",
                function=function,
                error=error,
                step=failed.index,
                forward=describe_forward(failed),
            )
            if failed.error.split(": ", 1)[-1] not in str(error):
                message += f": {failed.error}"
            if "do not fit the context length" in failed.error:  # the recorder's "past_context" refusal
                message += f" ({say('refill_hint')})"
            raise AssertionError(message) from None
        raise
    return out


def describe_forward(f: Forward) -> str:
    positions = f"{f.positions} position{'s' if f.positions != 1 else ''}" if f.positions is not None else "bad ids"
    cache = f"with a cache holding {f.cached}" if f.with_cache else "without a cache"
    return f"{positions}, {cache}"


def check_result(out, prompt_ids, max_new_tokens) -> torch.Tensor:
    batch, positions = prompt_ids.shape
    expect_tensor(out, dtype=torch.int64, shape=(batch, positions + max_new_tokens), what="generate's result")
    assert torch.equal(out[:, :positions], prompt_ids), say("result_not_from_prompt", positions=positions)
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
        return [p for _, _, p in found] + [say("model_never_called", function="generate")]
    first = forwards[0]
    if not first.with_cache:
        found.append((0, 0, say("first_forward_without_cache")))
    elif first.positions is not None and (first.positions != min(positions, block) or first.cached != 0):
        message = say(
            "first_forward_not_whole_prompt",
            positions=first.positions,
            cached=first.cached,
            prompt=min(positions, block),
        )
        found.append((0, 0, message))
    seen = min(positions, block)  # positions in the model's context after each forward
    for f in forwards[1:]:
        if f.positions is None:
            continue
        within = seen < block
        step = f.index
        if not f.with_cache:
            found.append((step, 0, say("step_without_cache", step=step)))
        elif within and f.positions != 1:
            found.append((step, 0, say("step_not_one_position", step=step, positions=f.positions)))
        elif f.cached is not None and f.run_through_cache is not None and f.cached not in (0, f.run_through_cache):
            message = say("len_cache_not_positions", step=step, cached=f.cached, through=f.run_through_cache)
            found.append((step, 0, message))
        elif within and f.cached == 0:
            found.append((step, 0, say("cache_emptied", step=step)))
        elif not within and f.cached != 0 and f.positions != 1:
            message = say("past_context_many_positions", step=step, positions=f.positions, cached=f.cached)
            found.append((step, 0, message))
        elif not within and f.cached == 0 and f.positions != block:
            found.append((step, 0, say("refilled_too_short", step=step, positions=f.positions, block=block)))
        seen = min(seen + 1, block)
    for f in forwards:
        if f.error:
            found.append((f.index, 1, say("step_failed", step=f.index, forward=describe_forward(f), error=f.error)))
        if f.attend_problem:
            found.append((f.index, 2, say("at_step", step=f.index, problem=f.attend_problem)))
        elif f.max_diff is not None and not f.max_diff <= TOLERANCE:
            found.append((f.index, 2, say("cached_logits_differ", step=f.index, diff=f.max_diff)))
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
            message = say("fed_wrong_token", step=f.index, fed=fed.tolist(), chosen_step=step, chosen=expected.tolist())
            found.append((f.index, 3, message))
            break
    if len(forwards) not in (max_new_tokens, max_new_tokens + 1) and not any(f.error for f in forwards):
        message = say("forwards_not_one_per_token", forwards=len(forwards), tokens=max_new_tokens)
        found.append((len(forwards), 9, message))
    return [message for _, _, message in sorted(found, key=lambda x: (x[0], x[1]))]


def logits_problems(picker: Picker, expected_steps: list[torch.Tensor]) -> list[str]:
    """Compare the logits next_token was given at each step with the uncached reference."""
    if picker.problem:
        return [picker.problem]
    if len(picker.seen) != len(expected_steps):
        return [say("next_token_calls_per_token", calls=len(picker.seen), tokens=len(expected_steps))]
    for step, (seen, expected) in enumerate(zip(picker.seen, expected_steps)):
        if seen.shape != expected.shape:
            return [say("next_token_logits_shape", step=step, shape=tuple(seen.shape), expected=tuple(expected.shape))]
        diff = (seen.float() - expected).abs().max().item()
        if not diff <= TOLERANCE:
            return [say("logits_differ_from_uncached_decoding", step=step, diff=diff, tolerance=TOLERANCE)]
    return []


def expect_cache_used(recorder: Recorder) -> None:
    """With use_cache=True (the default), generate passes a cache to the model."""
    assert any(f.with_cache for f in recorder.forwards), say("cache_never_used")


def steps_problems(recorder: Recorder, picker: Picker) -> list[str]:
    """At every step, next_token was given the last position's logits of the forward just run, and they equal the
    model's own forward without a cache (within TOLERANCE), whenever that forward could be recomputed."""
    for step, (logits, before) in enumerate(zip(picker.seen, picker.after_forward)):
        full = recorder.forwards[before].full_last if before >= 0 else None
        if full is None:
            continue
        if logits.shape != full.shape:
            return [say("next_token_logits_shape", step=step, shape=tuple(logits.shape), expected=tuple(full.shape))]
        diff = (logits.double() - full.double()).abs().max().item()
        if not diff <= TOLERANCE:
            return [say("logits_differ_from_uncached_forward", step=step, diff=diff, tolerance=TOLERANCE)]
    return []


def tokens_problem(out: torch.Tensor, prompt_ids: torch.Tensor, picker: Picker) -> str | None:
    """The new tokens of `out` are, in order, what next_token returned."""
    chosen = [c.reshape(-1) for c in picker.chosen]
    expected = torch.cat([prompt_ids, *(c[:, None] for c in chosen)], dim=1) if chosen else prompt_ids
    if out.shape != expected.shape or not torch.equal(out, expected):
        return say("tokens_not_next_tokens")
    return None


def uncached_run_problems(recorder: Recorder, prompt_ids: torch.Tensor, picker: Picker) -> list[str]:
    """use_cache=False: every step runs the model, without a cache, on the whole context so far (the prompt and
    the tokens chosen), cropped to the last block_size tokens."""
    context = prompt_ids
    for step, f in enumerate(recorder.forwards):
        if f.with_cache:
            return [say("uncached_step_with_cache", step=step)]
        window = context[:, -recorder.block_size :]
        if f.ids is None or f.ids.shape != window.shape:
            message = say(
                "uncached_step_not_whole_context",
                step=step,
                positions=f.positions,
                context=context.size(1),
                window=window.size(1),
            )
            return [message]
        if not torch.equal(f.ids, window):
            return [say("uncached_step_wrong_ids", step=step)]
        if step < len(picker.chosen):
            context = torch.cat([context, picker.chosen[step].reshape(-1, 1)], dim=1)
    return []


def first_token_difference(out, expected) -> str | None:
    if torch.equal(out, expected):
        return None
    differs = (out != expected).any(dim=0).nonzero()
    position = int(differs[0])
    return f"position {position}"


def random_kv(shape, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of `shape` (batch, heads, positions, head_dim), seeded."""
    g = seeded(seed)
    return torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)


def checked_update(cache, layer: int, k: torch.Tensor, v: torch.Tensor, what: str = "update"):
    """cache.update(layer, k, v), checked to be two plain tensors of k's and v's dtypes."""
    result = cache.update(layer, k, v)
    assert type(result) in (tuple, list) and len(result) == 2, say("update_not_two_tensors", given=type_name(result))
    k_all, v_all = result
    expect_tensor(k_all, dtype=k.dtype, what=f"the keys returned by {what}")
    expect_tensor(v_all, dtype=v.dtype, what=f"the values returned by {what}")
    return k_all, v_all


# ---------------------------------------------------------------- stopping and batches


def check_rows(out, prompts, max_new_tokens) -> list[list[int]]:
    """generate_batch's result as data: a list with one list of ints per prompt, each starting with its prompt."""
    assert type(out) is list and len(out) == len(prompts), say(
        "batch_result_not_rows",
        rows=len(prompts),
        given=describe(out) + (f" of length {len(out)}" if type(out) is list else ""),
    )
    for i, (row, p) in enumerate(zip(out, prompts)):
        assert type(row) is list and all(type(t) is int for t in row), say(
            "batch_row_not_ints", row=i, given=describe(row) + (" holding other things" if type(row) is list else "")
        )
        assert row[: len(p)] == p, say("batch_row_not_from_prompt", row=i)
        assert len(row) <= len(p) + max_new_tokens, say(
            "batch_row_too_many_tokens", row=i, new=len(row) - len(p), most=max_new_tokens
        )
    return out


def rows_problem(out, expected) -> str | None:
    """The first row that differs from decoding its prompt alone, and where."""
    for i, (got, want) in enumerate(zip(out, expected)):
        if got != want:
            at = next((j for j, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            if got == want[:at] or want == got[:at]:
                key = "batch_row_not_cut_after_eos" if len(got) > len(want) else "batch_row_length"
                return say(key, row=i, got=len(got), want=len(want))
            return say("batch_row_differs", row=i, at=at)
    return None


def batch_run_problems(recorder: Recorder, prompts, use_cache: bool = True) -> list[str]:
    """What is wrong with the forwards of a generate_batch run, earliest step first (empty when all is right)."""
    forwards = [f for f in recorder.forwards if f.positions is not None]
    if not forwards:
        failed = next((f.error for f in recorder.forwards if f.error), None)
        return [failed or say("model_never_called", function="generate_batch")]
    lengths = [len(p) for p in prompts]
    first = forwards[0]
    block = recorder.block_size
    if use_cache and not first.with_cache:
        return [say("batch_first_forward_without_cache")]
    if not use_cache and any(f.with_cache for f in forwards):
        return [say("batch_uncached_with_cache")]
    if len(set(lengths)) > 1 and first.key_mask is None:
        return [say("batch_without_key_mask")]
    if first.key_mask is not None and first.key_mask.shape == first.ids.shape:  # the model checked it against the cache
        for row, p in enumerate(prompts):
            kept = first.ids[row][first.key_mask[row]].tolist()
            if kept != p[-block:]:
                return [say("batch_key_mask_not_prompt", row=row, kept=len(kept), length=len(p))]
    found = []
    seen = first.positions
    for f in forwards:
        if f.error:
            found.append(say("batch_forward_failed", step=f.index, error=f.error))
        found += [say("at_step", step=f.index, problem=p) for p in (f.position_problem, f.attend_problem) if p]
        if f.row_diffs is not None:
            row = max(range(len(f.row_diffs)), key=f.row_diffs.__getitem__)
            if not f.row_diffs[row] <= TOLERANCE:
                found.append(say("batch_row_logits_differ", step=f.index, row=row, diff=f.row_diffs[row]))
        if use_cache and f is not first and seen < block:
            if not f.with_cache or f.positions != 1:
                cache = "with" if f.with_cache else "without"
                found.append(say("batch_step_not_one_position", step=f.index, positions=f.positions, cache=cache))
            seen += 1
    return found


def logits_premise(recorder: Recorder) -> str | None:
    """Why a run's tokens cannot be judged against decoding without a cache (the premise of a test of what generate
    does with them, such as stopping): the first forward whose logits differ from the model's own forward without a
    cache, or whose attend output is wrong; None when every forward that could be recomputed agrees."""
    for f in recorder.forwards:
        if f.attend_problem:
            return say("at_step", step=f.index, problem=f.attend_problem)
        if f.max_diff is not None and not f.max_diff <= TOLERANCE:
            return say("logits_premise", step=f.index, diff=f.max_diff, tolerance=TOLERANCE)
    return None


def script_premise(out, prompt_ids: torch.Tensor, picker: Picker, eos_id: int) -> str | None:
    """Why a scripted run cannot be judged for stopping: a row whose new tokens, up to the first eos_id next_token
    returned for it, are not the ones next_token returned; None when every row follows next_token that far."""
    if picker.problem:
        return picker.problem
    if not picker.chosen:
        return say("next_token_never_called")
    if type(out) is not torch.Tensor or out.dim() != 2 or out.size(0) != prompt_ids.size(0):
        return None  # expect_stopped says what is wrong with the result's type and shape
    start = prompt_ids.size(1)
    for row in range(out.size(0)):
        for step, chosen in enumerate(picker.chosen[: out.size(1) - start]):
            wanted = int(chosen.reshape(-1)[row]) if chosen.numel() == out.size(0) else None
            if wanted is None or int(out[row, start + step]) != wanted:
                return say("row_token_not_next_token", row=row, step=step)
            if wanted == eos_id:
                break
    return None


def expect_stopped(out, expected: torch.Tensor, eos_id: int, premise: str | None = None) -> None:
    """generate's result with eos_id equals `expected`, with feedback that says which rule it broke. When it does
    not, and the test's `premise` (logits_premise, script_premise) says why the tokens before any eos_id are
    already wrong, the feedback is the premise, not its knock-on effect on the stopping."""
    try:
        _expect_stopped(out, expected, eos_id)
    except AssertionError:
        if premise is None:
            raise
        raise AssertionError(say("stopping_not_judged", premise=premise)) from None


def _expect_stopped(out, expected: torch.Tensor, eos_id: int) -> None:
    expect_tensor(out, dtype=torch.int64, what="generate's result")
    batch, length = expected.shape
    assert out.dim() == 2 and out.size(0) == batch, say("result_rows", rows=batch, given=describe(out))
    if out.size(1) > length:
        raise AssertionError(say("not_stopped_when_all_finished", length=length, got=out.size(1)))
    if out.size(1) < length:
        raise AssertionError(say("stopped_before_all_finished", got=out.size(1)))
    for row in range(batch):
        for at in range(length):
            if out[row, at] != expected[row, at]:
                if expected[row, at] == eos_id and eos_id in expected[row, :at].tolist():
                    raise AssertionError(say("finished_row_kept_generating", row=row))
                raise AssertionError(say("row_differs_before_finished", row=row, at=at))


def batch_steps_problem(model: GPT, picker: Picker, out) -> str | None:
    """generate_batch's next_token calls (one row each): the logits given equal the model's own forward on that
    row's history alone (its last block_size tokens, within TOLERANCE), and the row goes on with the token chosen."""
    for call, (history, logits, chosen) in enumerate(zip(picker.histories, picker.seen, picker.chosen)):
        if type(history) is not torch.Tensor or history.dim() != 2 or history.size(0) != 1 or history.size(1) == 0:
            return None  # batch_history_problem says what is wrong with it
        ids = history[0].tolist()
        if not all(0 <= t < model.config.vocab_size for t in ids):
            return say("history_outside_vocabulary", last=model.config.vocab_size - 1)
        with torch.no_grad():
            alone = model(history[:, -model.config.block_size :])[:, -1]
        if logits.shape != alone.shape or not (logits.double() - alone.double()).abs().max() <= TOLERANCE:
            return say("batch_logits_not_own_row", call=call)
        row = next((r for r in out if r[: len(ids)] == ids and len(r) > len(ids)), None)
        if row is not None and row[len(ids)] != int(chosen.reshape(-1)[0]):
            return say("batch_token_not_next_token")
    return None


def batch_history_problem(picker: Picker, prompts, out) -> str | None:
    """generate_batch's next_token calls should get, once per unfinished row and step, that row's ids so far."""
    if picker.problem:
        return picker.problem
    for history in picker.histories:
        if type(history) is not torch.Tensor or history.dim() != 2:
            return say("history_not_ids", given=describe(history))
        if history.size(0) != 1:
            return say("history_of_many_rows", rows=history.size(0))
    expected = sorted(tuple(row[: len(p) + step]) for p, row in zip(prompts, out) for step in range(len(row) - len(p)))
    got = sorted(tuple(h[0].tolist()) for h in picker.histories)
    if got != expected:
        wrong = next((h for h in got if h not in set(expected)), None)
        if wrong is not None:
            return say("history_not_a_row", length=len(wrong))
        return say("history_calls_not_per_row_and_step", got=len(got), expected=len(expected))
    return None
