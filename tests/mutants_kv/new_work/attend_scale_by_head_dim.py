"""attend divides the scores by head_dim instead of its square root."""
# symptom: divided by head_dim instead of sqrt\(head_dim\)


def attend(q, k, v, key_mask=None):
    T, S = q.size(2), k.size(2)
    scores = q @ k.transpose(-2, -1) / q.size(-1)
    visible = torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T)
    if key_mask is not None:
        visible = visible & key_mask[:, None, None, :]
    return torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1).nan_to_num(0.0) @ v
