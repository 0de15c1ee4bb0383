"""apply_temperature divides its input in place (the caller's logits change)"""


def apply_temperature(logits, temperature):
    if not temperature > 0:
        raise ValueError(temperature)
    logits /= temperature
    return logits
