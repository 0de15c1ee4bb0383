"""attend normalises over the queries (dim -2) instead of over the keys."""
# symptom: softmax over the queries


def attend(q, k, v, key_mask=None):
    T, S = q.size(2), k.size(2)
    scores = q @ k.transpose(-2, -1) / q.size(-1) ** 0.5
    visible = torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T)
    if key_mask is not None:
        visible = visible & key_mask[:, None, None, :]
    return torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-2).nan_to_num(0.0) @ v
