"""min-p removes the tokens whose probability equals the bar: at min_p = 1 the most likely token goes too"""
# symptom: always does


def min_p_filter(logits, min_p):
    if not 0 <= min_p <= 1:
        raise ValueError(min_p)
    probs = torch.softmax(logits.float(), dim=-1)
    return logits.masked_fill(probs <= min_p * probs.amax(dim=-1, keepdim=True), float("-inf"))
