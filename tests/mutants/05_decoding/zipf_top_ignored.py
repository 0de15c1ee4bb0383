"""zipf_coefficient fits every id, not only the `top` most frequent"""

# symptom: keep the `top` most frequent


def zipf_coefficient(samples, top=5000):
    counts = sorted(Counter(token for sample in samples for token in sample).values(), reverse=True)
    x = torch.log(torch.arange(1, len(counts) + 1, dtype=torch.float64))
    y = torch.log(torch.tensor(counts, dtype=torch.float64))
    x, y = x - x.mean(), y - y.mean()
    return -float((x * y).sum() / (x * x).sum())
