"""repetition_penalty divides by penalty ** count: a token used five times pays five times"""
# symptom: by the same penalty, once


def repetition_penalty(logits, history, penalty):
    if not penalty > 0:
        raise ValueError(penalty)
    factor = penalty ** token_counts(history, logits.shape[-1])
    x = logits.float()
    return torch.where(x > 0, x / factor, x * factor).to(logits.dtype)
