"""Correct: attend through F.scaled_dot_product_attention with a boolean mask (zeros where a query sees no key)."""

import torch.nn.functional as F


def attend(q, k, v, key_mask=None):
    T, S = q.size(2), k.size(2)
    allowed = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
    if key_mask is not None:
        allowed = allowed[None, None] & key_mask[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
