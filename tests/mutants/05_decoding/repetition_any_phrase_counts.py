"""repetition counts every phrase repeated back to back at the end, ignoring the paper's 3-token / 50-copy rule"""

# symptom: not a loop


def repetition(samples):
    def is_loop(tokens):
        return any(2 * n <= len(tokens) and tokens[-2 * n : -n] == tokens[-n:] for n in range(1, MAX_PHRASE + 1))

    return sum(is_loop(list(sample)) for sample in samples) / len(samples) if samples else 0.0
