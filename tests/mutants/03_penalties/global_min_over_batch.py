"""apply_penalties shifts every row by the minimum of the whole batch, not of its own row"""


def apply_penalties(logits, history, frequency_penalty=1.0, presence_penalty=1.0):
    scales = penalty_scales(history, logits.shape[-1], frequency_penalty, presence_penalty)
    x = logits.float()
    finite = x[torch.isfinite(x)]
    m = finite.min() if finite.numel() else torch.tensor(0.0)
    if m < 0:
        x = x - m
    return (x / scales).to(logits.dtype)
