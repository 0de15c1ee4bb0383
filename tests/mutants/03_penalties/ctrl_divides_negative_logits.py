"""repetition_penalty divides every used token's logit, negative ones too (they move toward 0: more likely)"""
# symptom: negative ones multiplied


def repetition_penalty(logits, history, penalty):
    if not penalty > 0:
        raise ValueError(penalty)
    seen = token_counts(history, logits.shape[-1]) > 0
    return torch.where(seen, logits.float() / penalty, logits.float()).to(logits.dtype)
