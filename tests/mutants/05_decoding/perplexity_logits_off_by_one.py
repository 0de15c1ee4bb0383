"""perplexity reads each token's probability from the logits at its own position (which predict the next one)"""

# symptom: predict the token at t \+ 1|continuation|3.3333|0.45


def perplexity(model, prompts, continuations):
    total, count = 0.0, 0
    for prompt, continuation in zip(prompts, continuations):
        ids = torch.tensor([list(prompt) + list(continuation)])
        log_probs = torch.log_softmax(model(ids)[0, len(prompt) :].float(), dim=-1)
        total -= log_probs.gather(-1, torch.tensor(continuation)[:, None]).sum().item()
        count += len(continuation)
    return math.exp(total / count)
