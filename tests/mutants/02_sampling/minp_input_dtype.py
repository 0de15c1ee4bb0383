"""min-p takes the softmax in the logits' dtype: bfloat16 rounding moves tokens across the bar"""
# symptom: float32


def min_p_filter(logits, min_p):
    if not 0 <= min_p <= 1:
        raise ValueError(min_p)
    probs = torch.softmax(logits, dim=-1)
    return logits.masked_fill(probs < min_p * probs.amax(dim=-1, keepdim=True), float("-inf"))
