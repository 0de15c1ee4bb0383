"""The course GPT: a GPT-2-style decoder in plain PyTorch.

Reads top to bottom like the lecture: embeddings, then `n_layer` pre-LayerNorm blocks of
causal self-attention and an MLP, then a final LayerNorm and the (weight-tied) unembedding.
Module names follow GPT-2 (`wte`, `wpe`, `ln_1`, `c_attn`, `c_proj`, `ln_2`, `c_fc`, `ln_f`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    vocab_size: int = 24576
    block_size: int = 128  # the context length
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 64

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    # ~1.8M parameters (1.6M of them the 24k-token embedding): trains on 2 CPU cores in under 3 minutes.
    "tiny": dict(block_size=128, n_layer=4, n_head=4, n_embd=64),
    # ~4M parameters: the best text 30 minutes of a 2-core laptop CPU buy (bench/RESULTS.md).
    "laptop": dict(block_size=256, n_layer=6, n_head=6, n_embd=192),
    # ~35M parameters: the lecture's model, trained on a GPU.
    "course": dict(block_size=1024, n_layer=9, n_head=8, n_embd=512),
}


def preset(name: str, vocab_size: int) -> GPTConfig:
    return GPTConfig(vocab_size=vocab_size, **PRESETS[name])


@runtime_checkable
class KVCacheProtocol(Protocol):
    """What the model asks of a KV cache (SPEC 4 and 5.3); every cache in the kit has this shape.

    `model(idx, cache=cache)` reads `len(cache)` once, at the start of the forward, and numbers the new
    positions from it. Attention layer `l` then calls `cache.update(l, k, v)` with the new positions' keys
    and values, shape (batch, heads, new_positions, head_dim), and attends over the keys and values it
    returns: every position of that layer so far, oldest first, along dim 2. So `len(cache)` must be the
    number of cached positions, and each layer's keys and values must be kept apart.
    """

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def __len__(self) -> int: ...


@dataclass
class Probe:
    """Lecture instrumentation, attached as `model.probe`; `None` (the default) costs nothing.

    record:       keep the residual stream after every attention and every MLP block
    ablate_heads: {layer: [head, ...]} heads whose output is zeroed before `c_proj`
    noise_std:    standard deviation of Gaussian noise added to the residual stream after each block
    logit_bias:   a (vocab,) tensor added to the logits
    """

    record: bool = False
    ablate_heads: dict[int, list[int]] = field(default_factory=dict)
    noise_std: float = 0.0
    generator: torch.Generator | None = None
    logit_bias: torch.Tensor | None = None
    residuals: list[tuple[str, torch.Tensor]] = field(default_factory=list)

    def visit(self, site: str, x: torch.Tensor) -> torch.Tensor:
        if self.noise_std > 0:
            noise = torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
            x = x + self.noise_std * noise
        if self.record:
            self.residuals.append((site, x.detach()))
        return x


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # q, k, v for every head at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x, layer: int, cache: KVCacheProtocol | None = None, probe: Probe | None = None):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, heads, T, head_dim)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            # The keys and values of earlier positions do not change: keep them, attend over all.
            k, v = cache.update(layer, k, v)
        S = k.size(2)
        if T == S:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif T == 1:
            y = F.scaled_dot_product_attention(q, k, v)  # the newest position sees everything
        else:
            # T new queries after S - T cached positions: query i sees keys 0 .. S - T + i.
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        if probe is not None and layer in probe.ablate_heads:
            keep = torch.ones(self.n_head, 1, 1, dtype=y.dtype, device=y.device)
            keep[probe.ablate_heads[layer]] = 0
            y = y * keep  # a head's output before c_proj, zeroed
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x, layer: int, cache: KVCacheProtocol | None = None, probe: Probe | None = None):
        x = x + self.attn(self.ln_1(x), layer, cache, probe)
        if probe is not None:
            x = probe.visit(f"attn {layer}", x)
        x = x + self.mlp(self.ln_2(x))
        if probe is not None:
            x = probe.visit(f"mlp {layer}", x)
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                ln_f=nn.LayerNorm(config.n_embd),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying: unembedding = embedding^T
        self.probe: Probe | None = None
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2: residual projections scaled by depth
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied weights are counted once

    def forward(self, idx: torch.Tensor, cache: KVCacheProtocol | None = None) -> torch.Tensor:
        """ids (batch, positions) -> logits (batch, positions, vocab).

        With a cache (see `KVCacheProtocol`), positions are numbered from len(cache) and every
        attention layer calls cache.update(layer, k, v) and attends over what it returns.
        """
        B, T = idx.shape
        start = len(cache) if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(
                f"positions {start}..{start + T - 1} do not fit the context length {self.config.block_size}"
            )
        pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, layer, cache, self.probe)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)
        if self.probe is not None and self.probe.logit_bias is not None:
            logits = logits + self.probe.logit_bias
        return logits.float()
