"""The fused training loss equals PyTorch's cross-entropy through the unembedding, in value and in gradient."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from course.loss import ROWS_PER_CHUNK, linear_cross_entropy, token_nll_
from course.model import GPT, GPTConfig

RTOL = 1e-5  # fp32: the fused loss sums the same terms in another order; gradients: 1e-5 of their largest entry


def reference_and_fused(n: int, vocab: int = 300, width: int = 16):
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(n, width, generator=gen) * 3
    weight = torch.randn(vocab, width, generator=gen)
    targets = torch.randint(0, vocab, (n,), generator=gen)
    results = []
    for fn in (lambda a, w: F.cross_entropy(a @ w.T, targets), lambda a, w: linear_cross_entropy(a, w, targets)):
        a, w = x.clone().requires_grad_(), weight.clone().requires_grad_()
        loss = fn(a, w)
        (2.5 * loss).backward()  # a scale on the way back, as gradient accumulation applies
        results.append((loss.detach(), a.grad, w.grad))
    return results


def test_loss_and_gradients_match_cross_entropy():
    for n in (1, ROWS_PER_CHUNK, 3 * ROWS_PER_CHUNK + 5):  # one row, one chunk, a ragged last chunk
        (loss, grad_x, grad_w), (fused, fused_x, fused_w) = reference_and_fused(n)
        torch.testing.assert_close(fused, loss, rtol=RTOL, atol=0)
        for fused_grad, grad in ((fused_x, grad_x), (fused_w, grad_w)):
            torch.testing.assert_close(fused_grad, grad, rtol=0, atol=RTOL * grad.abs().max().item())


def test_without_gradients_it_is_the_plain_loss():
    x, weight, targets = torch.randn(7, 4), torch.randn(11, 4), torch.randint(0, 11, (7,))
    with torch.no_grad():
        assert linear_cross_entropy(x, weight, targets).item() == F.cross_entropy(x @ weight.T, targets).item()


def test_the_model_with_targets_returns_the_loss_of_its_logits():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, n_embd=8))
    idx, targets = torch.randint(0, 50, (3, 8)), torch.randint(0, 50, (3, 8))
    logits = model(idx)
    expected = F.cross_entropy(logits.view(-1, 50), targets.view(-1))
    torch.testing.assert_close(model(idx, targets=targets), expected, rtol=RTOL, atol=0)


def test_token_nll_is_each_rows_cross_entropy():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2 * ROWS_PER_CHUNK + 3, 40, generator=gen) * 20  # large logits: the max is subtracted
    targets = torch.randint(0, 40, (len(logits),), generator=gen)
    expected = F.cross_entropy(logits, targets, reduction="none")
    # absolute 1e-4: max + log(sum) - target cancels to ~0 where the target is the max, and fp32 steps at 60 are 4e-6
    torch.testing.assert_close(token_nll_(logits.clone(), targets), expected, rtol=RTOL, atol=1e-4)
