"""generate_batch stops once every row has emitted eos_id, but a row that finished keeps its later tokens."""
# symptom: cut it just after its first eos_id


def generate_batch(model, prompts, max_new_tokens, next_token=greedy, eos_id=None, use_cache=True):
    block_size = model.config.block_size
    rows = [list(prompt) for prompt in prompts]
    cache = key_mask = positions = None
    with torch.no_grad():
        for _ in range(max_new_tokens):
            if use_cache and cache is not None and len(cache) < block_size:
                key_mask = torch.cat([key_mask, torch.ones(len(rows), 1, dtype=torch.bool)], dim=1)
                positions = positions[:, -1:] + 1
                newest = torch.tensor([[row[-1]] for row in rows])
                logits = model(newest, cache=cache, attend=attend, positions=positions, key_mask=key_mask)
            else:
                ids, key_mask, positions = left_pad([row[-block_size:] for row in rows])
                cache = KVCache() if use_cache else None
                logits = model(ids, cache=cache, attend=attend, positions=positions, key_mask=key_mask)
            for i, row in enumerate(rows):
                row.append(int(next_token(logits[i : i + 1, -1, :], torch.tensor([row])).reshape(-1)[0]))
            if eos_id is not None and all(eos_id in row[len(prompt) :] for row, prompt in zip(rows, prompts)):
                break
    return rows
