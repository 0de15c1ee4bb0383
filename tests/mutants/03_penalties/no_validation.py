"""penalty_scales never raises: k_i <= 0 goes through"""


def penalty_scales(history, vocab_size, frequency_penalty=1.0, presence_penalty=1.0):
    history = torch.as_tensor(history, dtype=torch.long)
    counts = torch.zeros(*history.shape[:-1], vocab_size)
    counts.scatter_add_(-1, history, torch.ones(history.shape))
    return 1 + (frequency_penalty - 1) * counts + (presence_penalty - 1) * (counts > 0).float()
