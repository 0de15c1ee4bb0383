"""attend applies the causal mask but never key_mask: the padding of a batch is attended."""
# symptom: ignores key_mask: the padding is attended


def attend(q, k, v, key_mask=None):
    T, S = q.size(2), k.size(2)
    scores = q @ k.transpose(-2, -1) / q.size(-1) ** 0.5
    visible = torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T)
    return torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1) @ v
