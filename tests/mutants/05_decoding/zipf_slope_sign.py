"""zipf_coefficient returns the slope itself, not minus the slope (a negative s)"""

# symptom: sign is flipped


def zipf_coefficient(samples, top=5000):
    counts = sorted(Counter(token for sample in samples for token in sample).values(), reverse=True)[:top]
    x = torch.log(torch.arange(1, len(counts) + 1, dtype=torch.float64))
    y = torch.log(torch.tensor(counts, dtype=torch.float64))
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / (x * x).sum())
