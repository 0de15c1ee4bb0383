"""The API for writing an assignment's tests: plain pytest, with the student's notebook as a fixture.

    import pytest, torch
    from grader.testing import points, expect_tensor, expect_number, expose

    @points(2)
    def test_greedy_picks_argmax(student):
        \"\"\"greedy picks the index of the largest logit\"\"\"     # the test's description in reports
        out = student.greedy(torch.tensor([0.1, 3.0, 2.0]))  # runs in the worker, under a time limit
        expect_tensor(out, dtype=torch.int64, shape=())
        assert out.item() == 1, "greedy should return 1, the index of the largest logit 3.0"

    def test_bad_k(student):                                  # 1 point unless @points says otherwise
        with pytest.raises(ValueError):                       # the student's ValueError, as a StudentError
            student.top_k_filter(torch.zeros(4), 0)

The `student` fixture:
- `student.NAME(...)` calls the notebook's function (or class) NAME in the worker process. Arguments
  and results cross as data: None, bool, int, float, str, list, tuple, dict with string keys,
  SimpleNamespace, plain tensors, and torch.Generators (the caller's generator advances as if the
  student had used it). A name the notebook does not define raises MissingFunction.
- Objects the student returns that are not data (`cache = student.KVCache()`) are handles:
  `cache.update(0, k, v)`, `len(cache)`, `cache[i]` and `cache.attr` run in the worker.
- To hand a trusted object to student code, wrap it: `expose(model, methods=("__call__",),
  attributes={"config": SimpleNamespace(...)})`; the student sees only those methods (which run
  here, in the grader) and that data. Record what you need in the object and assert after the call:
  an assertion raised inside an exposed method reaches the student's code, which could catch it.
- `student.with_timeout(30).NAME(...)` for a call that needs more time.
- Inputs must not be modified in place (docs/assignments.md): after every call the grader compares each tensor
  argument (nested in lists, tuples, dicts too) bit for bit with what it sent, and a change raises
  StudentModifiedArgument: "apply_temperature modified its argument `logits` in place; it must
  return a new tensor". A test of a function allowed to modify its tensor arguments opts out with
  `student.allow_in_place().NAME(...)` (handles it returns, and their methods, inherit that).
- Failures of student code raise a StudentError: StudentRaised (also an instance of the matching
  builtin: `pytest.raises(ValueError)` works), StudentTimeout, StudentCrashed, MissingFunction,
  StudentModifiedArgument.

Feedback: a failed test reports its assertion message (or the StudentError's sentence) under its
docstring. For tests in test_hidden.py that is all: never the test's code or values beyond what the
message says, so keep hidden expected values out of assertion messages you do not want shown.

Shared trusted helpers, so that no assignment copies its own (a helper for one assignment only stays in its
folder, loaded with `helper_module(__file__, "name.py")`):
- `seeded(seed)`: a torch.Generator seeded with `seed`, for a reproducible draw (`student.sample(x, generator=seeded(0))`).
- `expect_frequencies(draws, expected, what)`: the sampled ids come out with the probabilities `expected`. Each token
  of non-zero probability is one check, against a Bernstein bound (`frequency_tolerance`) that a correct sampler
  misses with probability at most FALSE_FAILURE_PER_CHECK = 1e-9, whatever the seed and however it consumes the
  generator's randomness. The grader counts the checks each test makes; its report states their number per test
  file and the union bound, the probability that a correct notebook loses a point to chance (`chance_statement`).
- Toy language models that run here and are exposed to student code (`model.exposed()`): `PrefixModel(rule,
  vocab_size, block_size)` computes the logits at position t as `rule(ids[: t + 1])`; `table_model(table, default)`
  gives fixed next-token probabilities per context, `hashed_model(vocab_size, seed)` random logits of every prefix,
  the same in every run and process. They check what student code hands them and bound the work it can make them do.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace

import torch

from grader.errors import (  # noqa: F401 -- re-exported: the names tests use
    MissingFunction,
    StudentCrashed,
    StudentError,
    StudentModifiedArgument,
    StudentRaised,
    StudentTimeout,
)
from grader.rpc import Exposed, StudentObject

POINTS_ATTRIBUTE = "grader_points"

FALSE_FAILURE_PER_CHECK = 1e-9  # the probability that one frequency check fails a correct sampler, at most

__all__ = [
    "points", "expect_tensor", "expect_number", "expose", "frequency_tolerance", "expect_frequencies", "seeded",
    "helper_module", "PrefixModel", "table_model", "hashed_model", "FALSE_FAILURE_PER_CHECK", "StudentError",
    "StudentRaised", "StudentTimeout", "StudentCrashed", "MissingFunction", "StudentModifiedArgument",
]  # fmt: skip


def points(n: float):
    """Decorator: the test is worth `n` points (default 1)."""
    if not (isinstance(n, (int, float)) and n >= 0):
        raise ValueError(f"points must be a non-negative number, not {n!r}")

    def mark(test):
        setattr(test, POINTS_ATTRIBUTE, n)
        return test

    return mark


def frequency_tolerance(p: float, n: int, delta: float = FALSE_FAILURE_PER_CHECK) -> float:
    """t such that P(|p_hat - p| >= t) <= delta for the frequency p_hat of n independent draws of probability p.

    Bernstein: P(|p_hat - p| >= t) <= 2 exp(-n t^2 / (2 p (1 - p) + 2 t / 3)); set it to delta and solve the
    quadratic in t."""
    log_term = math.log(2 / delta)
    a = 2 * log_term / 3
    return (a + math.sqrt(a * a + 8 * n * p * (1 - p) * log_term)) / (2 * n)


_checks_made = [0]  # frequency checks made in this process: the grader reads it around each test


def frequency_checks_made() -> int:
    return _checks_made[0]


def expect_frequencies(draws: torch.Tensor, expected, what: str = "the draws") -> None:
    """Check that the ids `draws` (an int64 tensor of any shape) come out with the probabilities `expected` (one per
    id of the vocabulary, summing to 1): a token of probability 0 is never drawn, every other token's frequency is
    within `frequency_tolerance(p, n)` of p. The message says what was drawn how often, and `what` names the rule."""
    probabilities = torch.as_tensor(expected, dtype=torch.float64).reshape(-1)
    ids = draws.reshape(-1).long()
    n, vocab = ids.numel(), probabilities.numel()
    if n == 0:
        raise AssertionError(f"{what}: no draws to count")
    if bool(((ids < 0) | (ids >= vocab)).any()):
        raise AssertionError(f"{what}: an id outside the vocabulary 0..{vocab - 1} was drawn")
    counts = torch.bincount(ids, minlength=vocab).double()
    for token, p in enumerate(probabilities.tolist()):
        frequency = counts[token].item() / n
        if p == 0:
            assert frequency == 0, f"{what}: a token with probability 0 (logit -inf after filtering) was drawn"
            continue
        _checks_made[0] += 1
        tolerance = frequency_tolerance(p, n)
        assert abs(frequency - p) <= tolerance, (
            f"{what}: over {n} draws a token of probability {p:.3f} came out {frequency:.3f} of the time, "
            f"beyond the statistical tolerance {tolerance:.3f}"
        )


def false_failure_bound(checks: int) -> float:
    """The probability that a correct notebook fails at least one of `checks` frequency checks: at most the sum of
    each one's (the union bound)."""
    return checks * FALSE_FAILURE_PER_CHECK


def chance_statement(checks_by_file: Mapping[str, int]) -> str:
    """The sentence a report gives about the frequency checks a grading made (test file -> checks), or ''."""
    total = sum(checks_by_file.values())
    if total == 0:
        return ""
    per_file = ", ".join(f"{name} {count}" for name, count in sorted(checks_by_file.items()) if count)
    return (
        f"Sampled frequencies: {total} checks ({per_file}), each failing a correct sampler with probability at most "
        f"{FALSE_FAILURE_PER_CHECK:g}: a correct notebook loses a point to chance with probability at most "
        f"{false_failure_bound(total):.2g}."
    )


def seeded(seed: int) -> torch.Generator:
    """A CPU torch.Generator seeded with `seed`: the same draws in every run."""
    return torch.Generator().manual_seed(seed)


class PrefixModel:
    """A language model whose logits at position t are `rule(ids[: t + 1])` (a tuple of ints -> `vocab_size` floats),
    run here, in the grader: hand `model.exposed()` to student code, which may call it (`model(ids)`, `model.forward`)
    and read `model.config.vocab_size` and `model.config.block_size`, nothing else.

    It checks what student code hands it before any work (int64 ids of shape (batch, positions), ids in the
    vocabulary, 1 to `block_size` positions, at most `max_rows` rows) and counts its calls and the positions it has
    run (`calls`, `positions`), so a runaway loop is stopped with a sentence the test's feedback repeats, and what it
    remembers of the prefixes it was given (their logits, computed once) stays within `max_positions`."""

    def __init__(
        self,
        rule: Callable[[tuple[int, ...]], Sequence[float]],
        vocab_size: int,
        block_size: int,
        *,
        max_rows: int = 4096,
        max_calls: int = 5000,
        max_positions: int = 1 << 16,
    ):
        self.rule = rule
        self.config = SimpleNamespace(vocab_size=vocab_size, block_size=block_size)
        self.limits = SimpleNamespace(rows=max_rows, calls=max_calls, positions=max_positions)
        self.calls = 0
        self.positions = 0  # rows x positions run for student code
        self._memo: dict[tuple[int, ...], torch.Tensor] = {}

    def exposed(self) -> Exposed:
        config = SimpleNamespace(vocab_size=self.config.vocab_size, block_size=self.config.block_size)
        return expose(self, methods=("__call__", "forward"), attributes={"config": config})

    def forward(self, idx, cache=None):
        return self(idx, cache)

    def __call__(self, idx, cache=None):
        self.calls += 1
        if self.calls > self.limits.calls:
            raise ValueError(
                f"the model was called more than {self.limits.calls} times in one test: far more than needed"
            )
        if cache is not None:
            raise TypeError("this test's model takes no cache: call model(ids)")
        expect_tensor(idx, dtype=torch.int64, what="the ids given to the model")
        block_size, rows = self.config.block_size, self.limits.rows
        if idx.dim() != 2 or not 1 <= idx.shape[1] <= block_size or not 1 <= idx.shape[0] <= rows:
            raise ValueError(
                f"the model takes ids of shape (batch, positions) with 1 to block_size = {block_size} positions and "
                f"at most {rows} rows, not {tuple(idx.shape)}"
            )
        if bool(((idx < 0) | (idx >= self.config.vocab_size)).any()):
            raise ValueError(f"the model was given ids outside its vocabulary 0..{self.config.vocab_size - 1}")
        self.positions += idx.numel()
        if self.positions > self.limits.positions:
            raise ValueError(
                f"the model was run on more than {self.limits.positions} positions in one test: far more than needed"
            )
        return torch.stack(
            [torch.stack([self.logits(tuple(row[: t + 1])) for t in range(len(row))]) for row in idx.tolist()]
        )

    def logits(self, prefix: tuple[int, ...]) -> torch.Tensor:
        """The float32 logits after `prefix` (the trusted side's own view: no check, no count)."""
        if prefix not in self._memo:
            self._memo[prefix] = torch.tensor(self.rule(prefix), dtype=torch.float32)
        return self._memo[prefix]

    def probabilities(self, prefix: tuple[int, ...]) -> torch.Tensor:
        """The float64 next-token distribution after `prefix`."""
        return torch.softmax(self.logits(prefix).double(), dim=-1)


def logit_offset(prefix: tuple[int, ...]) -> float:
    """A constant added to a prefix's log-probabilities, different for every prefix: the toy models return logits,
    as a real model does, so code that uses them as log-probabilities (no log-softmax) gets other numbers."""
    return 1.0 + zlib.crc32(repr(prefix).encode()) % 997 / 100


def table_model(
    table: Mapping[tuple[int, ...], Sequence[float]],
    default: Sequence[float],
    *,
    prompt_length: int = 1,
    block_size: int = 16,
    **limits,
) -> PrefixModel:
    """A model with a fixed next-token distribution per context, for examples checked by hand: `table` maps the
    tokens after the first `prompt_length` ones (the prompt) to the probabilities of the next token; a context not
    in the table gets `default`."""

    def rule(prefix):
        probabilities = table.get(prefix[prompt_length:], default)
        return [math.log(p) + logit_offset(prefix) if p > 0 else -math.inf for p in probabilities]

    return PrefixModel(rule, vocab_size=len(default), block_size=block_size, **limits)


def hashed_model(vocab_size: int, seed: int, scale: float = 1.0, block_size: int = 32, **limits) -> PrefixModel:
    """Logits drawn from N(0, scale^2) for every prefix, seeded by a hash of (seed, prefix): every prefix has a
    distribution of its own, the same in every run and process, so greedy decoding, beam search and an exhaustive
    search disagree as they do on a real model."""

    def rule(prefix):
        generator = seeded(zlib.crc32(repr((seed, prefix)).encode()))
        return (
            torch.randn(vocab_size, generator=generator, dtype=torch.float64) * scale + logit_offset(prefix)
        ).tolist()

    return PrefixModel(rule, vocab_size=vocab_size, block_size=block_size, **limits)


def helper_module(test_file: str, filename: str):
    """Load `filename` from the folder of `test_file` once (tests run with pytest's importlib import mode,
    so a sibling module cannot be imported by name): `kv = helper_module(__file__, "kv_support.py")`."""
    path = Path(test_file).with_name(filename)
    name = f"grader_helper_{path.parent.name}_{path.stem}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def expose(obj, methods=("__call__",), attributes: dict | None = None) -> Exposed:
    """Let student code use `obj`: call only `methods` (which run in the grader), read only `attributes` (data)."""
    return Exposed(obj, methods, attributes)


def type_name(value) -> str:
    """The name of the value's type as the student wrote it (a handle reports the worker-side type)."""
    return value.student_type if isinstance(value, StudentObject) else type(value).__name__


def expect_tensor(value, dtype: torch.dtype | None = None, shape=None, what: str = "the result") -> torch.Tensor:
    """Check that `value` is exactly a torch.Tensor (not a subclass) with the given dtype and shape."""
    if type(value) is not torch.Tensor:
        raise AssertionError(f"{what} should be a torch.Tensor, but it is a {type_name(value)}")
    if dtype is not None and value.dtype != dtype:
        raise AssertionError(f"{what} should have dtype {dtype}, but it has dtype {value.dtype}")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise AssertionError(f"{what} should have shape {tuple(shape)}, but it has shape {tuple(value.shape)}")
    return value


def expect_number(
    value, expected: float | None = None, *, rel: float = 1e-6, abs: float = 1e-9, what: str = "the result"
):
    """Check that `value` is a Python int or float (not bool, not a tensor), not NaN, and close to `expected` if given."""
    if type(value) not in (int, float):
        raise AssertionError(f"{what} should be a Python number, but it is a {type_name(value)}")
    if math.isnan(value):
        raise AssertionError(f"{what} is NaN")
    if expected is not None and not math.isclose(value, expected, rel_tol=rel, abs_tol=abs):
        raise AssertionError(f"{what} should be {expected:g}, but it is {value:g}")
    return value


class StudentView:
    """The `student` fixture: the notebook's names, called in the worker with this view's time limit."""

    def __init__(self, session, timeout: float, check_arguments: bool = True):
        self._session = session
        self._timeout = timeout
        self._check_arguments = check_arguments

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return self._session.lookup(name, self._timeout, self._check_arguments)

    def with_timeout(self, seconds: float) -> StudentView:
        """The same notebook, with `seconds` allowed per call."""
        return StudentView(self._session, seconds, self._check_arguments)

    def allow_in_place(self) -> StudentView:
        """The same notebook, whose calls may modify their tensor arguments in place."""
        return StudentView(self._session, self._timeout, check_arguments=False)

    def __repr__(self) -> str:
        return "<the student's notebook>"
