"""sample_with_penalties filters first (top-k, top-p) and applies the penalties afterwards"""


def sample_with_penalties(
    logits,
    history,
    temperature=1.0,
    top_k=None,
    top_p=None,
    frequency_penalty=1.0,
    presence_penalty=1.0,
    generator=None,
):
    logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return sample(apply_penalties(logits, history, frequency_penalty, presence_penalty), generator=generator)
