"""temperature accepts 0 and negative values (no ValueError)"""


def apply_temperature(logits, temperature):
    return logits / temperature
