"""beam search adds raw logits instead of log-probabilities (no log_softmax)"""

# symptom: log_softmax|most likely|should return


def beam_search(model, prompt_ids, beam_width, max_new_tokens, eos_id=None):
    if beam_width < 1:
        raise ValueError(f"beam_width must be at least 1, got {beam_width}")
    block_size = model.config.block_size
    sequences = prompt_ids
    scores = torch.zeros(1)
    finished = torch.zeros(1, dtype=torch.bool)
    for _ in range(max_new_tokens):
        if bool(finished.all()):
            break
        logits = model(sequences[:, -block_size:])[:, -1, :]
        candidates = scores[:, None] + logits.float()
        if eos_id is not None:
            candidates[finished] = -math.inf
            candidates[finished, eos_id] = scores[finished]
        vocab = candidates.shape[-1]
        kept = min(beam_width, int(torch.isfinite(candidates).sum()))
        best = torch.topk(candidates.flatten(), kept)
        beam, token = best.indices // vocab, best.indices % vocab
        sequences = torch.cat([sequences[beam], token[:, None]], dim=1)
        scores = best.values
        finished = finished[beam] | (token == eos_id) if eos_id is not None else finished[beam]
    ids = sequences[int(scores.argmax())]
    new = ids[prompt_ids.shape[1] :]
    if eos_id is not None and bool((new == eos_id).any()):
        new = new[: int((new == eos_id).nonzero()[0]) + 1]
    return torch.cat([prompt_ids[0], new])[None, :]
