"""apply_penalties divides without shifting: negative logits move toward 0 and become MORE likely"""
# symptom: divided by k without first shifting


def apply_penalties(logits, history, frequency_penalty=1.0, presence_penalty=1.0):
    scales = penalty_scales(history, logits.shape[-1], frequency_penalty, presence_penalty)
    return (logits.float() / scales).to(logits.dtype)
