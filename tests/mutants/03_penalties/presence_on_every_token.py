"""penalty_scales adds the presence penalty to every token, seen or not"""


def penalty_scales(history, vocab_size, frequency_penalty=1.0, presence_penalty=1.0):
    history = torch.as_tensor(history, dtype=torch.long)
    counts = torch.zeros(*history.shape[:-1], vocab_size)
    counts.scatter_add_(-1, history, torch.ones(history.shape))
    scales = 1 + (frequency_penalty - 1) * counts + (presence_penalty - 1)
    if not torch.all(scales > 0):
        raise ValueError("k <= 0")
    return scales
