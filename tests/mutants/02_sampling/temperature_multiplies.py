"""temperature multiplies the logits instead of dividing"""


def apply_temperature(logits, temperature):
    if not temperature > 0:
        raise ValueError(temperature)
    return logits * temperature
