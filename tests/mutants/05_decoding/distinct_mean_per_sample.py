"""distinct_n averages each sample's own ratio instead of pooling the n-grams of all samples"""

# symptom: pool the n-grams


def distinct_n(samples, n):
    if n < 1:
        raise ValueError("n must be at least 1")
    ratios = []
    for sample in samples:
        ngrams = [tuple(sample[i : i + n]) for i in range(len(sample) - n + 1)]
        if ngrams:
            ratios.append(len(set(ngrams)) / len(ngrams))
    return sum(ratios) / len(ratios) if ratios else 0.0
