"""Correct implementations written in other styles than the solution: they must score 100%.

Explicit loops, numpy inside, an inverse-CDF or Gumbel-max draw (other uses of the generator's
randomness), Hugging Face's ascending top-p, helpers in other cells, functions defined before the
helpers they call, imports in a later cell, everything merged in one cell, demo code mixed in; 04's attention
and padding written other ways (styles_kv_cache.py), 05's with heaps and counters (styles_decoding.py). And a 03
notebook whose pasted 02 functions are wrong: 03 grades what the penalties add, never 02 a second time.
"""

from __future__ import annotations

import json

from mutants.harness import ROOT, notebook_from_cells, notebook_with_cells
from mutants.styles_decoding import DECODING_STYLES
from mutants.styles_kv_cache import KV_CACHE_STYLES

LOOPS_02 = [
    # the pipeline first, before the functions it calls (cells run top to bottom, calls happen later)
    """
def sample_next(logits, temperature=1.0, top_k=None, top_p=None, min_p=None, generator=None):
    x = apply_temperature(logits, temperature)
    if top_k is not None:
        x = top_k_filter(x, top_k)
    if top_p is not None:
        x = top_p_filter(x, top_p)
    if min_p is not None:
        x = min_p_filter(x, min_p)
    return sample(x, generator)
""",
    "import torch\nimport numpy as np\nimport math",
    """
def _rows(t):
    return t.reshape(-1, t.shape[-1])

def greedy(logits):
    out = []
    for row in _rows(logits).tolist():
        best = 0
        for i, value in enumerate(row):
            if value > row[best]:
                best = i
        out.append(best)
    return torch.tensor(out, dtype=torch.long).reshape(logits.shape[:-1])
""",
    "print('a demo line the grader ignores'); x = greedy(torch.tensor([1.0, 2.0]))",
    # predictions spelled as students spell them
    'PREDICT_TOP_P_KEPT = 3.0\nPREDICT_MIN_P_KEPT = 1 + 1\nPREDICT_SAME_COUNT = "Top K"',
    '''
def sample(logits, generator=None):
    """Inverse CDF: one uniform number per row, from the generator."""
    probs = _rows(torch.softmax(logits.float(), dim=-1)).double()
    cdf = probs.cumsum(dim=-1)
    u = torch.rand(probs.shape[0], 1, generator=generator, dtype=torch.float64) * cdf[:, -1:]
    ids = torch.searchsorted(cdf, u, right=True).squeeze(-1)
    return ids.clamp(max=probs.shape[-1] - 1).reshape(logits.shape[:-1])
''',
    """
def apply_temperature(logits, temperature):
    if temperature <= 0 or temperature != temperature:
        raise ValueError("temperature must be > 0")
    return torch.div(logits, temperature)

def top_k_filter(logits, k):
    if k < 1:
        raise ValueError("k must be >= 1")
    values = logits.float().numpy().reshape(-1, logits.shape[-1])
    keep = np.zeros(values.shape, dtype=bool)
    for r in range(values.shape[0]):
        ranked = np.sort(values[r])[::-1]
        threshold = ranked[min(k, len(ranked)) - 1]
        keep[r] = values[r] >= threshold
    mask = torch.from_numpy(keep).reshape(logits.shape)
    return torch.where(mask, logits, torch.full_like(logits, -math.inf))
""",
    """
def top_p_filter(logits, p):
    if not (0 < p <= 1):
        raise ValueError("p must be in (0, 1]")
    out = logits.clone()
    flat = out.reshape(-1, logits.shape[-1])
    probs = torch.softmax(logits.float(), dim=-1).reshape(-1, logits.shape[-1])
    if p == 1:
        return out
    for r in range(flat.shape[0]):
        row = probs[r].tolist()
        order = sorted(range(len(row)), key=lambda i: -row[i])
        mass = 0.0
        for i in order:
            if mass >= p:
                flat[r, i] = -math.inf
            mass += row[i]
    return out
""",
    """
def min_p_filter(logits, min_p):
    if min_p < 0 or min_p > 1 or min_p != min_p:
        raise ValueError("min_p must be in [0, 1]")
    rows = logits.reshape(-1, logits.shape[-1])
    kept = []
    for row in rows:
        probs = np.exp(row.double().numpy() - row.double().max().item())  # unnormalised: the ratio is what counts
        kept.append(torch.from_numpy(probs >= min_p * probs.max()))
    mask = torch.stack(kept).reshape(logits.shape)
    return logits.masked_fill(~mask, -math.inf)
""",
]

MERGED_02 = [
    '''
PREDICT_SAME_COUNT, PREDICT_TOP_P_KEPT, PREDICT_MIN_P_KEPT = "top_k", 3, 2

import math

import torch
import torch.nn.functional as F

NEG = float("-inf")

def greedy(logits):
    return logits.max(dim=-1).indices if False else logits.argmax(-1)

def sample(logits, generator=None):
    """Gumbel-max: argmax(logits + Gumbel noise) is a draw from softmax(logits)."""
    x = logits.float()
    u = torch.rand(x.shape, generator=generator).clamp_min(1e-20)
    return torch.argmax(x - torch.log(-torch.log(u)), dim=-1)

def apply_temperature(logits, temperature):
    if not temperature > 0:
        raise ValueError(temperature)
    return logits * (1.0 / temperature) if False else logits / temperature

def top_k_filter(logits, k):
    if k < 1:
        raise ValueError(k)
    k = min(k, logits.size(-1))
    sorted_logits = torch.sort(logits, dim=-1, descending=True).values
    threshold = torch.gather(sorted_logits, -1, torch.full(logits.shape[:-1] + (1,), k - 1))
    return torch.where(logits >= threshold, logits, torch.tensor(NEG, dtype=logits.dtype))

def top_p_filter(logits, p):
    """Hugging Face's way: sort ascending, remove the low tail whose mass is <= 1 - p, keep the top token."""
    if p <= 0 or p > 1:
        raise ValueError(p)
    if p == 1.0:
        return logits.clone()
    sorted_logits, idx = torch.sort(logits.float(), descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= 1 - p
    remove_sorted[..., -1:] = False
    remove = remove_sorted.scatter(-1, idx, remove_sorted)
    return logits.masked_fill(remove, NEG)

def min_p_filter(logits, min_p):
    """In log space: remove the tokens with log p_i < log p_max + log(min_p)."""
    if not 0.0 <= min_p <= 1.0:
        raise ValueError(min_p)
    log_probs = F.log_softmax(logits.float(), dim=-1)
    top = log_probs.max(dim=-1, keepdim=True).values
    return logits.masked_fill(log_probs < top + math.log(min_p) if min_p > 0 else torch.zeros_like(logits, dtype=torch.bool), NEG)

def sample_next(logits, temperature=1.0, top_k=None, top_p=None, min_p=None, generator=None):
    logits = apply_temperature(logits, temperature)
    logits = logits if top_k is None else top_k_filter(logits, top_k)
    logits = logits if top_p is None else top_p_filter(logits, top_p)
    logits = logits if min_p is None else min_p_filter(logits, min_p)
    return sample(logits, generator=generator)
''',
]


def _solution_cells(assignment: str, names: set[str]) -> list[str]:
    """The solution notebook's code cells that define one of `names` (with the solution markers)."""
    cells = json.loads((ROOT / "solutions" / f"{assignment}.ipynb").read_text())["cells"]
    picked = []
    for cell in cells:
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and any(f"def {name}(" in source for name in names):
            picked.append(source)
    return picked


SAMPLING_02 = {"greedy", "sample", "apply_temperature", "top_k_filter", "top_p_filter", "min_p_filter", "sample_next"}

COUNTER_03 = [
    "from collections import Counter\nimport math\nimport torch",
    'PREDICT_MOST_LOSS = "openai"  # subtracting 0.6 from a is the biggest cut\nPREDICT_CTRL_NEGATIVE = -0.5 * 2',
    'PREDICT_LOWER_MINIMUM = " Stronger "',
    """
def sample_with_penalties(logits, history, temperature=1.0, top_k=None, top_p=None,
                          frequency_penalty=1.0, presence_penalty=1.0, generator=None):
    return sample_next(apply_penalties(logits, history, frequency_penalty, presence_penalty),
                       temperature, top_k, top_p, generator=generator)

def penalty_scales(history, vocab_size, frequency_penalty=1.0, presence_penalty=1.0):
    if isinstance(history, torch.Tensor) and history.dim() == 2:
        return torch.stack([penalty_scales(row, vocab_size, frequency_penalty, presence_penalty) for row in history])
    ids = history.tolist() if isinstance(history, torch.Tensor) else list(history)
    counts = Counter(ids)
    scales = []
    for token in range(vocab_size):
        c = counts.get(token, 0)
        k = 1 + (frequency_penalty - 1) * c + (presence_penalty - 1) * (1 if c > 0 else 0)
        if not k > 0:
            raise ValueError(f"k_{token} = {k} <= 0")
        scales.append(k)
    return torch.tensor(scales, dtype=torch.float32)
""",
    """
def apply_penalties(logits, history, frequency_penalty=1.0, presence_penalty=1.0):
    k = penalty_scales(history, logits.shape[-1], frequency_penalty, presence_penalty)
    x = logits.to(torch.float32).clone()
    rows = x.view(-1, x.shape[-1])
    for r in range(rows.shape[0]):
        finite = [v for v in rows[r].tolist() if v != float("-inf")]
        if finite and min(finite) < 0:
            rows[r] = rows[r] - min(finite)
    return (x / k).to(logits.dtype)
""",
    """
def repetition_penalty(logits, history, penalty):
    if penalty <= 0:
        raise ValueError("penalty must be > 0")
    rows = [history] if logits.dim() == 1 else list(history)
    out = logits.clone()
    flat = out.view(-1, logits.shape[-1])
    for r, row_history in enumerate(rows):
        ids = row_history.tolist() if isinstance(row_history, torch.Tensor) else list(row_history)
        for token in set(ids):
            value = flat[r, token].item()
            flat[r, token] = value / penalty if value > 0 else value * penalty
    return out

def additive_penalties(logits, history, frequency_penalty=0.0, presence_penalty=0.0):
    rows = [history] if logits.dim() == 1 else list(history)
    out = logits.clone()
    flat = out.view(-1, logits.shape[-1])
    for r, row_history in enumerate(rows):
        ids = row_history.tolist() if isinstance(row_history, torch.Tensor) else list(row_history)
        for token, count in Counter(ids).items():
            flat[r, token] = flat[r, token] - frequency_penalty * count - presence_penalty
    return out
""",
]

# 02's functions as a student might get them wrong: 03 must not grade them a second time
WRONG_02 = """
def top_k_filter(logits, k):
    kth = torch.topk(logits, min(k + 1, logits.shape[-1]), dim=-1).values[..., -1:]  # one token too many
    return logits.masked_fill(logits < kth, float("-inf"))

def top_p_filter(logits, p):  # written for one row: scatters along dimension 0
    sorted_logits, order = torch.sort(logits, descending=False)
    remove = sorted_logits.softmax(dim=-1).cumsum(dim=-1) <= 1 - p
    remove[..., -1:] = False
    return logits.masked_fill(remove.scatter(0, order, remove), float("-inf"))
"""


def _loops_02():
    return notebook_from_cells(LOOPS_02)


def _merged_02():
    return notebook_from_cells(MERGED_02)


def _counter_03():
    # the student's own code first, then their 02 functions, pasted from 02 (its solution, markers and all)
    return notebook_from_cells(COUNTER_03 + _solution_cells("02_sampling", SAMPLING_02))


def _wrong_02_03():
    # the 03 solution with a wrong top-k and top-p of 02 pasted in: sample_with_penalties calls them, and loses nothing
    return notebook_with_cells(ROOT / "solutions" / "03_penalties.ipynb", [WRONG_02])


STYLES = {
    "02_sampling": {"loops-numpy-inverse-cdf": _loops_02, "merged-gumbel-hf-top-p": _merged_02},
    "03_penalties": {"counter-loops-02-pasted-last": _counter_03, "own-wrong-02-functions": _wrong_02_03},
    "04_kv_cache": KV_CACHE_STYLES,
    "05_decoding": DECODING_STYLES,
}


# ---------------------------------------------------------------- notebooks written before the assignments grew

OLD_SAMPLE_NEXT = """
def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return sample(logits, generator=generator)
"""


def _solution_without(assignment: str, dropped: tuple[str, ...], extra: list[str]) -> object:
    """The solution notebook without the code cells that hold any of `dropped`, plus `extra` cells."""
    notebook = json.loads((ROOT / "solutions" / f"{assignment}.ipynb").read_text())
    kept = [
        "".join(cell["source"])
        for cell in notebook["cells"]
        if cell["cell_type"] == "code" and not any(text in "".join(cell["source"]) for text in dropped)
    ]
    return notebook_from_cells(kept + extra)


def _earlier_02():
    return _solution_without("02_sampling", ("def min_p_filter", "PREDICT_", "def sample_next"), [OLD_SAMPLE_NEXT])


def _earlier_03():
    return _solution_without("03_penalties", ("def repetition_penalty", "PREDICT_"), [])


# assignment -> (a notebook as written before min-p, the other penalties and the predictions; the tests it may fail:
# exactly those of what it lacks, matched against the test's function name)
EARLIER = {
    "02_sampling": (_earlier_02, r"min[_-]p|predicted"),
    "03_penalties": (_earlier_03, r"repetition_penalty|additive|predicted"),
}
