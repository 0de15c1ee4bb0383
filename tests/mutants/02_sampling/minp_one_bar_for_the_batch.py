"""min-p sets one bar for the whole batch, from the largest probability of any row"""
# symptom: own largest probability


def min_p_filter(logits, min_p):
    if not 0 <= min_p <= 1:
        raise ValueError(min_p)
    probs = torch.softmax(logits.float(), dim=-1)
    return logits.masked_fill(probs < min_p * probs.max(), float("-inf"))
