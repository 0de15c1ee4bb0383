"""top-p accumulates the probabilities in vocabulary order, without sorting"""


def top_p_filter(logits, p):
    if not 0 < p <= 1:
        raise ValueError(p)
    if p == 1:
        return logits.clone()
    probs = torch.softmax(logits.float(), dim=-1)
    remove = torch.cumsum(probs, dim=-1) - probs >= p
    return logits.masked_fill(remove, float("-inf"))
