"""top-p as Hugging Face and litgpt write it: sorted ascending, softmax and cumulative sum in the logits' dtype"""
# symptom: sum from the least likely token up


def top_p_filter(logits, p):
    if not 0 < p <= 1:
        raise ValueError(p)
    sorted_logits, order = torch.sort(logits, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= 1 - p
    remove_sorted[..., -1:] = False
    return logits.masked_fill(remove_sorted.scatter(-1, order, remove_sorted), float("-inf"))
