"""top-p written for one row (scatters along dimension 0, as litgpt's): sample_next's order is right, its filter wrong"""
# symptom: your top_p_filter keeps the wrong tokens on the input sample_next gives it


def top_p_filter(logits, p):
    if not 0 < p <= 1:
        raise ValueError(p)
    sorted_logits, order = torch.sort(logits.float(), descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= 1 - p
    remove_sorted[..., -1:] = False
    return logits.masked_fill(remove_sorted.scatter(0, order, remove_sorted), float("-inf"))
