"""sample_with_penalties does not pass the generator on (draws from the global generator)"""


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
    penalised = apply_penalties(logits, history, frequency_penalty, presence_penalty)
    return sample_next(penalised, temperature=temperature, top_k=top_k, top_p=top_p)
