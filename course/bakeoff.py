"""`course bakeoff`: every decoding strategy of the module on one model, measured against human text.

    course bakeoff CHECKPOINT --metrics NOTEBOOK [--samples N] [--seed S] [--csv PATH] [--figure PATH]
                   [--sweep [--sweep-figure PATH]]

As Holtzman et al. 2020 (Table 1) did for GPT-2: prompts are cut from WikiText's validation split, each
followed by its human continuation; every strategy continues the same prompts; each set of continuations
(the human one included) is measured by the notebook's own functions (the decoding assignment's), loaded with
`course.notebook`: `perplexity` (under the model), `zipf_coefficient`, `repetition`, `distinct_n`, and
`beam_search` for the beam row. Self-BLEU4 comes from NLTK's `sentence_bleu` with smoothing method 1, as
in the paper's code: each continuation against all the others. The samplers come from the 02 and 03
notebooks (`--sampler`, `--penalties`; by default solutions/, as `course generate` finds them), so the
library holds none of the graded answers.

With `--sweep`, nucleus sampling's p and plain sampling's temperature are swept on the same prompts, and the
value where the generated text becomes as surprising as the human text is found (`Sweep.meets_human`): it depends
on the model (the paper's 0.95 is GPT-2 Large's), which the table's fixed p = 0.95 cannot show.

Deterministic under `--seed`: the prompts are drawn from it, and each strategy has a generator of its
own seeded from it, so one strategy's draws do not depend on another's.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import inspect
import io
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from course import kit
from course.errors import UserError
from course.generation import default_sampler, generate
from course.notebook import describe_exception, load_notebook, notebook_location, require

METRIC_FUNCTIONS = ["perplexity", "zipf_coefficient", "repetition", "distinct_n", "beam_search"]
PROMPT_TOKENS = 32
BEAM_WIDTH = 4
SMALL_MODEL_PARAMETERS = 5_000_000  # below this one CPU thread decodes best: a small bake-off took 12 s of CPU instead of 50 s with 2 threads on 2 busy cores
FIGURE_FORMATS = ("png", "pdf", "svg")
COLUMNS = ["perplexity", "self-BLEU4", "zipf", "repetition %", "distinct-2"]


@dataclass(frozen=True)
class Strategy:
    name: str
    function: str  # the notebook function it needs: greedy, sample_next, sample_with_penalties, beam_search
    options: dict


STRATEGIES = [
    Strategy("greedy", "greedy", {}),
    Strategy(f"beam search, b={BEAM_WIDTH}", "beam_search", {"beam_width": BEAM_WIDTH}),
    Strategy("pure sampling", "sample_next", {}),
    Strategy("sampling, t=0.9", "sample_next", {"temperature": 0.9}),
    Strategy("top-k=40", "sample_next", {"top_k": 40}),
    Strategy("top-k=40, t=0.7", "sample_next", {"top_k": 40, "temperature": 0.7}),
    Strategy("nucleus, p=0.95", "sample_next", {"top_p": 0.95}),
    Strategy("min-p=0.1", "sample_next", {"min_p": 0.1}),
    Strategy(
        "nucleus p=0.95 + penalties 1.1/1.2",
        "sample_with_penalties",
        {"top_p": 0.95, "frequency_penalty": 1.1, "presence_penalty": 1.2},
    ),
]


def human_windows(tokens: np.ndarray, samples: int, length: int, eot_id: int, seed: int) -> list[list[int]]:
    """`samples` windows of PROMPT_TOKENS + `length` ids from `tokens`, none crossing an article boundary."""
    window = PROMPT_TOKENS + length
    if len(tokens) < window:
        raise UserError(f"the validation split has {len(tokens)} tokens, fewer than one window of {window}")
    rng = np.random.default_rng(seed)
    found: list[list[int]] = []
    for start in rng.permutation(len(tokens) - window)[: samples * 50]:
        ids = tokens[start : start + window].astype(np.int64).tolist()
        if eot_id not in ids:
            found.append(ids)
            if len(found) == samples:
                return found
    raise UserError(f"found only {len(found)} windows of {window} tokens inside one article; ask for fewer --samples")


def notebook_call(notebook: Path, name: str, function: Callable) -> Callable:
    """`function` with its exceptions turned into one line naming the notebook, the function and the cell."""

    def call(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except UserError:
            raise
        except Exception as error:
            location = notebook_location(error)
            raise UserError(
                f"{notebook}: `{name}` raised {describe_exception(error)}" + (f" ({location})" if location else "")
            ) from None

    call.__wrapped__ = function  # inspect.signature(call) is the notebook function's
    return call


def load_functions(notebook: Path, names: list[str], needed_for: str) -> dict[str, Callable]:
    if not notebook.is_file():
        raise UserError(f"expected a notebook at {notebook}, found none")
    loaded = load_notebook(notebook)
    for problem in loaded.problems:
        print(f"note: {notebook}: {problem}", file=sys.stderr)
    found = require(loaded.namespace, names, where=str(notebook), why=needed_for, unloaded=loaded.unloaded)
    return {name: notebook_call(notebook, name, function) for name, function in found.items()}


def usable_strategies(samplers: dict[str, Callable]) -> list[Strategy]:
    """Every strategy, less min-p when the 02 notebook's sample_next has no min_p (it predates min-p)."""
    if "min_p" in inspect.signature(samplers["sample_next"]).parameters:
        return STRATEGIES
    print("note: the 02 notebook's sample_next takes no min_p: the min-p row is left out", file=sys.stderr)
    return [s for s in STRATEGIES if "min_p" not in s.options]


@contextlib.contextmanager
def last_position_logits(model):
    """While open, the model unembeds only the last position, (batch, 1, vocab): the library's loop reads no other,
    and over a vocabulary of 12k tokens the unembedding is most of a small model's work."""
    handle = model.transformer.ln_f.register_forward_hook(lambda module, inputs, output: output[:, -1:, :])
    try:
        yield model
    finally:
        handle.remove()


def continuations(strategy: Strategy, model, prompts: torch.Tensor, length: int, functions, generator) -> list[list]:
    """The new ids of every prompt under `strategy`."""
    if strategy.function == "beam_search":
        rows = []
        for prompt in prompts:
            out = functions["beam_search"](model, prompt[None, :], strategy.options["beam_width"], length)
            rows.append(out[0, prompts.shape[1] :].tolist())
        return rows
    function = functions[strategy.function]
    if strategy.function == "greedy":
        next_token = lambda logits, history: function(logits)  # noqa: E731
    elif strategy.function == "sample_next":
        next_token = lambda logits, history: function(logits, **strategy.options, generator=generator)  # noqa: E731
    else:
        next_token = lambda logits, history: function(logits, history, **strategy.options, generator=generator)  # noqa: E731
    with last_position_logits(model):
        return generate(model, prompts, length, next_token)[:, prompts.shape[1] :].tolist()


def self_bleu4(samples: list[list[int]]) -> float:
    """Mean BLEU-4 of each sample against all the others (NLTK, smoothing method 1, as the paper's code)."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    smoothing = SmoothingFunction().method1
    scores = [
        sentence_bleu(samples[:i] + samples[i + 1 :], sample, smoothing_function=smoothing)
        for i, sample in enumerate(samples)
    ]
    return float(np.mean(scores))


def measure(model, prompts: list[list[int]], texts: list[list[int]], metrics) -> dict[str, float]:
    """Every column for one set of continuations. Zipf's coefficient needs two distinct ids (a barely trained model's
    greedy text may hold one): without them it is NaN, as the table says."""
    distinct = len({token for text in texts for token in text})
    return {
        "perplexity": metrics["perplexity"](model, prompts, texts),
        "self-BLEU4": self_bleu4(texts),
        "zipf": metrics["zipf_coefficient"](texts) if distinct >= 2 else float("nan"),
        "repetition %": 100 * metrics["repetition"](texts),
        "distinct-2": metrics["distinct_n"](texts, 2),
    }


# ---------------------------------------------------------------- where sampling meets human text

SWEEP = {"top_p": (0.5, 0.7, 0.8, 0.9, 0.95, 1.0), "temperature": (0.6, 0.8, 1.0, 1.2, 1.5)}
SWEEP_LABELS = {"top_p": "nucleus p (temperature 1)", "temperature": "temperature (no filter)"}
SWEPT = ("perplexity", "repetition %")


@dataclass
class Sweep:
    """Nucleus sampling's p and plain sampling's temperature, each swept on the same prompts: the generated text's
    perplexity and repetition at each value (`rows[knob][value][column]`), and the human text's (`human`)."""

    rows: dict[str, dict[float, dict[str, float]]]
    human: dict[str, float]

    def meets_human(self, knob: str, column: str = "perplexity") -> float | None:
        """The value of `knob` at which the generated text's `column` reaches the human text's, interpolated
        between the two swept values that straddle it (the first such pair); None when no swept value does."""
        values = sorted(self.rows[knob])
        target = self.human[column]
        for low, high in zip(values, values[1:]):
            a, b = self.rows[knob][low][column] - target, self.rows[knob][high][column] - target
            if a == 0:
                return low
            if a * b < 0 or b == 0:
                return low + (high - low) * a / (a - b)
        return None

    def sentence(self, knob: str) -> str:
        """What the sweep shows, in words computed from it."""
        found = self.meets_human(knob)
        label = SWEEP_LABELS[knob].split(" (")[0]
        values = sorted(self.rows[knob])
        if found is not None:
            return f"{label} {found:.2f} gives text as surprising as the human text (perplexity {self.human['perplexity']:.1f})"
        side = "below" if all(self.rows[knob][v]["perplexity"] < self.human["perplexity"] for v in values) else "above"
        return (
            f"no {label} from {values[0]:g} to {values[-1]:g} reaches the human text's perplexity "
            f"({self.human['perplexity']:.1f}): the generated text stays {side} it"
        )


def sweep(model, windows: list[list[int]], length: int, functions, seed: int, progress=None) -> Sweep:
    """Continue each window's prompt at every swept value, with the notebook's `sample_next` and metrics."""
    prompts = [w[:PROMPT_TOKENS] for w in windows]
    prompt_ids = torch.tensor(prompts)
    human = measure(model, prompts, [w[PROMPT_TOKENS:] for w in windows], functions)
    rows: dict[str, dict[float, dict[str, float]]] = {}
    for knob_index, (knob, values) in enumerate(SWEEP.items()):
        for index, value in enumerate(values):
            strategy = Strategy(f"{knob}={value}", "sample_next", {knob: value})
            generator = torch.Generator().manual_seed(seed * 1000 + 100 * (knob_index + 1) + index)
            texts = continuations(strategy, model, prompt_ids, length, functions, generator)
            rows.setdefault(knob, {})[value] = {
                "perplexity": functions["perplexity"](model, prompts, texts),
                "repetition %": 100 * functions["repetition"](texts),
            }
            if progress is not None:
                progress.update()
    return Sweep(rows, {column: human[column] for column in SWEPT})


def sweep_figure(result: Sweep, title: str):
    """Perplexity and repetition of the generated text against p and against temperature, the human text's levels
    as dotted lines and where the perplexity meets it marked: a matplotlib Figure (no pyplot state)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 6.5))
    axes = fig.subplots(2, 2, sharex="col")
    for column_index, knob in enumerate(SWEEP):
        values = sorted(result.rows[knob])
        for row_index, column in enumerate(SWEPT):
            ax = axes[row_index][column_index]
            ax.plot(values, [result.rows[knob][v][column] for v in values], "o-", label="generated")
            ax.axhline(result.human[column], color="gray", linestyle=":", label="human text")
            if column == "perplexity":
                ax.set_yscale("log")
                found = result.meets_human(knob)
                if found is not None:
                    ax.axvline(found, color="tab:red", linestyle="--", label=f"meets human at {found:.2f}")
            ax.set_ylabel(column)
            ax.legend(fontsize=11)
        axes[1][column_index].set_xlabel(SWEEP_LABELS[knob])
    fig.suptitle(title, fontsize=14)
    fig.tight_layout()
    return fig


def format_sweep(result: Sweep) -> str:
    lines = []
    for knob in SWEEP:
        lines.append(f"{SWEEP_LABELS[knob]:<28}" + "".join(f"{v:>9g}" for v in sorted(result.rows[knob])))
        for column in SWEPT:
            cells = "".join(f"{result.rows[knob][v][column]:>9.1f}" for v in sorted(result.rows[knob]))
            lines.append(f"  {column:<26}{cells}   (human {result.human[column]:.1f})")
        lines.append(f"  {result.sentence(knob)}")
    return "\n".join(lines)


def format_table(rows: dict[str, dict[str, float]]) -> str:
    width = max(len(name) for name in rows)
    lines = [f"{'method':<{width}}  " + "  ".join(f"{c:>12}" for c in COLUMNS)]
    for name, values in rows.items():
        lines.append(
            f"{name:<{width}}  " + "  ".join(f"{values[c]:>12.{2 if c != 'self-BLEU4' else 3}f}" for c in COLUMNS)
        )
    return "\n".join(lines)


def table_csv(rows: dict[str, dict[str, float]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["method", *COLUMNS])
    for name, values in rows.items():
        writer.writerow([name, *(f"{values[c]:.6g}" for c in COLUMNS)])
    return out.getvalue()


def write_figure(rows: dict[str, dict[str, float]], path: Path, title: str) -> None:
    """Quality against diversity: each method's perplexity (log scale) against its Self-BLEU4."""
    from matplotlib.figure import Figure  # no pyplot: no backend chosen, no global state

    fig = Figure(figsize=(9, 4.5))
    ax = fig.subplots()
    for name, values in rows.items():
        human = name == "human"
        ax.scatter(
            values["perplexity"], values["self-BLEU4"], marker="*" if human else "o", s=200 if human else 50, label=name
        )
    ax.axvline(rows["human"]["perplexity"], color="gray", linestyle=":")
    ax.set_xscale("log")
    ax.set_xlabel("perplexity of the text under the model (log scale)")
    ax.set_ylabel("Self-BLEU4 (higher: samples alike)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    with kit.atomic_path(path) as temporary:
        fig.savefig(temporary, format=path.suffix.lstrip("."))


def run(args: argparse.Namespace) -> int:
    from course.checkpoint import check_same_tokenizer, load_checkpoint
    from course.data import prepare
    from course.tokenizer import Tokenizer

    if args.samples < 2:
        raise UserError(
            f"--samples must be at least 2 (Self-BLEU compares samples with each other), not {args.samples}"
        )
    for option, path in (("--figure", args.figure), ("--sweep-figure", args.sweep_figure)):
        if path and path.suffix.lstrip(".") not in FIGURE_FORMATS:
            raise UserError(f"{option} must end in {', '.join('.' + f for f in FIGURE_FORMATS)}, not {path.name}")
    if args.sweep_figure and not args.sweep:
        raise UserError("--sweep-figure draws the sweep: add --sweep")
    if args.seed < 0:
        raise UserError(f"--seed must be 0 or more, not {args.seed}")
    if args.length < 4:
        raise UserError(f"--length must be at least 4 tokens, not {args.length}")
    metrics = load_functions(args.metrics, METRIC_FUNCTIONS, "the bake-off measures with them")
    model, tokenizer = load_checkpoint(args.checkpoint)
    if model.num_params() < SMALL_MODEL_PARAMETERS:
        torch.set_num_threads(1)  # as `course train` does for tiny: its matrices are too small to share between cores
    if PROMPT_TOKENS + args.length > model.config.block_size:
        raise UserError(
            f"a prompt of {PROMPT_TOKENS} tokens and --length {args.length} exceed the model's context of "
            f"{model.config.block_size} tokens"
        )
    sampler = args.sampler or default_sampler("sample_next")
    penalties = args.penalties or default_sampler("sample_with_penalties")
    functions = {**metrics, **load_functions(sampler, ["greedy", "sample_next"], "the bake-off samples with them")}
    functions.update(load_functions(penalties, ["sample_with_penalties"], "the bake-off's penalties row"))
    strategies = usable_strategies(functions)

    data = prepare(args.dataset, data_dir=args.data_dir, vocab_size=tokenizer.vocab_size, quiet=True)
    check_same_tokenizer(tokenizer, Tokenizer.load(data.tokenizer_path), args.checkpoint)
    windows = human_windows(data.tokens("valid"), args.samples, args.length, tokenizer.eot_id, args.seed)
    prompts = [w[:PROMPT_TOKENS] for w in windows]
    prompt_ids = torch.tensor(prompts)

    progress = tqdm(total=len(strategies) + 1, desc="bake-off", unit="method", disable=args.quiet)
    with torch.no_grad():
        progress.set_postfix_str("human")  # first: a metric function that fails, fails before any generation
        human = measure(model, prompts, [w[PROMPT_TOKENS:] for w in windows], functions)
        progress.update()
        rows = {}
        for index, strategy in enumerate(strategies):
            progress.set_postfix_str(strategy.name)
            generator = torch.Generator().manual_seed(args.seed * 1000 + index)
            texts = continuations(strategy, model, prompt_ids, args.length, functions, generator)
            rows[strategy.name] = measure(model, prompts, texts, functions)
            progress.update()
        rows["human"] = human
    progress.close()

    print(
        f"{args.checkpoint}: {args.samples} WikiText validation prompts of {PROMPT_TOKENS} tokens, {args.length} new tokens, seed {args.seed}"
    )
    print(format_table(rows))
    if args.sweep:
        with torch.no_grad():
            progress = tqdm(total=sum(map(len, SWEEP.values())), desc="sweep", unit="value", disable=args.quiet)
            swept = sweep(model, windows, args.length, functions, args.seed, progress)
            progress.close()
        print("\nWhere sampling meets human text on this model (Holtzman et al. found p = 0.95 for GPT-2 Large):")
        print(format_sweep(swept))
        if args.sweep_figure:
            figure = sweep_figure(swept, f"{args.checkpoint.name}: {args.samples} prompts, {args.length} tokens each")
            with kit.atomic_path(args.sweep_figure) as temporary:
                figure.savefig(temporary, format=args.sweep_figure.suffix.lstrip("."))
            print(f"wrote {args.sweep_figure}")
    if args.csv:
        kit.write_atomically(args.csv, table_csv(rows))
        print(f"wrote {args.csv}")
    if args.figure:
        write_figure(rows, args.figure, f"{args.checkpoint.name}: {args.samples} prompts, {args.length} tokens each")
        print(f"wrote {args.figure}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bakeoff",
        help="every decoding strategy measured against human text (Holtzman et al. 2020, Table 1)",
        description="Continue WikiText prompts with every decoding strategy and measure them against the human text.",
    )
    parser.add_argument("checkpoint", type=Path, help="a checkpoint folder (course train --out)")
    parser.add_argument(
        "--metrics",
        type=Path,
        required=True,
        metavar="NOTEBOOK",
        help="a notebook that defines " + ", ".join(METRIC_FUNCTIONS),
    )
    parser.add_argument("--samples", type=int, default=20, help="prompts per strategy (default 20)")
    parser.add_argument("--length", type=int, default=64, help="new tokens per prompt (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--csv", type=Path, help="also write the table as CSV")
    parser.add_argument("--figure", type=Path, help="also draw perplexity against Self-BLEU (png, pdf, svg)")
    parser.add_argument("--sampler", type=Path, metavar="NOTEBOOK", help="a 02 notebook (default: solutions/)")
    parser.add_argument("--penalties", type=Path, metavar="NOTEBOOK", help="a 03 notebook (default: solutions/)")
    parser.add_argument("--dataset", default="wikitext-2-v1")
    parser.add_argument("--data-dir", default=None, help="local WikiText folder (default: $COURSE_DATA_DIR)")
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="also sweep nucleus p and temperature: where does the generated text meet the human text?",
    )
    parser.add_argument("--sweep-figure", type=Path, help="draw the sweep (png, pdf, svg)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)
