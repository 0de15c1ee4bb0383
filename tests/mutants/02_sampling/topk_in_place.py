"""top_k_filter writes -inf into its input (the caller's logits change)"""


def top_k_filter(logits, k):
    if k < 1:
        raise ValueError(k)
    if k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    logits[logits < kth] = float("-inf")
    return logits
