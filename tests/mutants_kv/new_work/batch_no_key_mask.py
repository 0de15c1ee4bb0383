"""generate_batch pads the prompts and numbers positions per row, but never passes the key mask."""
# symptom: without a key_mask


def generate_batch(model, prompts, max_new_tokens, next_token=greedy, eos_id=None, use_cache=True):
    rows = [list(prompt) for prompt in prompts]
    finished = [False] * len(rows)
    cache = KVCache() if use_cache else None
    with torch.no_grad():
        ids, _, positions = left_pad(rows)
        logits = model(ids, cache=cache, attend=attend, positions=positions)
        for _ in range(max_new_tokens):
            for i, row in enumerate(rows):
                if not finished[i]:
                    row.append(int(next_token(logits[i : i + 1, -1, :], torch.tensor([row])).reshape(-1)[0]))
                    finished[i] = row[-1] == eos_id
            if all(finished):
                break
            positions = positions[:, -1:] + 1
            logits = model(torch.tensor([[row[-1]] for row in rows]), cache=cache, attend=attend, positions=positions)
    return rows
