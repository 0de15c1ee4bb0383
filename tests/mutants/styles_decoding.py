"""Correct 05_decoding implementations in other styles than the solution: they must score 100%.

A beam search over Python lists with `heapq.nlargest` (one model call per beam, float64 scores, finished
beams kept as (score, tokens) pairs), metrics written with `collections.Counter`, `zip` for n-grams and
numpy for the Zipf fit, helpers in cells of their own, the imports last.
"""

from __future__ import annotations

from mutants.harness import notebook_from_cells

HEAP_COUNTER_05 = [
    """
def beam_search(model, prompt_ids, beam_width, max_new_tokens, eos_id=None):
    if beam_width < 1:
        raise ValueError("beam_width must be >= 1")
    prompt = prompt_ids[0].tolist()
    beams = [(0.0, [])]
    for _ in range(max_new_tokens):
        if all(_finished(new, eos_id) for _, new in beams):
            break
        pool = []
        for score, new in beams:
            if _finished(new, eos_id):
                pool.append((score, new))
                continue
            context = torch.tensor([(prompt + new)[-model.config.block_size :]])
            log_probs = torch.log_softmax(model(context)[0, -1].float(), dim=-1).double().tolist()
            pool.extend((score + lp, new + [token]) for token, lp in enumerate(log_probs))
        beams = heapq.nlargest(beam_width, pool, key=lambda entry: entry[0])
    best = max(beams, key=lambda entry: entry[0])[1]
    return torch.tensor([prompt + best], dtype=torch.long)
""",
    """
def _finished(new, eos_id):
    return eos_id is not None and len(new) > 0 and new[-1] == eos_id
""",
    """
def _ngrams(sample, n):
    return zip(*(sample[i:] for i in range(n)))

def distinct_n(samples, n):
    if n < 1:
        raise ValueError("n >= 1")
    counts = Counter(gram for sample in samples for gram in _ngrams(list(sample), n))
    total = sum(counts.values())
    return len(counts) / total if total else 0.0
""",
    """
def zipf_coefficient(samples, top=5000):
    counts = Counter()
    for sample in samples:
        counts.update(sample)
    ys = np.array([c for _, c in counts.most_common(top)], dtype=float)
    xs = np.arange(1, len(ys) + 1, dtype=float)
    slope, _ = np.polyfit(np.log(xs), np.log(ys), 1)
    return float(-slope)
""",
    """
def _loop_at_end(tokens, longest=90):
    best_n, best_copies = 1, 1
    for n in range(1, longest + 1):
        copies = 1
        tail = tokens[len(tokens) - n :]
        while len(tokens) >= n * (copies + 1) and tokens[len(tokens) - n * (copies + 1) : len(tokens) - n * copies] == tail:
            copies += 1
        if copies > best_copies:
            best_n, best_copies = n, copies
    return best_copies > 1 and (best_n >= 3 or best_copies > 50)

def repetition(samples):
    flags = [_loop_at_end(list(s)) for s in samples]
    return sum(flags) / len(flags) if flags else 0.0
""",
    """
def perplexity(model, prompts, continuations):
    nll = []
    for prompt, continuation in zip(prompts, continuations):
        ids = torch.tensor([list(prompt) + list(continuation)])
        log_probs = torch.log_softmax(model(ids)[0].float(), dim=-1)
        for position, token in enumerate(continuation, start=len(prompt)):
            nll.append(-log_probs[position - 1, token].item())
    return float(np.exp(np.mean(nll)))
""",
    "import heapq\nfrom collections import Counter\n\nimport numpy as np\nimport torch",
]


def _heap_counter_05():
    return notebook_from_cells(HEAP_COUNTER_05)


DECODING_STYLES = {"heap-counter-numpy": _heap_counter_05}
