"""Grading sample_with_penalties without grading 02 a second time.

03 does not hand out 02's functions: the student pastes their own. So that a mistake in 02 never costs
points here, `check_draws` first compares `sample_with_penalties` with the student's own pipeline, their
`sample_next` on their `apply_penalties`, drawing from identically seeded generators: the same draws mean the
penalties come first and everything else is handed on, whatever 02's functions do. A notebook that draws some
other way (its own loop, another use of the generator) is judged instead by the frequencies of its draws against
the distribution the trusted side expects (grader.testing.expect_frequencies).
"""

from __future__ import annotations

import torch

from grader.testing import StudentError, expect_frequencies, expect_tensor, seeded

PENALTIES = ("frequency_penalty", "presence_penalty")


def _own_pipeline(student, logits, history, seed, arguments):
    """The student's sample_next on the student's apply_penalties, or None where either fails."""
    penalties = {name: arguments[name] for name in PENALTIES if name in arguments}
    shaping = {name: value for name, value in arguments.items() if name not in PENALTIES}
    try:
        penalised = student.apply_penalties(logits, history, **penalties)
        return student.sample_next(penalised, generator=seeded(seed), **shaping)
    except StudentError:
        return None


def draw(student, logits, history, seed, **arguments):
    """student.sample_with_penalties(logits, history, generator=<seeded>, **arguments), with a message that says
    what to paste when the notebook has no sample_next for it to call."""
    try:
        return student.sample_with_penalties(logits, history, generator=seeded(seed), **arguments)
    except StudentError as error:
        if "sample_next" in str(error):
            raise AssertionError(
                f"sample_with_penalties failed: {error}. Paste your functions of 02_sampling into this notebook"
            ) from None
        raise


def check_draws(student, logits, history, expected, what, seed, **arguments):
    """sample_with_penalties draws as the student's own pipeline does, or as `expected` (probabilities, float64,
    one row for every row of logits: (V,) or (batch, V)) says. `what` names the rule in the failure message."""
    out = draw(student, logits, history, seed, **arguments)
    expect_tensor(out, dtype=torch.int64, shape=logits.shape[:-1])
    own = _own_pipeline(student, logits, history, seed, arguments)
    if type(own) is torch.Tensor and own.shape == out.shape and torch.equal(own, out):
        return
    rows = out.reshape(-1)
    expected = expected.expand(*logits.shape).reshape(-1, logits.shape[-1])
    for distinct in expected.unique(dim=0):
        expect_frequencies(rows[(expected == distinct).all(-1)], distinct, f"{what}: sample_with_penalties")
