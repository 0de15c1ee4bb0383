"""The lens tools on a small random-weight GPT (seeded): fast, no data, no checkpoint needed."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from course import lens
from course.model import GPT, GPTConfig

VOCAB = 50


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=VOCAB, block_size=32, n_layer=3, n_head=4, n_embd=32)).eval()
    # Random-init weights are near zero; make every block matter so that the tests can see effects.
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(40.0) if p.dim() > 1 else p.normal_(0.0, 0.1)
    return m


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(1))


def test_logit_lens_sites_and_shape(model, ids):
    sites, logits = lens.logit_lens(model, ids[0])
    assert sites == ["attn 0", "mlp 0", "attn 1", "mlp 1", "attn 2", "mlp 2"]
    assert logits.shape == (6, 12, VOCAB)
    sites, logits = lens.logit_lens(model, ids, include_embedding=True)
    assert sites[0] == "embed" and logits.shape == (7, 2, 12, VOCAB)


def test_logit_lens_last_stage_is_the_model_output(model, ids):
    # ln_f + lm_head on the recorded last residual is the same computation as the forward's tail:
    # equal up to float32 rounding (we allow 1e-5 absolute; in practice it is bit-identical).
    _, logits = lens.logit_lens(model, ids)
    with torch.no_grad():
        expected = model(ids)
    torch.testing.assert_close(logits[-1], expected, atol=1e-5, rtol=0)
    assert model.probe is None  # the probe is removed afterwards


def test_logit_lens_stages_differ(model, ids):
    _, logits = lens.logit_lens(model, ids[0])
    assert not torch.allclose(logits[0], logits[-1])


def test_ablating_every_head_zeroes_the_attention_output_before_c_proj(model, ids):
    # With every head of layer 1 zeroed, the attention block adds exactly c_proj(0) = c_proj.bias to the
    # residual: residual after 'attn 1' == residual after 'mlp 0' + bias (float32 addition, atol 1e-6).
    n_head = model.config.n_head
    with lens.ablate_heads(model, {1: range(n_head)}):
        sites, stream, _ = lens.residual_stream(model, ids)
    before, after = stream[sites.index("mlp 0")], stream[sites.index("attn 1")]
    bias = model.transformer.h[1].attn.c_proj.bias
    torch.testing.assert_close(after, before + bias, atol=1e-6, rtol=0)
    # ...while without ablation the block adds more than its bias
    sites, stream, _ = lens.residual_stream(model, ids)
    assert not torch.allclose(stream[sites.index("attn 1")], stream[sites.index("mlp 0")] + bias, atol=1e-3)
    assert model.probe is None


def test_ablating_one_head_changes_only_later_stages(model, ids):
    sites, base, _ = lens.residual_stream(model, ids)
    with lens.ablate_heads(model, {2: [0]}):
        _, ablated, _ = lens.residual_stream(model, ids)
    first_changed = sites.index("attn 2")
    assert torch.equal(base[:first_changed], ablated[:first_changed])
    assert not torch.allclose(base[first_changed], ablated[first_changed])


def test_ablate_heads_rejects_missing_heads(model):
    with pytest.raises(ValueError):
        lens.ablate_heads(model, {0: [model.config.n_head]})
    with pytest.raises(ValueError):
        lens.ablate_heads(model, {model.config.n_layer: [0]})


def test_nested_contexts_combine_and_restore(model, ids):
    with lens.ablate_heads(model, {0: [1]}):
        with lens.ablate_heads(model, {0: [2], 1: [0]}):
            assert model.probe.ablate_heads == {0: [1, 2], 1: [0]}
        assert model.probe.ablate_heads == {0: [1]}
    assert model.probe is None


def test_head_ablation_kl_table(model, ids):
    table = lens.head_ablation_kl(model, ids)
    assert table.shape == (model.config.n_layer, model.config.n_head)
    assert (table >= 0).all() and (table > 1e-4).any()
    # one entry recomputed by hand
    with torch.no_grad():
        p = F.log_softmax(model(ids), -1)
        with lens.ablate_heads(model, {1: [2]}):
            q = F.log_softmax(model(ids), -1)
    expected = (p.exp() * (p - q)).sum(-1).mean()
    assert table[1, 2].item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-7)


def test_noise_zero_and_bias_zero_change_nothing(model, ids):
    with torch.no_grad():
        base = model(ids)
        with lens.residual_noise(model, 0.0, generator=torch.Generator().manual_seed(0)):
            assert torch.equal(model(ids), base)
        with lens.logit_bias(model, torch.zeros(VOCAB)):
            assert torch.equal(model(ids), base)
        with lens.logit_bias(model, {}):
            assert torch.equal(model(ids), base)


def test_noise_is_seeded_and_grows_with_std(model, ids):
    with torch.no_grad():
        base = model(ids)
        outs = []
        for _ in range(2):
            with lens.residual_noise(model, 0.5, generator=torch.Generator().manual_seed(3)):
                outs.append(model(ids))
        assert torch.equal(outs[0], outs[1])
        with lens.residual_noise(model, 5.0, generator=torch.Generator().manual_seed(3)):
            big = model(ids)
    small_change = (outs[0] - base).abs().mean()
    assert 0 < small_change < (big - base).abs().mean()
    assert model.probe is None


def test_bias_moves_only_its_token(model, ids):
    token = 7
    with torch.no_grad():
        base = model(ids)
        with lens.logit_bias(model, {token: 3.0}):
            biased = model(ids)
    others = torch.arange(VOCAB) != token
    assert torch.equal(biased[..., others], base[..., others])
    torch.testing.assert_close(biased[..., token], base[..., token] + 3.0)


def test_token_ranks_argmax_gets_rank_one(model):
    prompt = torch.tensor([3, 14, 15, 9])
    with torch.no_grad():
        best = model(prompt[None])[0, -1].argmax()
        worst = model(prompt[None])[0, -1].argmin()
    ranks, bits = lens.token_ranks(model, torch.cat([prompt, best[None]]))
    assert ranks.shape == bits.shape == (4,)
    assert ranks[-1].item() == 1
    ranks, bits_worst = lens.token_ranks(model, torch.cat([prompt, worst[None]]))
    assert ranks[-1].item() == VOCAB
    assert bits_worst[-1] > bits[-1] > 0


def test_token_ranks_surprisal_matches_softmax(model, ids):
    ranks, bits = lens.token_ranks(model, ids)
    assert ranks.shape == bits.shape == (2, 11)
    assert ((ranks >= 1) & (ranks <= VOCAB)).all()
    with torch.no_grad():
        logp = F.log_softmax(model(ids[:, :-1]), -1)
    expected = -logp.gather(-1, ids[:, 1:, None]).squeeze(-1) / math.log(2)
    torch.testing.assert_close(bits, expected, atol=1e-5, rtol=1e-5)


def test_gltr_buckets():
    assert [lens.gltr_bucket(r) for r in (1, 10, 11, 100, 101, 1000, 1001, 10**6)] == [0, 0, 1, 1, 2, 2, 3, 3]
    fractions = lens.gltr_buckets(torch.tensor([1, 5, 10, 11, 100, 500, 1001, 20000]))
    assert fractions == {"top 10": 3 / 8, "top 100": 2 / 8, "top 1000": 1 / 8, "beyond": 2 / 8}
    assert sum(fractions.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        lens.gltr_buckets(torch.tensor([0, 1]))


def test_entropy_bits():
    assert lens.entropy_bits(torch.zeros(8)).item() == pytest.approx(3.0)
    assert lens.entropy_bits(torch.tensor([0.0, 0.0, -float("inf")])).item() == pytest.approx(1.0)  # removed tokens
    assert lens.kl_divergence(torch.tensor([0.0, -float("inf")]), torch.zeros(2)).item() == pytest.approx(math.log(2))
    certain = torch.tensor([100.0, 0.0, 0.0, 0.0])
    assert lens.entropy_bits(certain).item() == pytest.approx(0.0, abs=1e-6)


def test_lens_ranks(model, ids):
    sites, current, following = lens.lens_ranks(model, ids)
    assert sites[0] == "embed"
    assert current.shape == following.shape == (len(sites), 2, 11)
    _, logits = lens.logit_lens(model, ids, include_embedding=True)
    stage, b, t = 3, 1, 4
    expected = (logits[stage, b, t] > logits[stage, b, t, ids[b, t + 1]]).sum() + 1
    assert following[stage, b, t] == expected


def test_kv_substitution_without_layers_is_the_plain_loss(model, ids):
    with torch.no_grad():
        logits = model(ids[:, :-1])
    plain = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()).item()
    assert lens.kv_substitution_loss(model, ids, layers=()) == pytest.approx(plain, rel=1e-5)
    # substituting a layer's keys and values by those the same input produces changes nothing either
    same = lens.kv_substitution_loss(model, ids, layers=(1, 2), source=ids[:, :-1])
    assert same == pytest.approx(plain, rel=1e-5)


def test_kv_substitution_changes_the_loss_without_leaking(model, ids):
    plain = lens.kv_substitution_loss(model, ids, layers=())
    swapped = lens.kv_substitution_loss(model, ids, layers=(1, 2))
    assert abs(swapped - plain) > 1e-3
    # the first position has nothing in the past: its prediction is untouched
    first = ids[:, :2]
    assert lens.kv_substitution_loss(model, first, layers=(1, 2)) == pytest.approx(
        lens.kv_substitution_loss(model, first, layers=()), rel=1e-6
    )


def test_embedding_substitution_at_alpha_zero_is_the_plain_loss(model, ids):
    plain = lens.kv_substitution_loss(model, ids, layers=())
    assert lens.embedding_substitution_loss(model, ids, from_layer=2, alpha=0.0) == pytest.approx(plain, rel=1e-5)
    assert model.probe is None


def test_embedding_substitution_changes_the_loss_without_leaking(model, ids):
    plain = lens.kv_substitution_loss(model, ids, layers=())
    replaced = lens.embedding_substitution_loss(model, ids, from_layer=1, alpha=1.0)
    assert abs(replaced - plain) > 1e-3
    # the first prediction has no past to replace; the second's past is position 0 only
    first = ids[:, :2]
    assert lens.embedding_substitution_loss(model, first, from_layer=1) == pytest.approx(
        lens.kv_substitution_loss(model, first, layers=()), rel=1e-6
    )
    # No leak: the last position's prediction must not depend on the last token (its own target). One row per
    # token x of the vocabulary, ending in x: if the prediction is the same in every row, exp(-cross-entropy) at
    # the last target, summed over the rows, is its total probability, 1 (float32: 1e-4).
    rows = ids[:1].repeat(VOCAB, 1)
    rows[:, -1] = torch.arange(VOCAB)
    last = lens.embedding_substitution_loss(model, rows, from_layer=1, reduction="none")[:, -1]
    assert last.neg().exp().sum().item() == pytest.approx(1.0, abs=1e-4)
    assert last.std() > 0.1  # ...and the rows do differ: the prediction is not uniform


def test_embedding_substitution_rejects_bad_settings(model, ids):
    with pytest.raises(ValueError, match="from_layer"):
        lens.embedding_substitution_loss(model, ids, from_layer=0)
    with pytest.raises(ValueError, match="alpha"):
        lens.embedding_substitution_loss(model, ids, from_layer=1, alpha=1.5)


def test_sampling_with_embedding_substitution(model):
    from course.generation import generate

    prompt = torch.tensor([[3]])

    def greedy(logits, history):
        return logits.argmax(-1)

    plain = generate(model, prompt, 8, greedy)
    assert torch.equal(
        lens.sample_with_embedding_substitution(model, prompt, 8, greedy, from_layer=1, alpha=0.0), plain
    )
    replaced = lens.sample_with_embedding_substitution(model, prompt, 8, greedy, from_layer=1, alpha=1.0)
    # the first new token has no earlier position to change; later ones do (this seeded model changes course)
    assert replaced.shape == plain.shape and torch.equal(replaced[:, :2], plain[:, :2])
    assert not torch.equal(replaced, plain)
