"""generate re-fills the cache past the context length from a window one token too short."""
# symptom: past the context length|logits given to next_token differ|tokens differ


def generate(model, prompt_ids, max_new_tokens, next_token=greedy, use_cache=True):
    block_size = model.config.block_size
    ids = prompt_ids
    cache = None
    with torch.no_grad():
        for _ in range(max_new_tokens):
            if not use_cache:
                logits = model(ids[:, -block_size:])
            elif cache is not None and len(cache) < block_size:
                logits = model(ids[:, -1:], cache=cache)
            elif cache is None:
                cache = KVCache()
                logits = model(ids[:, -block_size:], cache=cache)
            else:
                cache = KVCache()
                logits = model(ids[:, -(block_size - 1) :], cache=cache)
            new = next_token(logits[:, -1, :])
            ids = torch.cat([ids, new.reshape(-1, 1).to(ids)], dim=1)
    return ids
