"""distinct_n takes L - n n-grams from a sample of L tokens instead of L - n + 1 (off by one)"""

# symptom: exactly n tokens has one n-gram|L - n \+ 1


def distinct_n(samples, n):
    if n < 1:
        raise ValueError("n must be at least 1")
    ngrams = [tuple(sample[i : i + n]) for sample in samples for i in range(len(sample) - n)]
    return len(set(ngrams)) / len(ngrams) if ngrams else 0.0
