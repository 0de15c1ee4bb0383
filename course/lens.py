"""Lens tools: look inside the course GPT while it predicts, and poke it.

Everything here goes through the model's own instrumentation (`course.model.Probe`, attached as
`model.probe`) or through the cache interface of `GPT.forward`; nothing reaches into private state.

- `logit_lens`: apply the final LayerNorm and the unembedding to the residual stream after every
  attention and MLP block ("what would the model say if it stopped here?").
- `instrument`, `ablate_heads`, `residual_noise`, `logit_bias`: context managers that attach a probe for
  the duration of a `with` block and put the previous one back afterwards. They nest: an inner one
  keeps the outer one's settings and adds its own.
- `head_ablation_kl`: the KL divergence that zeroing each head (before `c_proj`) causes.
- `token_ranks`, `gltr_buckets`: GLTR (Gehrmann et al. 2019): each token's rank under the model and its
  surprisal in bits, bucketed into ranks 1-10, 11-100, 101-1000 and beyond.
- `entropy_bits`: entropy of next-token distributions.
- `lens_ranks`, `kv_substitution_loss`, `embedding_substitution_loss`, `sample_with_embedding_substitution`:
  the "do late layers only hold a guess of the next token?" experiments (the last two replace, or interpolate,
  the late activations of earlier positions by the true next token's embedding, on text and while sampling).

All functions run under `torch.no_grad()` and accept ids of shape `(positions,)` or `(batch, positions)`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterable, Iterator, Mapping

import torch
import torch.nn.functional as F

from course.model import GPT, Probe

LOG2E = 1.0 / math.log(2.0)

# GLTR's buckets: (label, lowest rank, highest rank), rank 1 = the model's most likely token.
GLTR_BUCKETS = (("top 10", 1, 10), ("top 100", 11, 100), ("top 1000", 101, 1000), ("beyond", 1001, math.inf))
# GLTR's colours for those buckets: green, yellow, red, purple.
GLTR_COLORS = ("#6fdc6f", "#ffe066", "#ff8080", "#c9a0f0")


def _as_batch(ids) -> tuple[torch.Tensor, bool]:
    """(positions,) or (batch, positions) ids -> a (batch, positions) LongTensor and whether it was 1-D."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    if ids.dim() == 1:
        return ids.unsqueeze(0), True
    if ids.dim() != 2:
        raise ValueError(f"ids must have shape (positions,) or (batch, positions), got {tuple(ids.shape)}")
    return ids, False


def _device(model: GPT) -> torch.device:
    return model.transformer.wte.weight.device


# --------------------------------------------------------------------------------------------------
# Instrumentation as context managers


@contextlib.contextmanager
def instrument(model: GPT, **settings) -> Iterator[Probe]:
    """Attach a probe with `settings` (Probe's fields) on top of the current one; restore it on exit.

    >>> with instrument(model, record=True) as probe:
    ...     model(ids)
    >>> [site for site, _ in probe.residuals]   # ['attn 0', 'mlp 0', 'attn 1', ...]
    """
    previous = model.probe
    base = previous if previous is not None else Probe()
    merged = dict(settings)
    if "ablate_heads" in settings:  # nested ablations add up
        heads = {layer: list(h) for layer, h in base.ablate_heads.items()}
        for layer, h in settings["ablate_heads"].items():
            heads[int(layer)] = sorted(set(heads.get(int(layer), [])) | {int(x) for x in h})
        merged["ablate_heads"] = heads
    if "logit_bias" in settings and base.logit_bias is not None and settings["logit_bias"] is not None:
        merged["logit_bias"] = base.logit_bias + settings["logit_bias"]
    probe = dataclasses.replace(base, residuals=[], **merged)
    model.probe = probe
    try:
        yield probe
    finally:
        model.probe = previous


def ablate_heads(model: GPT, heads: Mapping[int, Iterable[int]]):
    """Context manager: inside it, the given heads' outputs are zeroed before `c_proj`.

    `heads` maps a layer to the heads to remove there, e.g. `{2: [0, 3]}`. Only the heads' own
    outputs are removed: `c_proj`'s bias still reaches the residual stream.
    """
    config = model.config
    for layer, hs in heads.items():
        if not 0 <= int(layer) < config.n_layer:
            raise ValueError(f"layer {layer} does not exist (the model has {config.n_layer})")
        for h in hs:
            if not 0 <= int(h) < config.n_head:
                raise ValueError(f"head {h} does not exist (each layer has {config.n_head})")
    return instrument(model, ablate_heads={int(layer): list(hs) for layer, hs in heads.items()})


def residual_noise(model: GPT, std: float, generator: torch.Generator | None = None):
    """Context manager: Gaussian noise of standard deviation `std` added to the residual stream after
    every attention and MLP block. `std = 0` leaves the model exactly as it was."""
    if std < 0:
        raise ValueError(f"std must be >= 0, got {std}")
    return instrument(model, noise_std=float(std), generator=generator)


def make_logit_bias(vocab_size: int, bias: Mapping[int, float]) -> torch.Tensor:
    """A (vocab,) tensor that is 0 everywhere except at the given token ids."""
    out = torch.zeros(vocab_size)
    for token, value in bias.items():
        out[int(token)] = float(value)
    return out


def logit_bias(model: GPT, bias: Mapping[int, float] | torch.Tensor):
    """Context manager: add `bias` to the logits, either a (vocab,) tensor or `{token_id: value}`
    (OpenAI's `logit_bias`). Every other token's logit is left untouched."""
    if not isinstance(bias, torch.Tensor):
        bias = make_logit_bias(model.config.vocab_size, bias)
    if bias.shape != (model.config.vocab_size,):
        raise ValueError(f"a logit bias has shape ({model.config.vocab_size},), got {tuple(bias.shape)}")
    return instrument(model, logit_bias=bias.to(_device(model), torch.float32))


# --------------------------------------------------------------------------------------------------
# The logit lens


def unembed(model: GPT, residual: torch.Tensor) -> torch.Tensor:
    """What the model would output if the residual stream stopped here: ln_f, then the unembedding."""
    return model.lm_head(model.transformer.ln_f(residual)).float()


@torch.no_grad()
def residual_stream(model: GPT, ids, include_embedding: bool = False):
    """Sites and residual stream `(stages, batch, positions, n_embd)` after every attention and MLP block
    (and, with `include_embedding`, the token + position embedding first, as site 'embed'), plus the
    model's logits `(batch, positions, vocab)`."""
    ids, _ = _as_batch(ids)
    ids = ids.to(_device(model))
    with instrument(model, record=True) as probe:
        logits = model(ids)
    sites = [site for site, _ in probe.residuals]
    stream = [x for _, x in probe.residuals]
    if include_embedding:
        pos = torch.arange(ids.size(1), device=ids.device)
        sites.insert(0, "embed")
        stream.insert(0, model.transformer.wte(ids) + model.transformer.wpe(pos))
    return sites, torch.stack(stream), logits


@torch.no_grad()
def logit_lens(model: GPT, ids, include_embedding: bool = False) -> tuple[list[str], torch.Tensor]:
    """The logit lens: `(sites, logits)` with logits of shape `(stages, positions, vocab)` for 1-D ids
    (`(stages, batch, positions, vocab)` for a batch). Stage `s` is ln_f + unembedding applied to the
    residual stream after block `sites[s]` ('attn 0', 'mlp 0', 'attn 1', ..., 'mlp L-1'). The last
    stage is the model's own output (without any logit bias)."""
    ids, squeeze = _as_batch(ids)
    sites, stream, _ = residual_stream(model, ids, include_embedding)
    logits = unembed(model, stream)
    return sites, (logits[:, 0] if squeeze else logits)


def ranks_of(logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """Rank of `token_ids` under `logits` (vocab last): 1 + how many tokens have a strictly larger logit.
    Ties count in the token's favour, so the argmax always has rank 1."""
    chosen = logits.gather(-1, token_ids.unsqueeze(-1))
    return (logits > chosen).sum(-1) + 1


def lens_table(model: GPT, ids, position: int = -1, k: int = 5, tokens: Iterable[int] | None = None):
    """For one position: the final top-`k` tokens (or the given `tokens`) and their logit and rank
    after every block. Returns `(sites, token_ids, logits (stages, n), ranks (stages, n), all_logits (stages, vocab))`."""
    sites, lens = logit_lens(model, ids)
    if lens.dim() != 3:
        raise ValueError("lens_table takes the ids of one sequence")
    at = lens[:, position]  # (stages, vocab)
    if tokens is None:
        token_ids = at[-1].topk(k).indices
    else:
        token_ids = torch.as_tensor(list(tokens), dtype=torch.long, device=at.device)
    chosen = at[:, token_ids]
    ranks = ranks_of(at.unsqueeze(1).expand(-1, len(token_ids), -1), token_ids.expand(at.size(0), -1))
    return sites, token_ids, chosen, ranks, at


# --------------------------------------------------------------------------------------------------
# Interventions


def kl_divergence(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) in nats between softmax(logits_p) and softmax(logits_q), over the last dimension."""
    logp = F.log_softmax(logits_p.float(), dim=-1)
    logq = F.log_softmax(logits_q.float(), dim=-1)
    p = logp.exp()
    return torch.where(p > 0, p * (logp - logq), 0.0).sum(-1)  # 0 * log 0 = 0 (removed tokens)


@torch.no_grad()
def head_ablation_kl(model: GPT, ids, position: int | None = None) -> torch.Tensor:
    """`(n_layer, n_head)`: KL(original || ablated), in nats, of the next-token distribution when one
    head's output is zeroed before `c_proj`. Averaged over every position (and sequence) of `ids`, or
    taken at one `position` only."""
    ids, _ = _as_batch(ids)
    ids = ids.to(_device(model))
    base = model(ids)
    table = torch.zeros(model.config.n_layer, model.config.n_head)
    for layer in range(model.config.n_layer):
        for head in range(model.config.n_head):
            with ablate_heads(model, {layer: [head]}):
                ablated = model(ids)
            kl = kl_divergence(base, ablated)
            table[layer, head] = (kl.mean() if position is None else kl[:, position].mean()).item()
    return table


# --------------------------------------------------------------------------------------------------
# GLTR, surprisal and entropy


@torch.no_grad()
def token_ranks(model: GPT, ids) -> tuple[torch.Tensor, torch.Tensor]:
    """For every token after the first, given its prefix: its rank under the model (1 = the model's most
    likely token) and its surprisal `-log2 p` in bits. Shapes `(positions - 1,)` for 1-D ids,
    `(batch, positions - 1)` for a batch. The ids must fit the context length."""
    ids, squeeze = _as_batch(ids)
    if ids.size(1) < 2:
        raise ValueError("token_ranks needs at least two tokens (the first has no prefix)")
    ids = ids.to(_device(model))
    logits = model(ids[:, :-1])
    targets = ids[:, 1:]
    ranks = ranks_of(logits, targets)
    surprisal = -F.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1) * LOG2E
    if squeeze:
        return ranks[0].cpu(), surprisal[0].cpu()
    return ranks.cpu(), surprisal.cpu()


def gltr_bucket(rank: int) -> int:
    """Index into GLTR_BUCKETS of one rank."""
    for i, (_, low, high) in enumerate(GLTR_BUCKETS):
        if low <= rank <= high:
            return i
    raise ValueError(f"rank must be >= 1, got {rank}")


def gltr_buckets(ranks: torch.Tensor) -> dict[str, float]:
    """The fraction of tokens in each GLTR bucket (ranks 1-10, 11-100, 101-1000, beyond)."""
    ranks = torch.as_tensor(ranks).flatten()
    if ranks.numel() == 0:
        raise ValueError("no ranks to bucket")
    if (ranks < 1).any():
        raise ValueError("ranks start at 1")
    return {label: ((ranks >= low) & (ranks <= high)).float().mean().item() for label, low, high in GLTR_BUCKETS}


def entropy_bits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy, in bits, of softmax(logits) over the last dimension (0 = certain; log2(vocab) = uniform)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    return -torch.where(p > 0, p * logp, 0.0).sum(-1) * LOG2E  # 0 * log 0 = 0 (removed tokens)


@torch.no_grad()
def next_token_entropy(model: GPT, ids) -> torch.Tensor:
    """Entropy in bits of the model's next-token distribution at every position of `ids`."""
    ids, squeeze = _as_batch(ids)
    h = entropy_bits(model(ids.to(_device(model)))).cpu()
    return h[0] if squeeze else h


# --------------------------------------------------------------------------------------------------
# Experiment: do late layers look at the model's own guess?


@torch.no_grad()
def lens_ranks(model: GPT, ids, include_embedding: bool = True):
    """Per stage of the logit lens, the rank of the *current* token (`ids[:, t]`) and of the *next* token
    (`ids[:, t + 1]`) at every position t < positions - 1. Returns `(sites, current (stages, batch, T-1),
    next (stages, batch, T-1))`: where along the depth does a position stop representing its own token and
    start predicting the next one?"""
    ids, _ = _as_batch(ids)
    sites, stream, _ = residual_stream(model, ids, include_embedding)
    ids = ids.to(stream.device)
    current, following = [], []
    for x in stream:  # one stage at a time keeps memory at (batch, positions, vocab)
        logits = unembed(model, x[:, :-1])
        current.append(ranks_of(logits, ids[:, :-1]).cpu())
        following.append(ranks_of(logits, ids[:, 1:]).cpu())
    return sites, torch.stack(current), torch.stack(following)


class RecordingCache:
    """A `course.model.KVCacheProtocol` for one full forward (empty at the start): it records every layer's
    keys and values and hands them back unchanged, so the forward is the ordinary one."""

    def __init__(self):
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        self.keys[layer], self.values[layer] = k, v
        return k, v


class SubstitutingCache:
    """A `course.model.KVCacheProtocol` for decoding one position at a time in which, for the `layers` given,
    each position's keys and values are replaced, *once it is in the past*, by the recorded ones (`keys[layer]`,
    `values[layer]` of shape `(batch, heads, positions, head_dim)`). The position being computed always
    attends to its own, real key and value, so nothing it could not see leaks in."""

    def __init__(self, layers: Iterable[int] = (), keys=None, values=None):
        self.layers = set(layers)
        self.sub_keys, self.sub_values = keys or {}, values or {}
        self.k: dict[int, torch.Tensor] = {}
        self.v: dict[int, torch.Tensor] = {}
        self.length = 0

    def __len__(self) -> int:
        return self.length

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        start, T = self.length, k.size(2)
        past_k, past_v = self.k.get(layer), self.v.get(layer)
        k_all = k if past_k is None else torch.cat([past_k, k], dim=2)
        v_all = v if past_v is None else torch.cat([past_v, v], dim=2)
        if layer in self.layers:  # what later positions will see for the positions computed now
            k = self.sub_keys[layer][:, :, start : start + T]
            v = self.sub_values[layer][:, :, start : start + T]
        self.k[layer] = k if past_k is None else torch.cat([past_k, k], dim=2)
        self.v[layer] = v if past_v is None else torch.cat([past_v, v], dim=2)
        return k_all, v_all  # this step attends to its own, real keys and values

    def advance(self, n: int) -> None:
        """Call after each forward: the positions just computed are now in the past."""
        self.length += n


def _loss_with_past_kv(model: GPT, inputs, targets, layers, keys, values, reduction: str = "mean"):
    """Cross-entropy of `targets` decoding `inputs` one position at a time, the past positions' keys and values in
    `layers` replaced by the recorded `keys`/`values` (see SubstitutingCache): the mean (a float), or with
    `reduction="none"` each target's, `(batch, positions)`."""
    cache = SubstitutingCache(layers, keys, values)
    logits = []
    for t in range(inputs.size(1)):
        logits.append(model(inputs[:, t : t + 1], cache=cache))
        cache.advance(1)
    logits = torch.cat(logits, dim=1)
    if reduction == "none":
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(targets.shape)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten()).item()


@torch.no_grad()
def kv_substitution_loss(model: GPT, ids, layers: Iterable[int], source: torch.Tensor | None = None) -> float:
    """Mean cross-entropy (nats per token) of predicting `ids[:, 1:]` from `ids[:, :-1]` when, in `layers`,
    the keys and values of every *earlier* position t are replaced by those of a second forward whose input
    at position t is `source[:, t]`. The default source is the true next token (`ids[:, 1:]`): the late
    layers of position t then carry the real token t + 1 (which every later position has seen anyway)
    instead of whatever the model computed there. `layers=()` gives the unchanged model's loss.

    Decodes one position at a time (the position being predicted keeps its own keys and values)."""
    ids, _ = _as_batch(ids)
    ids = ids.to(_device(model))
    inputs, targets = ids[:, :-1], ids[:, 1:]
    layers = sorted(set(int(x) for x in layers))
    recorder = RecordingCache()
    if layers:
        source = targets if source is None else torch.as_tensor(source, dtype=torch.long).to(ids.device)
        if source.shape != inputs.shape:
            raise ValueError(f"source must have shape {tuple(inputs.shape)}, got {tuple(source.shape)}")
        model(source, cache=recorder)
    return _loss_with_past_kv(model, inputs, targets, layers, recorder.keys, recorder.values)


@dataclasses.dataclass
class _EmbeddingMix(Probe):
    """A probe that, where the residual stream enters layer `layer`, moves each position's residual a fraction
    `alpha` of the way to the embedding of `tokens[:, t]`, scaled to the residual's own norm."""

    layer: int = 0
    tokens: torch.Tensor | None = None
    alpha: float = 0.0
    wte: torch.Tensor | None = None

    def visit(self, site: str, x: torch.Tensor) -> torch.Tensor:
        x = super().visit(site, x)
        if site == f"mlp {self.layer - 1}":
            e = self.wte[self.tokens[:, : x.size(1)]]
            e = e * (x.norm(dim=-1, keepdim=True) / e.norm(dim=-1, keepdim=True).clamp_min(1e-12))
            x = torch.lerp(x, e, self.alpha)
        return x


def _check_mix(model: GPT, from_layer: int, alpha: float) -> None:
    if not 1 <= from_layer < model.config.n_layer:
        raise ValueError(
            f"from_layer must be in 1..{model.config.n_layer - 1} (a layer after the first), got {from_layer}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")


@torch.no_grad()
def _mixed_past_kv(model: GPT, inputs: torch.Tensor, next_tokens: torch.Tensor, from_layer: int, alpha: float):
    """Keys and values of a forward over `inputs` whose residual entering `from_layer` is mixed toward the
    embedding of `next_tokens` (see _EmbeddingMix)."""
    recorder = RecordingCache()
    previous = model.probe
    model.probe = _EmbeddingMix(
        layer=from_layer, tokens=next_tokens, alpha=float(alpha), wte=model.transformer.wte.weight
    )
    try:
        model(inputs, cache=recorder)
    finally:
        model.probe = previous
    return recorder.keys, recorder.values


@torch.no_grad()
def embedding_substitution_loss(
    model: GPT, ids, from_layer: int, alpha: float = 1.0, source: torch.Tensor | None = None, reduction: str = "mean"
):
    """The late-layer question asked the way the lecture's note proposes. Mean cross-entropy (nats per token) of
    predicting `ids[:, 1:]` when every *earlier* position t's residual stream, where it enters layer `from_layer`,
    is interpolated (`alpha` = 0: unchanged, 1: replaced) toward the embedding of the true next token
    `ids[:, t + 1]` (or of `source[:, t]`), scaled to the residual's norm; the layers from `from_layer` on then
    compute that position's keys and values from it. The position being predicted keeps its own, so nothing
    it could not see leaks in. If the late layers at t only held a guess of token t + 1, the real one should
    serve later positions as well. `reduction="none"`: each target's cross-entropy, `(batch, positions - 1)`."""
    _check_mix(model, from_layer, alpha)
    ids, _ = _as_batch(ids)
    ids = ids.to(_device(model))
    inputs, targets = ids[:, :-1], ids[:, 1:]
    source = targets if source is None else torch.as_tensor(source, dtype=torch.long).to(ids.device)
    if source.shape != inputs.shape:
        raise ValueError(f"source must have shape {tuple(inputs.shape)}, got {tuple(source.shape)}")
    keys, values = _mixed_past_kv(model, inputs, source, from_layer, alpha)
    layers = range(from_layer, model.config.n_layer)
    return _loss_with_past_kv(model, inputs, targets, layers, keys, values, reduction)


class _PrefilledCache:
    """A `course.model.KVCacheProtocol` for one forward after recorded keys and values: the new positions
    attend over the recorded ones and their own; nothing is stored."""

    def __init__(self, keys: dict[int, torch.Tensor], values: dict[int, torch.Tensor]):
        self.keys, self.values = keys, values

    def __len__(self) -> int:
        return next(iter(self.keys.values())).size(2)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        return torch.cat([self.keys[layer], k], dim=2), torch.cat([self.values[layer], v], dim=2)


@torch.no_grad()
def sample_with_embedding_substitution(
    model: GPT, prompt_ids, n: int, pick, from_layer: int, alpha: float = 1.0
) -> torch.Tensor:
    """Generate `n` tokens after `prompt_ids` (batch, positions) with `pick(logits (batch, vocab), ids) -> ids
    (batch,)`, where at every step each earlier position's residual entering `from_layer` is interpolated toward
    the embedding of the token that actually followed it (as in `embedding_substitution_loss`). `alpha = 0` is
    ordinary generation. Re-runs the past at each step (quadratic: for short lecture samples)."""
    _check_mix(model, from_layer, alpha)
    ids, _ = _as_batch(prompt_ids)
    ids = ids.to(_device(model))
    for _ in range(n):
        context = ids[:, -model.config.block_size :]
        if context.size(1) == 1:
            logits = model(context)
        else:
            keys, values = _mixed_past_kv(model, context[:, :-1], context[:, 1:], from_layer, alpha)
            logits = model(context[:, -1:], cache=_PrefilledCache(keys, values))
        chosen = torch.as_tensor(pick(logits[:, -1], ids)).to(ids.device, torch.long).view(-1)
        ids = torch.cat([ids, chosen[:, None]], dim=1)
    return ids
