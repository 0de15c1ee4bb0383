"""sample_next accepts min_p but never applies min_p_filter"""
# symptom: min-p


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, min_p=None, generator=None):
    logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return sample(logits, generator=generator)
