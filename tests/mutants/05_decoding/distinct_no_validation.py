"""distinct_n accepts n < 1 (n = 0 counts empty n-grams) instead of raising ValueError"""

# symptom: ValueError


def distinct_n(samples, n):
    ngrams = [tuple(sample[i : i + n]) for sample in samples for i in range(len(sample) - n + 1)]
    return len(set(ngrams)) / len(ngrams) if ngrams else 0.0
