"""generate_batch sorts the prompts by length (less padding) and returns the rows in that order."""
# symptom: row \d+ (differs|has \d+ ids|of generate_batch's result does not start)


def generate_batch(model, prompts, max_new_tokens, next_token=greedy, eos_id=None, use_cache=True):
    rows = sorted((list(prompt) for prompt in prompts), key=len)
    finished = [False] * len(rows)
    cache = KVCache() if use_cache else None
    with torch.no_grad():
        ids, key_mask, positions = left_pad([row[-model.config.block_size :] for row in rows])
        logits = model(ids, cache=cache, attend=attend, positions=positions, key_mask=key_mask)
        for _ in range(max_new_tokens):
            for i, row in enumerate(rows):
                if not finished[i]:
                    row.append(int(next_token(logits[i : i + 1, -1, :], torch.tensor([row])).reshape(-1)[0]))
                    finished[i] = row[-1] == eos_id
            if all(finished):
                break
            if use_cache and len(cache) < model.config.block_size:
                key_mask = torch.cat([key_mask, torch.ones(len(rows), 1, dtype=torch.bool)], dim=1)
                positions = positions[:, -1:] + 1
                newest = torch.tensor([[row[-1]] for row in rows])
                logits = model(newest, cache=cache, attend=attend, positions=positions, key_mask=key_mask)
            else:
                cache = KVCache() if use_cache else None
                ids, key_mask, positions = left_pad([row[-model.config.block_size :] for row in rows])
                logits = model(ids, cache=cache, attend=attend, positions=positions, key_mask=key_mask)
    return rows
