"""generate does not handle the context length: past it, the model raises."""
# symptom: do not fit the context length


def generate(model, prompt_ids, max_new_tokens, next_token=greedy, use_cache=True):
    ids = prompt_ids
    cache = KVCache() if use_cache else None
    with torch.no_grad():
        for step in range(max_new_tokens):
            if cache is None:
                logits = model(ids)
            else:
                logits = model(ids if step == 0 else ids[:, -1:], cache=cache)
            new = next_token(logits[:, -1, :])
            ids = torch.cat([ids, new.reshape(-1, 1).to(ids)], dim=1)
    return ids
