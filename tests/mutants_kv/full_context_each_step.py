"""generate keeps one cache but feeds the whole context at every step (positions counted twice)."""
# symptom: step \d+ ran the model on \d+ positions|exactly one new position


def generate(model, prompt_ids, max_new_tokens, next_token=greedy, use_cache=True):
    block_size = model.config.block_size
    ids = prompt_ids
    cache = KVCache() if use_cache else None
    with torch.no_grad():
        for _ in range(max_new_tokens):
            if cache is not None and len(cache) + ids.size(1) > block_size:
                cache = KVCache()
            logits = model(ids[:, -block_size:], cache=cache)
            new = next_token(logits[:, -1, :])
            ids = torch.cat([ids, new.reshape(-1, 1).to(ids)], dim=1)
    return ids
