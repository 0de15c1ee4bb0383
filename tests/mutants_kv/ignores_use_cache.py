"""generate always uses the cache, even with use_cache=False."""
# symptom: use_cache=False


def generate(model, prompt_ids, max_new_tokens, next_token=greedy, use_cache=True):
    block_size = model.config.block_size
    ids = prompt_ids
    cache = None
    with torch.no_grad():
        for _ in range(max_new_tokens):
            if cache is not None and len(cache) < block_size:
                logits = model(ids[:, -1:], cache=cache)
            else:
                cache = KVCache()
                logits = model(ids[:, -block_size:], cache=cache)
            new = next_token(logits[:, -1, :])
            ids = torch.cat([ids, new.reshape(-1, 1).to(ids)], dim=1)
    return ids
