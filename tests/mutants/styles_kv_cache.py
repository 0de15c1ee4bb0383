"""Correct 04_kv_cache implementations in other styles than the solution: they must score 100%.

Each is the solution notebook with one more cell that redefines one function another way: attention through an
additive mask of the dtype's most negative number (Hugging Face's way), attention through
`F.scaled_dot_product_attention` with a boolean mask, and a left-padded batch built by padding on the right and
rolling each row.
"""

from __future__ import annotations

from mutants.harness import ROOT, notebook_with_cells

SOLUTION = ROOT / "solutions" / "04_kv_cache.ipynb"

ADDITIVE_MASK = """
import math


def attend(q, k, v, key_mask=None):
    T, S = q.shape[-2], k.shape[-2]
    hidden = torch.triu(torch.ones(T, S, dtype=torch.bool), diagonal=S - T + 1)
    if key_mask is not None:
        hidden = hidden | ~key_mask.view(key_mask.shape[0], 1, 1, S)
    bias = torch.zeros(hidden.shape, dtype=q.dtype).masked_fill(hidden, torch.finfo(q.dtype).min)
    scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(q.shape[-1]) + bias
    return torch.matmul(scores.softmax(dim=-1), v)
"""

FUSED = """
import torch.nn.functional as F


def attend(q, k, v, key_mask=None):
    T, S = q.size(2), k.size(2)
    allowed = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
    if key_mask is not None:
        allowed = allowed[None, None] & key_mask[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
"""

RIGHT_PAD_THEN_ROLL = """
def left_pad(rows, pad_id=0):
    longest = max(len(row) for row in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    key_mask = torch.zeros(len(rows), longest, dtype=torch.bool)
    positions = torch.zeros(len(rows), longest, dtype=torch.long)
    for i, row in enumerate(rows):
        shift = longest - len(row)
        ids[i, : len(row)] = torch.tensor(row)
        key_mask[i, : len(row)] = True
        positions[i, : len(row)] = torch.arange(len(row))
        ids[i], key_mask[i], positions[i] = ids[i].roll(shift), key_mask[i].roll(shift), positions[i].roll(shift)
    return ids, key_mask, positions
"""

KV_CACHE_STYLES = {
    name: (lambda cell=cell: notebook_with_cells(SOLUTION, [cell]))
    for name, cell in {
        "attend-additive-mask": ADDITIVE_MASK,
        "attend-fused": FUSED,
        "left-pad-right-pad-then-roll": RIGHT_PAD_THEN_ROLL,
    }.items()
}
