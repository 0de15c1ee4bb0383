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
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

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

__all__ = [
    "points", "expect_tensor", "expect_number", "expose", "frequency_tolerance", "helper_module", "StudentError", "StudentRaised",
    "StudentTimeout", "StudentCrashed", "MissingFunction", "StudentModifiedArgument",
]  # fmt: skip


def points(n: float):
    """Decorator: the test is worth `n` points (default 1)."""
    if not (isinstance(n, (int, float)) and n >= 0):
        raise ValueError(f"points must be a non-negative number, not {n!r}")

    def mark(test):
        setattr(test, POINTS_ATTRIBUTE, n)
        return test

    return mark


def frequency_tolerance(p: float, n: int, delta: float = 1e-9) -> float:
    """t such that P(|p_hat - p| >= t) <= delta for the frequency p_hat of n independent draws of probability p.

    Bernstein: P(|p_hat - p| >= t) <= 2 exp(-n t^2 / (2 p (1 - p) + 2 t / 3)); set it to delta and solve the
    quadratic in t. Bound every checked frequency at delta and the union bound covers a whole suite: with
    delta = 1e-9 and fewer than 100 frequencies checked, a correct sampler fails less than once in 10 million
    runs, whatever the seed and however it consumes the generator's randomness."""
    log_term = math.log(2 / delta)
    a = 2 * log_term / 3
    return (a + math.sqrt(a * a + 8 * n * p * (1 - p) * log_term)) / (2 * n)


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
