"""sample_next applies min-p before top-p (top-p then adds up min-p's renormalised probabilities)"""
# symptom: apply top-p before min-p


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, min_p=None, generator=None):
    logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if min_p is not None:
        logits = min_p_filter(logits, min_p)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return sample(logits, generator=generator)
