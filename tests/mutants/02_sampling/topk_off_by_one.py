"""top-k compares with the (k+1)-th largest logit: keeps one token too many"""


def top_k_filter(logits, k):
    if k < 1:
        raise ValueError(k)
    if k >= logits.shape[-1]:
        return logits.clone()
    kth = torch.topk(logits, k + 1, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))
