"""apply_penalties always subtracts the minimum, even when no logit is negative"""
# symptom: no logit is negative, so apply_penalties must not shift


def apply_penalties(logits, history, frequency_penalty=1.0, presence_penalty=1.0):
    scales = penalty_scales(history, logits.shape[-1], frequency_penalty, presence_penalty)
    x = logits.float()
    row_min = torch.where(torch.isfinite(x), x, torch.inf).amin(dim=-1, keepdim=True)
    return ((x - row_min) / scales).to(logits.dtype)
