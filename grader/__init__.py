"""The course autograder: student code behind a process boundary, tests as plain pytest.

See grader/README.md for the design; `grader.testing` for writing tests; `check` for self-checks in notebooks.
"""

__version__ = "0.1.0"


def check(assignment: str, notebook=None, **options):
    """Run the visible tests of `assignment` on this notebook session's functions (see grader.check)."""
    from grader.selfcheck import check as run_check

    return run_check(assignment, notebook, **options)


def demo():
    """`with demo():` around a demo cell's code: a stub it calls is named in one line (grader.selfcheck.demo)."""
    from grader.selfcheck import demo as name_the_stubs

    return name_the_stubs()
