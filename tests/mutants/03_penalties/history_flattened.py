"""penalty_scales counts the whole 2-D history together instead of row by row"""


def penalty_scales(history, vocab_size, frequency_penalty=1.0, presence_penalty=1.0):
    history = torch.as_tensor(history, dtype=torch.long)
    counts = torch.bincount(history.reshape(-1), minlength=vocab_size).float()
    scales = 1 + (frequency_penalty - 1) * counts + (presence_penalty - 1) * (counts > 0).float()
    if not torch.all(scales > 0):
        raise ValueError("k <= 0")
    if history.dim() == 2:
        scales = scales.expand(history.shape[0], vocab_size)
    return scales
