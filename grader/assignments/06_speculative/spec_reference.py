"""The hidden tests' reference for 06_speculative: the exact law of one round's verdict. The release leaves this file
out (only the hidden tests load it): the law spells out the accept/reject rule.

For a round whose drafts are sampled position by position from the rows q_j of `draft_probs` (each row fixed, as
in the tests, whatever was drafted before), draft j is kept with probability alpha_j = sum_x min(p_j(x), q_j(x)),
and a rejection at position i draws the next token from max(0, p_i - q_i) / (1 - alpha_i); after k kept drafts the
next token comes from p_k. So P(n_accepted = i, next_token = y) = alpha_0 ... alpha_{i-1} (1 - alpha_i) r_i(y)
for i < k, and alpha_0 ... alpha_{k-1} p_k(y) for i = k.
"""

from __future__ import annotations

import torch

from grader.testing import seeded


def round_law(target_probs: torch.Tensor, draft_probs: torch.Tensor) -> dict[tuple[int, int], float]:
    """{(n_accepted, next_token): probability} of one round (float64), for target_probs (k + 1, V), draft_probs (k, V)."""
    p, q = target_probs.double(), draft_probs.double()
    k = q.shape[0]
    law = {}
    reached = 1.0  # the probability that the first i drafts were all kept
    for i in range(k):
        kept = torch.minimum(p[i], q[i]).sum().item()
        residual = torch.clamp(p[i] - q[i], min=0.0)
        if residual.sum() > 0:
            for token, r in enumerate((residual / residual.sum()).tolist()):
                law[(i, token)] = reached * (1 - kept) * r
        reached *= kept
    for token, last in enumerate(p[k].tolist()):
        law[(k, token)] = reached * last
    return {outcome: probability for outcome, probability in law.items() if probability > 0}


def rows(seed: int, k: int, vocab: int, zeros: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded target_probs (k + 1, V) and draft_probs (k, V), float32, peaked enough that drafts are often rejected,
    each row with `zeros` tokens of probability 0 (so that some drafts are never kept and some tokens never drafted)."""
    g = seeded(seed)
    logits = torch.randn(2 * k + 1, vocab, generator=g) * 2.0
    for row in logits:
        row[torch.randperm(vocab, generator=g)[:zeros]] = float("-inf")
    probs = torch.softmax(logits, dim=-1)
    return probs[: k + 1], probs[k + 1 :]
