"""distinct_n joins the samples into one sequence, so n-grams span the border between two samples"""

# symptom: never span two samples|adds nothing


def distinct_n(samples, n):
    if n < 1:
        raise ValueError("n must be at least 1")
    joined = [token for sample in samples for token in sample]
    ngrams = [tuple(joined[i : i + n]) for i in range(len(joined) - n + 1)]
    return len(set(ngrams)) / len(ngrams) if ngrams else 0.0
