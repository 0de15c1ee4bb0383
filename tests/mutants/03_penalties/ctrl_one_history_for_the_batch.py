"""repetition_penalty penalises every row for the tokens of every history row (the batch's histories pooled)"""
# symptom: its own history row


def repetition_penalty(logits, history, penalty):
    if not penalty > 0:
        raise ValueError(penalty)
    pooled = torch.as_tensor(history).reshape(-1)
    seen = token_counts(pooled, logits.shape[-1]) > 0
    x = logits.float()
    return torch.where(seen, torch.where(x > 0, x / penalty, x * penalty), x).to(logits.dtype)
