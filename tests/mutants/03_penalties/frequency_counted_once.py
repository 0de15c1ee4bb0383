"""penalty_scales counts each token at most once (frequency behaves like presence)"""


def penalty_scales(history, vocab_size, frequency_penalty=1.0, presence_penalty=1.0):
    history = torch.as_tensor(history, dtype=torch.long)
    seen = torch.zeros(*history.shape[:-1], vocab_size)
    seen.scatter_(-1, history, 1.0)
    scales = 1 + (frequency_penalty - 1) * seen + (presence_penalty - 1) * seen
    if not torch.all(scales > 0):
        raise ValueError("k <= 0")
    return scales
