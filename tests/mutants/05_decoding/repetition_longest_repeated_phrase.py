"""repetition judges the longest phrase that repeats at the end instead of the one with the most copies"""

# symptom: most copies


def repetition(samples):
    def copies_at_end(tokens, n):
        count = 1
        while (count + 1) * n <= len(tokens) and tokens[
            len(tokens) - (count + 1) * n : len(tokens) - count * n
        ] == tokens[-n:]:
            count += 1
        return count

    def is_loop(tokens):
        repeated = [(n, copies_at_end(tokens, n)) for n in range(1, MAX_PHRASE + 1) if copies_at_end(tokens, n) > 1]
        if not repeated:
            return False
        phrase_length, copies = repeated[-1]
        return phrase_length >= 3 or copies > 50

    return sum(is_loop(list(sample)) for sample in samples) / len(samples) if samples else 0.0
