"""repetition_penalty accepts a penalty of 0 or below (no ValueError)"""
# symptom: ValueError


def repetition_penalty(logits, history, penalty):
    seen = token_counts(history, logits.shape[-1]) > 0
    x = logits.float()
    return torch.where(seen, torch.where(x > 0, x / penalty, x * penalty), x).to(logits.dtype)
