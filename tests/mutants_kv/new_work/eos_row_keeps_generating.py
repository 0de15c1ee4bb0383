"""generate stops once every row has emitted eos_id, but a finished row keeps writing new tokens."""
# symptom: kept generating after it emitted eos_id


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
                finished = finished | (new == eos_id)
            ids = torch.cat([ids, new[:, None]], dim=1)
            if finished.all():
                break
    return ids
