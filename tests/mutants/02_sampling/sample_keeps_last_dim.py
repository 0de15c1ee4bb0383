"""sample returns shape (..., 1): the num_samples dimension is not removed"""


def sample(logits, generator=None):
    probs = torch.softmax(logits.float(), dim=-1)
    rows = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(rows, 1, generator=generator).reshape(*probs.shape[:-1], 1)
