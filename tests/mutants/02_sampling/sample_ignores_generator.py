"""sample draws from torch's global generator, ignoring the generator argument"""


def sample(logits, generator=None):
    probs = torch.softmax(logits.float(), dim=-1)
    rows = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(rows, 1).reshape(probs.shape[:-1])
