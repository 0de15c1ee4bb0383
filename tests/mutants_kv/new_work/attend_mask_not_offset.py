"""attend's causal mask is the plain triangle: new query i sees keys 0 .. i, not 0 .. S - T + i."""
# symptom: not offset by the cached positions


def attend(q, k, v, key_mask=None):
    T, S = q.size(2), k.size(2)
    scores = q @ k.transpose(-2, -1) / q.size(-1) ** 0.5
    visible = torch.ones(T, S, dtype=torch.bool).tril()
    if key_mask is not None:
        visible = visible & key_mask[:, None, None, :]
    return torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1).nan_to_num(0.0) @ v
