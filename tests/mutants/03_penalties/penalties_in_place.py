"""apply_penalties shifts and divides its input in place (the caller's logits change)"""


def apply_penalties(logits, history, frequency_penalty=1.0, presence_penalty=1.0):
    scales = penalty_scales(history, logits.shape[-1], frequency_penalty, presence_penalty)
    finite = torch.isfinite(logits)
    row_min = torch.where(finite, logits, torch.inf).amin(dim=-1, keepdim=True)
    logits -= torch.where(row_min < 0, row_min, torch.zeros_like(row_min))
    logits /= scales
    return logits
