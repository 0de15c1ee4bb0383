"""beam search never lets a beam end: it removes eos_id from every candidate list, so nothing is ever finished"""

# symptom: finished|eos_id

_solution_beam_search = beam_search


def beam_search(model, prompt_ids, beam_width, max_new_tokens, eos_id=None):
    if eos_id is None:
        return _solution_beam_search(model, prompt_ids, beam_width, max_new_tokens)
    if beam_width < 1:
        raise ValueError("beam_width must be at least 1")
    sequences, scores = prompt_ids, torch.zeros(1)
    for _ in range(max_new_tokens):
        logits = model(sequences[:, -model.config.block_size :])[:, -1, :]
        candidates = scores[:, None] + torch.log_softmax(logits.float(), dim=-1)
        candidates[:, eos_id] = -math.inf  # a finished sequence leaves the search
        vocab = candidates.shape[-1]
        best = torch.topk(candidates.flatten(), min(beam_width, int(torch.isfinite(candidates).sum())))
        sequences = torch.cat([sequences[best.indices // vocab], (best.indices % vocab)[:, None]], dim=1)
        scores = best.values
    return sequences[int(scores.argmax())][None, :]
