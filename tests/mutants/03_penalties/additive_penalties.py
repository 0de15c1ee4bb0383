"""penalties subtracted from the logits (OpenAI-style) instead of the lecture's division by k"""
# symptom: subtracted the penalties


def apply_penalties(logits, history, frequency_penalty=1.0, presence_penalty=1.0):
    history = torch.as_tensor(history, dtype=torch.long)
    counts = torch.zeros(*history.shape[:-1], logits.shape[-1])
    counts.scatter_add_(-1, history, torch.ones(history.shape))
    if frequency_penalty <= 0 or presence_penalty <= 0:
        raise ValueError("penalty")
    x = logits.float() - (frequency_penalty - 1) * counts - (presence_penalty - 1) * (counts > 0).float()
    return x.to(logits.dtype)
