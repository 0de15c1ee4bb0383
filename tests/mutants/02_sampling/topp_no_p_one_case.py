"""top-p relies on the float32 cumulative sum for p = 1 (drops tokens too small to move the sum)"""


def top_p_filter(logits, p):
    if not 0 < p <= 1:
        raise ValueError(p)
    probs = torch.softmax(logits.float(), dim=-1)
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    remove_sorted = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= p
    remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))
