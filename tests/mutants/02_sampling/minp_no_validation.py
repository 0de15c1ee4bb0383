"""min-p accepts min_p outside [0, 1] (no ValueError)"""
# symptom: ValueError


def min_p_filter(logits, min_p):
    probs = torch.softmax(logits.float(), dim=-1)
    return logits.masked_fill(probs < min_p * probs.amax(dim=-1, keepdim=True), float("-inf"))
