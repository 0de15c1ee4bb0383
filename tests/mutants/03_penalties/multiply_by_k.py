"""apply_penalties multiplies by k instead of dividing"""
# symptom: multiplied by k instead of dividing


def apply_penalties(logits, history, frequency_penalty=1.0, presence_penalty=1.0):
    scales = penalty_scales(history, logits.shape[-1], frequency_penalty, presence_penalty)
    x = logits.float()
    row_min = torch.where(torch.isfinite(x), x, torch.inf).amin(dim=-1, keepdim=True)
    shift = torch.where(row_min < 0, row_min, torch.zeros_like(row_min))
    return ((x - shift) * scales).to(logits.dtype)
