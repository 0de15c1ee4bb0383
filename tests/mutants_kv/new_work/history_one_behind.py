"""generate hands next_token a history that lags one token behind (the newest id is missing)."""
# symptom: history given to next_token is not the prompt


def generate(model, prompt_ids, max_new_tokens, next_token=greedy, use_cache=True, eos_id=None):
    block_size = model.config.block_size
    ids, cache = prompt_ids, None
    with torch.no_grad():
        for _ in range(max_new_tokens):
            if use_cache and cache is not None and len(cache) < block_size:
                logits = model(ids[:, -1:], cache=cache, attend=attend)
            else:
                cache = KVCache() if use_cache else None
                logits = model(ids[:, -block_size:], cache=cache, attend=attend)
            new = next_token(logits[:, -1, :], ids[:, :-1]).reshape(-1).to(ids)
            ids = torch.cat([ids, new[:, None]], dim=1)
    return ids
