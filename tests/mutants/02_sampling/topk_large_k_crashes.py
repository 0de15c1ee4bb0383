"""top-k calls torch.topk with k > vocabulary size (no clamp): a RuntimeError"""


def top_k_filter(logits, k):
    if k < 1:
        raise ValueError(k)
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))
