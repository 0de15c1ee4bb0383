"""top-k removes logits <= the k-th largest (strict > keeps): the k-th token itself is lost"""


def top_k_filter(logits, k):
    if k < 1:
        raise ValueError(k)
    if k >= logits.shape[-1]:
        return logits.clone()
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(~(logits > kth), float("-inf"))
