"""The hidden tests' references for 04_kv_cache: the attention step and decoding without a cache, computed here,
in the grader. The release leaves this file out (only the hidden tests load it), since each function here is, or
holds, a correct answer to a graded function; the visible tests judge by properties of the trusted model instead
(kv_support.py).

- `reference_attention` and `attend_problem`: the attention step in float64, and what is wrong with a student's
  output, naming the known mistake it matches (MISTAKES); `recorder(model)` checks every attend call of a run so.
- `reference`: greedy (or second-choice) decoding by the library's loop, without a cache; `reference_rows` decodes
  each prompt of a batch alone; `cut_at_eos` and `eos_for_every_row` give a run's expected stopping.
"""

from __future__ import annotations

import torch

from course.generation import generate
from course.model import GPT
from grader.testing import expect_tensor, helper_module

kv = helper_module(__file__, "kv_support.py")


def recorder(model: GPT):
    """A kv_support.Recorder that checks every output of the student's attend against the trusted attention."""
    return kv.Recorder(model, attend_check=attend_problem)


def reference_attention(q, k, v, key_mask=None, *, scale=None, softmax_dim=-1, diagonal=None, key_mask_rule="keep"):
    """softmax(q k^T / sqrt(head_dim)) v in float64, new query i seeing keys 0 .. S - T + i that key_mask keeps; and
    which queries see any key at all, (batch, heads, T). The keywords reproduce mistakes (see MISTAKES)."""
    T, S = q.size(2), k.size(2)
    scores = q.double() @ k.double().transpose(-2, -1) * (q.size(3) ** -0.5 if scale is None else scale)
    causal = torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T if diagonal is None else diagonal)
    visible = causal.expand(q.size(0), 1, T, S)
    if key_mask is not None and key_mask_rule != "ignore":
        kept = key_mask if key_mask_rule == "keep" else ~key_mask
        visible = visible & kept[:, None, None, :]
    weights = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=softmax_dim).nan_to_num(0.0)
    return weights @ v.double(), visible.any(dim=-1).expand(q.size(0), q.size(1), T)


MISTAKES = [
    ("scores not divided by sqrt(head_dim)", lambda d, T, S: dict(scale=1.0)),
    ("scores divided by head_dim instead of sqrt(head_dim)", lambda d, T, S: dict(scale=1.0 / d)),
    ("scores multiplied by sqrt(head_dim) instead of divided", lambda d, T, S: dict(scale=d**0.5)),
    ("a softmax over the queries (dim -2) instead of over the keys (dim -1)", lambda d, T, S: dict(softmax_dim=-2)),
    (
        "a causal mask that is not offset by the cached positions: new query i sees keys 0 .. i instead of "
        "0 .. S - T + i",
        lambda d, T, S: dict(diagonal=0),
    ),
    ("no causal mask: the new queries also see the keys after them", lambda d, T, S: dict(diagonal=S)),
    ("a causal mask one key short: query i does not see its own key", lambda d, T, S: dict(diagonal=S - T - 1)),
    ("attention that ignores key_mask: the padding is attended", lambda d, T, S: dict(key_mask_rule="ignore")),
    (
        "key_mask read the wrong way round: True is a key to keep, False is padding",
        lambda d, T, S: dict(key_mask_rule="flip"),
    ),
]


def attend_problem(y, q, k, v, key_mask) -> str | None:
    """What is wrong with attend's output `y` for these inputs, naming the mistake when it is a known one; None when
    it is right (within TOLERANCE) for every query that sees a key and finite for those that see none."""
    right, sees = reference_attention(q, k, v, key_mask)
    finite = torch.isfinite(y).all(dim=-1)
    if not bool(finite.all()):
        if bool(finite[sees].all()):
            return (
                "attend returned NaN for queries that see no key at all (padding positions): a softmax over scores "
                "that are all -inf is NaN, and NaN spreads through the next layer (0 x NaN is NaN); give such "
                "queries a finite output, for example zeros"
            )
        return "attend returned NaN or infinity for queries that see keys"
    if not bool(sees.any()):
        return None
    diff = (y.double() - right)[sees].abs().max().item()
    if diff <= kv.TOLERANCE:
        return None
    for mistake, knobs in MISTAKES:
        wrong = reference_attention(q, k, v, key_mask, **knobs(q.size(3), q.size(2), k.size(2)))[0]
        if (wrong - right)[sees].abs().max().item() > kv.TOLERANCE and (y.double() - wrong)[
            sees
        ].abs().max() <= kv.TOLERANCE:
            return f"attend's output differs from softmax(q k^T / sqrt(head_dim)) v by {diff:.3g}: it matches {mistake}"
    return (
        f"attend's output differs from softmax(q k^T / sqrt(head_dim)) v by {diff:.3g} (new query i of T sees the keys "
        "0 .. S - T + i that key_mask keeps)"
    )


def check_attend(student, q, k, v, key_mask=None) -> None:
    """The student's attend on these inputs, checked against the trusted attention; the feedback names the mistake."""
    y = student.attend(q, k, v, key_mask) if key_mask is not None else student.attend(q, k, v)
    expect_tensor(y, dtype=q.dtype, shape=tuple(q.shape), what="attend's output")
    problem = attend_problem(y, q, k, v, key_mask)
    assert problem is None, f"with T = {q.size(2)} new queries after {k.size(2) - q.size(2)} cached keys, {problem}"


def reference(model: GPT, prompt_ids: torch.Tensor, max_new_tokens: int, rule: str = "greedy"):
    """Decoding without a cache, here, by the library's loop: (ids, [logits of each step, (batch, vocab)])."""
    picker = kv.Picker(rule)
    ids = generate(model, prompt_ids, max_new_tokens, picker)
    return ids, picker.seen


def cut_at_eos(ids: torch.Tensor, prompt_length: int, eos_id: int) -> torch.Tensor:
    """The stopping rule applied to decoding that did not stop: after a row's first eos_id its tokens are eos_id,
    and the result ends where the last row finished (rows of a batch do not see each other, so this is what a
    generate that stops gives)."""
    new = ids[:, prompt_length:].clone()
    ends = []
    for row in new:
        hits = (row == eos_id).nonzero()
        ends.append(int(hits[0]) + 1 if hits.numel() else None)
        if hits.numel():
            row[int(hits[0]) :] = eos_id
    length = new.size(1) if None in ends else max(ends, default=0)
    return torch.cat([ids[:, :prompt_length], new[:, :length]], dim=1)


def reference_rows(model: GPT, prompts, max_new_tokens, eos_id=None, rule="greedy") -> list[list[int]]:
    """generate_batch's expected result: each prompt decoded alone by the library's loop, cut after its first eos_id."""
    rows = []
    for p in prompts:
        ids, _ = reference(model, torch.tensor([p]), max_new_tokens, rule)
        row = ids[0].tolist()
        new = row[len(p) :]
        if eos_id is not None and eos_id in new:
            new = new[: new.index(eos_id) + 1]
        rows.append(row[: len(p)] + new)
    return rows


def eos_for_every_row(model: GPT, prompt_ids, max_new_tokens):
    """An eos_id that every row emits (greedy, no stopping), the one that ends the generation earliest, and the
    expected result with it."""
    ids, _ = reference(model, prompt_ids, max_new_tokens)
    P = prompt_ids.size(1)
    rows = [row.tolist() for row in ids[:, P:]]
    common = set(rows[0]).intersection(*rows[1:])
    assert common, "the test's prompts share no token to stop at"
    eos_id = min(sorted(common), key=lambda t: max(row.index(t) for row in rows))
    return eos_id, cut_at_eos(ids, P, eos_id)
