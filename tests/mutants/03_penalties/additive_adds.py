"""additive_penalties adds the penalties to the logits: the used tokens become more likely"""
# symptom: 0.8 - 0.4 - 0.2


def additive_penalties(logits, history, frequency_penalty=0.0, presence_penalty=0.0):
    counts = token_counts(history, logits.shape[-1])
    return (logits.float() + frequency_penalty * counts + presence_penalty * (counts > 0).float()).to(logits.dtype)
