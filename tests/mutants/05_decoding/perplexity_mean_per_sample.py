"""perplexity averages each sample's perplexity instead of pooling every token's negative log-likelihood"""

# symptom: mean of each sample's perplexity


def perplexity(model, prompts, continuations):
    values = []
    for prompt, continuation in zip(prompts, continuations):
        ids = torch.tensor([list(prompt) + list(continuation)])
        log_probs = torch.log_softmax(model(ids)[0, len(prompt) - 1 : -1].float(), dim=-1)
        nll = -log_probs.gather(-1, torch.tensor(continuation)[:, None]).mean().item()
        values.append(math.exp(nll))
    return sum(values) / len(values)
