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

from course.loss import linear_cross_entropy


@dataclass
class GPTConfig:
    vocab_size: int = 24576
    block_size: int = 128  # the context length
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 64
    dropout: float = 0.0  # training only: embeddings, attention weights and both residual branches (GPT-2's places)

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    # ~1.8M parameters (1.6M of them the 24k-token embedding): trains on 2 CPU cores in under 3 minutes.
    "tiny": dict(block_size=128, n_layer=4, n_head=4, n_embd=64),
    # ~5.9M parameters: the best text 30 minutes of a 2-core laptop CPU buy (bench/RESULTS.md).
    "laptop": dict(block_size=256, n_layer=6, n_head=6, n_embd=192),
    # ~35M parameters: the lecture's model, trained on a GPU.
    "course": dict(block_size=1024, n_layer=9, n_head=8, n_embd=512),
}


def preset(name: str, vocab_size: int) -> GPTConfig:
    return GPTConfig(vocab_size=vocab_size, **PRESETS[name])


@runtime_checkable
class KVCacheProtocol(Protocol):
    """What the model asks of a KV cache (docs/assignments.md, the KV cache assignment); every cache in the kit has this shape.

    `model(idx, cache=cache)` reads `len(cache)` once, at the start of the forward, and numbers the new
    positions from it. Attention layer `l` then calls `cache.update(l, k, v)` with the new positions' keys
    and values, shape (batch, heads, new_positions, head_dim), and attends over the keys and values it
    returns: every position of that layer so far, oldest first, along dim 2. So `len(cache)` must be the
    number of cached positions, and each layer's keys and values must be kept apart.
    """

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def __len__(self) -> int: ...


class AttendFunction(Protocol):
    """The attention step, `attend(q, k, v, key_mask) -> y` (docs/assignments.md; `causal_attention` is the library's).

    q: (batch, heads, T, head_dim), the queries of T new positions that come after S - T cached ones
    k, v: (batch, heads, S, head_dim), the keys and values of all S positions, oldest first
    key_mask: None, or (batch, S) bool, False at keys no query may see (the padding of a batch)
    returns y: (batch, heads, T, head_dim), softmax(q k^T / sqrt(head_dim)) v where new query i sees the keys
    0 .. S - T + i that key_mask allows. A query that may see no key at all (a padding position) gets any
    finite output.
    Only a model in training mode with `dropout` > 0 also passes `dropout_p=`, as `causal_attention` takes it.
    """

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None, /): ...


def causal_attention(q, k, v, key_mask=None, dropout_p=0.0):
    """The library's `AttendFunction`: PyTorch's fused attention (a query that sees no key gets zeros).

    dropout_p: the probability of dropping each attention weight (training's attention dropout; 0 in eval)."""
    T, S = q.size(2), k.size(2)
    if key_mask is None and T == S:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)
    if key_mask is None and T == 1:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)  # the newest position sees everything
    # T new queries after S - T cached positions: query i sees keys 0 .. S - T + i (and none that key_mask hides)
    mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)
    if key_mask is not None:
        mask = mask & key_mask[:, None, None, :]  # (batch, 1, T, S): the same for every head
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


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
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x,
        layer: int,
        cache: KVCacheProtocol | None = None,
        probe: Probe | None = None,
        attend: AttendFunction = causal_attention,
        key_mask: torch.Tensor | None = None,
    ):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, heads, T, head_dim)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            # The keys and values of earlier positions do not change: keep them, attend over all.
            k, v = cache.update(layer, k, v)
        if self.training and self.dropout > 0:
            y = attend(q, k, v, key_mask, dropout_p=self.dropout)  # attention dropout, in training only
        else:
            y = attend(q, k, v, key_mask)
        if probe is not None and layer in probe.ablate_heads:
            keep = torch.ones(self.n_head, 1, 1, dtype=y.dtype, device=y.device)
            keep[probe.ablate_heads[layer]] = 0
            y = y * keep  # a head's output before c_proj, zeroed
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x, layer: int, cache=None, probe=None, attend=causal_attention, key_mask=None):
        x = x + self.attn(self.ln_1(x), layer, cache, probe, attend, key_mask)
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
                drop=nn.Dropout(config.dropout),
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

    def forward(
        self,
        idx: torch.Tensor,
        cache: KVCacheProtocol | None = None,
        attend: AttendFunction | None = None,
        positions: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """ids (batch, positions) -> logits (batch, positions, vocab); with `targets` (the next ids, same shape as
        `idx`), training's mean cross-entropy instead, computed without keeping every logit (course/loss.py).

        With a cache (see `KVCacheProtocol`), positions are numbered from len(cache) and every
        attention layer calls cache.update(layer, k, v) and attends over what it returns.
        A batch of prompts of different lengths gives each row its own `positions` (batch, T)
        and a `key_mask` (batch, len(cache) + T), False at padding; `attend` replaces the attention step.
        """
        B, T = idx.shape
        start = len(cache) if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(
                f"positions {start}..{start + T - 1} do not fit the context length {self.config.block_size}"
            )
        if positions is None:
            positions = torch.arange(start, start + T, dtype=torch.long, device=idx.device)
        else:
            self._check_batch_argument("positions", positions, (B, T), torch.long)
            if not bool(((positions >= 0) & (positions < self.config.block_size)).all()):
                raise ValueError(f"positions must lie in 0..{self.config.block_size - 1} (the context length)")
        if key_mask is not None:
            self._check_batch_argument("key_mask", key_mask, (B, start + T), torch.bool)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(positions))
        for layer, block in enumerate(self.transformer.h):
            x = block(x, layer, cache, self.probe, attend or causal_attention, key_mask)
        x = self.transformer.ln_f(x)
        if targets is not None:
            return linear_cross_entropy(x.flatten(0, 1), self.lm_head.weight, targets.flatten())
        logits = self.lm_head(x)
        if self.probe is not None and self.probe.logit_bias is not None:
            logits = logits + self.probe.logit_bias
        return logits.float()

    @staticmethod
    def _check_batch_argument(name: str, value, shape: tuple[int, int], dtype: torch.dtype) -> None:
        if type(value) is not torch.Tensor or value.shape != shape or value.dtype != dtype:
            is_tensor = isinstance(value, torch.Tensor)
            what = f"a {value.dtype} tensor of shape {tuple(value.shape)}" if is_tensor else f"a {type(value).__name__}"
            raise ValueError(f"{name} must be a {dtype} tensor of shape {shape}, not {what}")
