"""generate fills finished rows with eos_id but always runs max_new_tokens steps."""
# symptom: once every row has finished, stop


def generate(model, prompt_ids, max_new_tokens, next_token=greedy, use_cache=True, eos_id=None):
    block_size = model.config.block_size
    ids, cache = prompt_ids, None
    finished = torch.zeros(ids.size(0), dtype=torch.bool)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            if use_cache and cache is not None and len(cache) < block_size:
                logits = model(ids[:, -1:], cache=cache, attend=attend)
            else:
                cache = KVCache() if use_cache else None
                logits = model(ids[:, -block_size:], cache=cache, attend=attend)
            new = next_token(logits[:, -1, :], ids).reshape(-1).to(ids)
            if eos_id is not None:
                new = new.masked_fill(finished, eos_id)
                finished = finished | (new == eos_id)
            ids = torch.cat([ids, new[:, None]], dim=1)
    return ids
