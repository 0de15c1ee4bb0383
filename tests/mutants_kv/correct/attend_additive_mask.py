"""Correct: an additive mask of the dtype's most negative number (Hugging Face's way): no NaN, padding weighs 0."""

import math


def attend(q, k, v, key_mask=None):
    T, S = q.shape[-2], k.shape[-2]
    hidden = torch.triu(torch.ones(T, S, dtype=torch.bool), diagonal=S - T + 1)
    if key_mask is not None:
        hidden = hidden | ~key_mask.view(key_mask.shape[0], 1, 1, S)
    bias = torch.zeros(hidden.shape, dtype=q.dtype).masked_fill(hidden, torch.finfo(q.dtype).min)
    scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(q.shape[-1]) + bias
    return torch.matmul(scores.softmax(dim=-1), v)
