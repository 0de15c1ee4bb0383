"""additive_penalties returns float32 for float16 / bfloat16 logits (the dtype is not kept)"""
# symptom: dtype


def additive_penalties(logits, history, frequency_penalty=0.0, presence_penalty=0.0):
    counts = token_counts(history, logits.shape[-1])
    return logits.float() - frequency_penalty * counts - presence_penalty * (counts > 0).float()
