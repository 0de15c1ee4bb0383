"""top-p returns the filtered probabilities instead of the filtered logits"""


def top_p_filter(logits, p):
    if not 0 < p <= 1:
        raise ValueError(p)
    probs = torch.softmax(logits.float(), dim=-1)
    if p == 1:
        return probs.to(logits.dtype)
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    remove_sorted = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= p
    remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)
    return probs.masked_fill(remove, 0.0).to(logits.dtype)
