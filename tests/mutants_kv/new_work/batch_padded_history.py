"""generate_batch calls next_token once for the whole batch, with the left-padded ids as the history."""
# symptom: history of \d+ rows


def generate_batch(model, prompts, max_new_tokens, next_token=greedy, eos_id=None, use_cache=True):
    rows = [list(prompt) for prompt in prompts]
    finished = torch.zeros(len(rows), dtype=torch.bool)
    cache = KVCache() if use_cache else None
    with torch.no_grad():
        ids, key_mask, positions = left_pad(rows)
        logits = model(ids, cache=cache, attend=attend, positions=positions, key_mask=key_mask)
        for _ in range(max_new_tokens):
            new = next_token(logits[:, -1, :], ids).reshape(-1)
            for i, row in enumerate(rows):
                if not finished[i]:
                    row.append(int(new[i]))
                    finished[i] = row[-1] == eos_id
            if finished.all():
                break
            ids = torch.cat([ids, new[:, None]], dim=1)
            key_mask = torch.cat([key_mask, torch.ones(len(rows), 1, dtype=torch.bool)], dim=1)
            positions = positions[:, -1:] + 1
            if use_cache:
                logits = model(new[:, None], cache=cache, attend=attend, positions=positions, key_mask=key_mask)
            else:
                full_positions = (key_mask.long().cumsum(dim=1) - 1).clamp(min=0)
                logits = model(ids, attend=attend, positions=full_positions, key_mask=key_mask)
    return rows
