"""min-p compares the logits with min_p times the largest logit, not the probabilities"""
# symptom: probabilit


def min_p_filter(logits, min_p):
    if not 0 <= min_p <= 1:
        raise ValueError(min_p)
    return logits.masked_fill(logits < min_p * logits.amax(dim=-1, keepdim=True), float("-inf"))
