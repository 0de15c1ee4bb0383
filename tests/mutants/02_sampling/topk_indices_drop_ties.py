"""top-k keeps exactly the k indices torch.topk returns: ties at the boundary are dropped"""


def top_k_filter(logits, k):
    if k < 1:
        raise ValueError(k)
    k = min(k, logits.shape[-1])
    idx = torch.topk(logits, k, dim=-1).indices
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, idx, True)
    return logits.masked_fill(~keep, float("-inf"))
