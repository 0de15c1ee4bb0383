"""additive_penalties charges the presence penalty for every occurrence, like the frequency penalty"""
# symptom: presence once


def additive_penalties(logits, history, frequency_penalty=0.0, presence_penalty=0.0):
    counts = token_counts(history, logits.shape[-1])
    return (logits.float() - (frequency_penalty + presence_penalty) * counts).to(logits.dtype)
