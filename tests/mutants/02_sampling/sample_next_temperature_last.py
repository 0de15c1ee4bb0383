"""sample_next applies the temperature after the filters"""


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return sample(apply_temperature(logits, temperature), generator=generator)
