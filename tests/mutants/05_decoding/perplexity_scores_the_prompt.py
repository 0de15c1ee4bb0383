"""perplexity also scores the prompt's tokens after the first, not only the continuation's"""

# symptom: also scores a prompt token|continuation


def perplexity(model, prompts, continuations):
    total, count = 0.0, 0
    for prompt, continuation in zip(prompts, continuations):
        ids = torch.tensor([list(prompt) + list(continuation)])
        log_probs = torch.log_softmax(model(ids)[0, :-1].float(), dim=-1)
        total -= log_probs.gather(-1, ids[0, 1:, None]).sum().item()
        count += ids.shape[1] - 1
    return math.exp(total / count)
