"""additive_penalties counts the batch's history rows together, so every row pays for the others' tokens"""
# symptom: own history row


def additive_penalties(logits, history, frequency_penalty=0.0, presence_penalty=0.0):
    counts = token_counts(torch.as_tensor(history).reshape(-1), logits.shape[-1])
    return (logits.float() - frequency_penalty * counts - presence_penalty * (counts > 0).float()).to(logits.dtype)
