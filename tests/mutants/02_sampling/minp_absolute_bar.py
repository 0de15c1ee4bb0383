"""min-p keeps the tokens whose probability is >= min_p itself, not min_p times the largest probability"""
# symptom: largest probability


def min_p_filter(logits, min_p):
    if not 0 <= min_p <= 1:
        raise ValueError(min_p)
    probs = torch.softmax(logits.float(), dim=-1)
    return logits.masked_fill(probs < min_p, float("-inf"))
