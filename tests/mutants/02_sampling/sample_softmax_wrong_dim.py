"""sample takes the softmax over dimension 0 (the batch) instead of the vocabulary"""


def sample(logits, generator=None):
    probs = torch.softmax(logits.float(), dim=0)
    rows = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(rows, 1, generator=generator).reshape(probs.shape[:-1])
