"""The course GPT: shapes, sizes, weight tying, the cache protocol (which every cache of the kit follows), and
instrumentation that costs nothing when off."""

from __future__ import annotations

import runpy

import pytest
import torch

from course import lens
from course.assignments import grading
from course.kit import ROOT
from course.model import GPT, GPTConfig, KVCacheProtocol, Probe, preset
from course.notebook import load_notebook
from grader.testing import helper_module

SMALL = GPTConfig(vocab_size=97, block_size=16, n_layer=3, n_head=2, n_embd=16)


class ListCache:
    """The simplest cache that follows the protocol: per layer, concatenate the new keys and values."""

    def __init__(self):
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}
        self.calls: list[tuple[int, tuple[int, ...]]] = []

    def update(self, layer, k, v):
        self.calls.append((layer, tuple(k.shape)))
        if layer in self.keys:
            k, v = torch.cat([self.keys[layer], k], dim=2), torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def __len__(self):
        return self.keys[0].size(2) if self.keys else 0


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(SMALL).eval()


def ids(batch: int, positions: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, SMALL.vocab_size, (batch, positions), generator=torch.Generator().manual_seed(seed))


def test_logits_have_shape_batch_positions_vocab_and_are_float32(model):
    logits = model(ids(2, 7))
    assert logits.shape == (2, 7, SMALL.vocab_size)
    assert logits.dtype == torch.float32


@pytest.mark.parametrize("name, low, high", [("tiny", 1.6e6, 2.0e6), ("laptop", 5e6, 7e6), ("course", 30e6, 40e6)])
def test_preset_parameter_counts(name, low, high):
    """With each preset's own vocabulary (the course model has 30M-40M parameters)."""
    from course.train import PRESET_DEFAULTS

    config = preset(name, PRESET_DEFAULTS[name]["vocab_size"])
    with torch.device("meta"):  # counts without allocating
        model = GPT(config)
    assert low <= model.num_params() <= high


def test_unembedding_is_tied_to_the_embedding(model):
    assert model.lm_head.weight is model.transformer.wte.weight
    model(ids(1, 4)).sum().backward()
    assert model.transformer.wte.weight.grad is not None


def test_positions_past_the_context_length_raise(model):
    with pytest.raises(ValueError, match="context length 16"):
        model(ids(1, SMALL.block_size + 1))


def test_cache_gives_the_full_forward_logits_chunk_by_chunk(model):
    """fp32, within 1e-5: the prompt, then one position, then three at once, then one."""
    sequence = ids(2, 12)
    full = model(sequence)
    cache = ListCache()
    pieces = [(0, 7), (7, 8), (8, 11), (11, 12)]
    for start, end in pieces:
        assert len(cache) == start
        logits = model(sequence[:, start:end], cache=cache)
        torch.testing.assert_close(logits, full[:, start:end], atol=1e-5, rtol=0)
    head_dim = SMALL.n_embd // SMALL.n_head
    assert [layer for layer, _ in cache.calls] == list(range(SMALL.n_layer)) * len(pieces)
    assert cache.calls[0][1] == (2, SMALL.n_head, 7, head_dim)
    assert cache.calls[-1][1] == (2, SMALL.n_head, 1, head_dim)


def kit_caches() -> dict[str, object]:
    """One instance of every cache the kit hands to the model, by where it lives."""
    with_cache = grading(["KVCache"])
    solution = load_notebook(with_cache.solution).namespace
    kv = helper_module(with_cache.folder / "kv_support.py", "kv_support.py")
    bench = runpy.run_path(str(ROOT / "bench" / "decode.py"))  # defines the benchmark's names, runs nothing
    return {
        "tests ListCache": ListCache(),
        "the solution's KVCache": solution["KVCache"](),
        "kv_support CacheSpy": kv.CacheSpy(ListCache(), kv.Forward(index=0), {}, block_size=SMALL.block_size),
        "lens RecordingCache": lens.RecordingCache(),
        "lens SubstitutingCache": lens.SubstitutingCache(),
        "bench CatCache": bench["CatCache"](),
    }


def test_every_cache_of_the_kit_follows_the_protocol():
    caches = kit_caches()
    assert [name for name, cache in caches.items() if not isinstance(cache, KVCacheProtocol)] == []
    assert not isinstance([], KVCacheProtocol)  # a length without update() is not a cache


def test_a_full_cache_refuses_more_positions(model):
    cache = ListCache()
    model(ids(1, SMALL.block_size), cache=cache)
    with pytest.raises(ValueError, match="do not fit"):
        model(ids(1, 1), cache=cache)


def test_instrumentation_off_gives_bit_identical_logits(model):
    sequence = ids(2, 9)
    plain = model(sequence)
    model.probe = Probe()  # attached but nothing switched on
    assert torch.equal(model(sequence), plain)
    model.probe = Probe(record=True)
    assert torch.equal(model(sequence), plain)
    assert [site for site, _ in model.probe.residuals] == [
        f"{kind} {layer}" for layer in range(SMALL.n_layer) for kind in ("attn", "mlp")
    ]
    assert all(x.shape == (2, 9, SMALL.n_embd) for _, x in model.probe.residuals)
    model.probe = None
    assert torch.equal(model(sequence), plain)


def test_interventions_change_the_logits(model):
    sequence = ids(1, 6)
    plain = model(sequence)
    model.probe = Probe(ablate_heads={1: [0]})
    assert not torch.allclose(model(sequence), plain)
    bias = torch.zeros(SMALL.vocab_size)
    bias[5] = 3.0
    model.probe = Probe(logit_bias=bias)
    torch.testing.assert_close(model(sequence), plain + bias, atol=1e-6, rtol=0)
    model.probe = Probe(noise_std=0.1, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(model(sequence), plain)


def test_dropout_is_exactly_a_no_op_in_eval_mode_and_at_zero(model):
    """At p = 0 training mode changes nothing (and draws no random numbers); in eval mode no p changes anything."""
    sequence, targets = ids(2, 9), ids(2, 9, seed=2)
    plain, plain_loss = model(sequence), model(sequence, targets=targets)
    model.train()
    rng = torch.get_rng_state()
    assert torch.equal(model(sequence), plain) and torch.equal(model(sequence, targets=targets), plain_loss)
    assert torch.equal(torch.get_rng_state(), rng)
    with_dropout = GPT(GPTConfig(**{**SMALL.to_dict(), "dropout": 0.3}))
    with_dropout.load_state_dict(model.state_dict())
    assert torch.equal(with_dropout.eval()(sequence), plain)


def test_dropout_in_training_drops_embeddings_attention_weights_and_residual_branches(model):
    """GPT-2's places: after wte + wpe, on the attention weights (inside the attention step), after each c_proj."""
    config = GPTConfig(**{**SMALL.to_dict(), "dropout": 0.5})
    dropped = GPT(config).train()
    dropped.load_state_dict(model.state_dict())
    zeroed = {}
    for name, module in dropped.named_modules():
        if isinstance(module, torch.nn.Dropout):
            module.register_forward_hook(
                lambda m, i, out, name=name: zeroed.__setitem__(name, (out == 0).float().mean())
            )
    attention_calls = []

    def attend(q, k, v, key_mask, **options):
        attention_calls.append(options)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, **options)

    sequence = ids(4, 16)
    torch.manual_seed(0)
    first = dropped(sequence, attend=attend)
    expected_sites = ["transformer.drop"] + [
        f"transformer.h.{layer}.{site}"
        for layer in range(SMALL.n_layer)
        for site in ("attn.resid_dropout", "mlp.dropout")
    ]
    assert sorted(zeroed) == sorted(expected_sites)
    assert all(0.4 <= fraction <= 0.6 for fraction in zeroed.values()), zeroed  # half of 1,024 values, +- 10%
    assert attention_calls == [{"dropout_p": 0.5}] * SMALL.n_layer
    torch.manual_seed(0)
    assert torch.equal(dropped(sequence, attend=attend), first)  # the masks come from torch's generator
    assert not torch.equal(dropped(sequence, attend=attend), first)
    attention_calls.clear()
    assert torch.equal(dropped.eval()(sequence, attend=attend), model(sequence))
    assert attention_calls == [{}] * SMALL.n_layer
