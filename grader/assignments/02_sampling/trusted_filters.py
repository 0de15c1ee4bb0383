"""The trusted side's own filters, for feedback that names the mistake (used by the hidden tests only, so a
release does not ship it).

When `sample_next` draws the wrong tokens, the order of the filters is only one possible cause: a filter it
calls may be wrong on that input (a top-k that leaves finite logits behind, a top-p written for 1-D rows). So
before a test blames the order, `first_wrong_stage` runs the student's own functions one by one on the
pipeline's intermediate values and names the first one whose kept set or values differ from these.
"""

from __future__ import annotations

import torch

from grader.testing import StudentError

INF = float("-inf")


def divide(logits: torch.Tensor, t: float) -> torch.Tensor:
    return logits / t


def keep_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    if k >= logits.shape[-1]:
        return logits.clone()
    kth_largest = logits.topk(k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth_largest, INF)


def keep_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    if p == 1:
        return logits.clone()
    probs = torch.softmax(logits.double(), dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    remove_sorted = sorted_probs.cumsum(-1) - sorted_probs >= p
    return logits.masked_fill(torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted), INF)


def keep_min_p(logits: torch.Tensor, fraction: float) -> torch.Tensor:
    probs = torch.softmax(logits.double(), dim=-1)
    return logits.masked_fill(probs < fraction * probs.amax(dim=-1, keepdim=True), INF)


def _stages(temperature, top_k, top_p, min_p):
    """(student function name, its argument, the trusted function) in sample_next's order, for the filters in use."""
    stages = [("apply_temperature", temperature, divide)]
    stages += [("top_k_filter", top_k, keep_top_k)] if top_k is not None else []
    stages += [("top_p_filter", top_p, keep_top_p)] if top_p is not None else []
    stages += [("min_p_filter", min_p, keep_min_p)] if min_p is not None else []
    return stages


def first_wrong_stage(student, logits, temperature=1.0, top_k=None, top_p=None, min_p=None) -> str | None:
    """A sentence naming the first of the student's functions that sample_next would call with these arguments
    and that is wrong on the input it would get, or None when each is right (then sample_next's own chaining is
    at fault). Kept sets must match exactly and kept logits within 1e-5 (relative)."""
    x = logits
    shape = "x".join(str(n) for n in logits.shape)
    for name, argument, trusted in _stages(temperature, top_k, top_p, min_p):
        expected = trusted(x, argument)
        try:
            got = getattr(student, name)(x, argument)
        except StudentError as error:
            return f"your {name} fails on the input sample_next gives it here (a {shape} batch): {error}"
        if type(got) is not torch.Tensor or got.shape != expected.shape or got.dtype != expected.dtype:
            return (
                f"your {name} returns the wrong type, shape or dtype on the input sample_next gives it here "
                f"(a {shape} batch): fix {name} first"
            )
        if not torch.equal(torch.isfinite(got), torch.isfinite(expected)):
            return (
                f"your {name} keeps the wrong tokens on the input sample_next gives it here (a {shape} batch; "
                f"a removed token's logit must be exactly -inf): fix {name} first, the order of the filters is right"
            )
        kept = torch.isfinite(expected)
        if not torch.allclose(got[kept].double(), expected[kept].double(), rtol=1e-5, atol=1e-6):
            return f"your {name} changes the logits it keeps on the input sample_next gives it here: fix {name} first"
        x = expected
    return None


def blame(student, logits, ordering_message, **arguments) -> str:
    """The feedback for a sample_next that drew the wrong tokens: the wrong filter if one is, else `ordering_message`."""
    return first_wrong_stage(student, logits, **arguments) or ordering_message
