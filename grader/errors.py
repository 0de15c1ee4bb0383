"""What a test sees when student code misbehaves, and the grader's own user errors."""

from __future__ import annotations

from course.errors import UserError


class GraderError(UserError):
    """A usage mistake (unknown assignment, missing file): one line, exit code 2."""


class StudentError(Exception):
    """Student code did not produce a value. The message says what happened, in one sentence."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class StudentRaised(StudentError):
    """Student code raised an exception. Raised as a subclass of the matching builtin exception
    too (`StudentValueError` is a `ValueError`), so `pytest.raises(ValueError)` works."""

    builtin: type[Exception] = Exception


class MissingFunction(StudentError):
    """The notebook does not define the name a test needs."""


class StudentTimeout(StudentError):
    """A call ran past its time limit; the worker was killed and will be replaced."""


class StudentModifiedArgument(StudentError):
    """The call returned, but changed a tensor argument in place (inputs are never modified)."""


class StudentCrashed(StudentError):
    """The worker died (exit, crash, memory limit) or broke the protocol; it will be replaced."""


WORKER_LOST = (StudentTimeout, StudentCrashed)

# The builtin exceptions a student's exception is matched to, most specific first; anything else is an Exception.
MATCHED_BUILTINS: tuple[type[Exception], ...] = (
    NotImplementedError, RecursionError, ZeroDivisionError, OverflowError, ArithmeticError,
    KeyError, IndexError, LookupError, ValueError, TypeError, AttributeError, NameError,
    ImportError, AssertionError, MemoryError, RuntimeError, OSError,
)  # fmt: skip
BUILTINS_BY_NAME = {cls.__name__: cls for cls in MATCHED_BUILTINS}

_raised_classes: dict[str, type[StudentRaised]] = {}


def student_raised(builtin_name: str, message: str) -> StudentRaised:
    """A StudentRaised that is also an instance of the named builtin exception (or a plain StudentRaised)."""
    builtin = BUILTINS_BY_NAME.get(builtin_name, Exception)
    if builtin_name not in _raised_classes:
        name = "StudentRaised" if builtin is Exception else f"Student{builtin.__name__}"
        _raised_classes[builtin_name] = type(
            name, (StudentRaised, builtin), {"builtin": builtin, "__module__": __name__}
        )
    return _raised_classes[builtin_name](message)  # MemoryError refuses a bare __new__ of a subclass


def nearest_builtin(error: BaseException) -> str:
    """The name of the first of MATCHED_BUILTINS in the error's class hierarchy, or 'Exception'."""
    for cls in type(error).__mro__:
        if cls in MATCHED_BUILTINS:
            return cls.__name__
    return "Exception"
