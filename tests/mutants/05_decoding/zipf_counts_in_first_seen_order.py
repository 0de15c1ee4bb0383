"""zipf_coefficient ranks ids in the order they first appear instead of by decreasing count"""

# symptom: counts sorted


def zipf_coefficient(samples, top=5000):
    counts = list(Counter(token for sample in samples for token in sample).values())[:top]
    x = torch.log(torch.arange(1, len(counts) + 1, dtype=torch.float64))
    y = torch.log(torch.tensor(counts, dtype=torch.float64))
    x, y = x - x.mean(), y - y.mean()
    return -float((x * y).sum() / (x * x).sum())
