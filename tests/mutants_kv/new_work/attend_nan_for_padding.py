"""attend leaves NaN for a query that sees no key (a padding position): softmax over all -inf."""
# symptom: NaN for queries that see no key


def attend(q, k, v, key_mask=None):
    T, S = q.size(2), k.size(2)
    scores = q @ k.transpose(-2, -1) / q.size(-1) ** 0.5
    visible = torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T)
    if key_mask is not None:
        visible = visible & key_mask[:, None, None, :]
    return torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1) @ v
