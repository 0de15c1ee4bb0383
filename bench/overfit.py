"""Overfitting on WikiText-2 at a CPU's scale: the same model trained without and with the course recipe.

    COURSE_DATA_DIR=../shared/data/wikitext-2 python bench/overfit.py [--epochs 30] [--out bench/out/overfit]

The course preset (35.2M parameters) would see WikiText-2's 2.40M training tokens dozens of times; that cannot run
on a CPU, so this bench keeps its ratio of parameters to training tokens (about 14.6, computed from the preset and
the prepared corpus) at a size that can: a reduced course model (4 layers x width 128, context 128, a 4,096-token
BPE: 1.33M parameters) trained for many epochs on the first tokens of the train split (as many as the ratio says,
or --slice-tokens). Two arms, the same data, seed and schedule, run at once in two processes of one torch thread
each (so that both see the same machine load; --arms runs one):

    without   dropout 0, weight decay 0.1: the course preset before the recipe
    with      the recipe's dropout and weight decay (--dropout, --weight-decay)

Each validates every --eval-every steps on --eval-tokens tokens of the valid split, evenly spread. The bench prints
each arm's validation curve, its minimum and final loss, writes them to OUT/overfit.json and draws OUT/overfit.png.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

SHAPE = dict(block_size=128, n_layer=4, n_head=4, n_embd=128)
VOCAB = 4096
ARMS = ("without", "with")


def training_data(args):
    """The prepared WikiText-2 (a --vocab BPE) with the train split cut to its first --slice-tokens tokens."""
    from course.train import TrainConfig, load_training_data

    data = load_training_data(TrainConfig(data_dir=args.data_dir, quiet=True), vocab_size=args.vocab)
    return replace(data, train_tokens=np.asarray(data.train_tokens[: args.slice_tokens]))


def course_ratio(args) -> tuple[int, int]:
    """The course preset's parameters and the training tokens of WikiText-2 under its tokenizer."""
    import torch

    from course.data import prepare
    from course.model import GPT, preset
    from course.train import PRESET_DEFAULTS

    vocab = PRESET_DEFAULTS["course"]["vocab_size"]
    with torch.device("meta"):  # shapes only
        params = GPT(preset("course", vocab)).num_params()
    return params, prepare(data_dir=args.data_dir, vocab_size=vocab, quiet=True).num_tokens["train"]


def bench_params(args) -> int:
    import torch

    from course.model import GPT, preset

    register_preset(args)
    with torch.device("meta"):
        return GPT(preset("overfit", args.vocab)).num_params()


def register_preset(args) -> None:
    """The bench's model as a preset named "overfit", as `course train` knows the others."""
    from course.model import PRESETS
    from course.train import PRESET_DEFAULTS

    PRESETS["overfit"] = dict(SHAPE, block_size=args.context, n_layer=args.layers, n_embd=args.width)
    PRESET_DEFAULTS["overfit"] = dict(
        PRESET_DEFAULTS["course"],
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        eval_every=args.eval_every,
        save_every=10**9,  # the last step only
        eval_tokens=args.eval_tokens,
        cpu_threads=1,
        vocab_size=args.vocab,
    )


def arm_settings(arm: str, args) -> dict:
    return (
        dict(dropout=0.0, weight_decay=0.1)
        if arm == "without"
        else dict(dropout=args.dropout, weight_decay=args.weight_decay)
    )


def run_arm(arm: str, args) -> dict:
    """Train one arm in this process; its validation history and timings."""
    import torch

    from course.train import TrainConfig, train

    torch.set_num_threads(1)
    register_preset(args)
    data = training_data(args)
    out = Path(args.out) / f"checkpoint-{arm}"
    config = TrainConfig(preset="overfit", out=out, device="cpu", seed=args.seed, quiet=True, **arm_settings(arm, args))

    def report(record: dict) -> None:
        print(
            f"[{arm:>7}] step {record['step']:5d}  epoch {record['epoch']:6.2f}  train {record['train_loss']:.3f}"
            f"  valid {record['val_loss']:.3f}",
            flush=True,
        )

    started, cpu = time.perf_counter(), time.process_time()
    result = train(config, on_eval=report, data=data)
    return dict(
        arm=arm,
        settings=arm_settings(arm, args),
        params=result.model.num_params(),
        steps=result.step,
        kept_step=result.kept_step,
        wall_s=time.perf_counter() - started,
        cpu_s=time.process_time() - cpu,
        history=[
            {key: record[key] for key in ("step", "epoch", "train_loss", "val_loss")} for record in result.history
        ],
    )


def summary(run: dict) -> str:
    curve = run["history"]
    best = min(curve, key=lambda record: record["val_loss"])
    final = curve[-1]
    turn = final["val_loss"] - best["val_loss"]
    return (
        f"{run['arm']}: {run['settings']}, {run['steps']} steps in {run['wall_s']:.0f} s; valid loss minimum "
        f"{best['val_loss']:.3f} at epoch {best['epoch']:.2f} (step {best['step']}), final {final['val_loss']:.3f} "
        f"at epoch {final['epoch']:.2f}: {turn:+.3f} above the minimum; train loss at the end {final['train_loss']:.3f}"
    )


def draw(runs: list[dict], path: Path) -> None:
    """Left, every curve; right, the validation curves from epoch 3 on, where they part."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (whole, valid) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=100)
    colors = ["tab:red", "tab:blue", "tab:green", "tab:purple"]
    late_losses = []
    for run, color in zip(runs, colors):
        label = f"{run['arm']} recipe (dropout {run['settings']['dropout']:g})"
        epochs = [record["epoch"] for record in run["history"]]
        losses = [record["val_loss"] for record in run["history"]]
        whole.plot(epochs, losses, color=color, label=f"{label}: valid")
        whole.plot(epochs, [r["train_loss"] for r in run["history"]], color=color, ls=":", label="train")
        late = [(epoch, loss) for epoch, loss in zip(epochs, losses) if epoch >= 3]
        valid.plot(*zip(*late), color=color, label=label)
        late_losses += [loss for _, loss in late]
    whole.set(xlabel="epochs over the training slice", ylabel="loss (nats per token)", title="train and valid")
    valid.set(xlabel="epochs over the training slice", title="valid, from epoch 3")
    valid.set_ylim(min(late_losses) - 0.02, max(late_losses) + 0.02)
    for axes in (whole, valid):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    figure.suptitle("bench/overfit.py: a reduced course model on a slice of WikiText-2", fontsize=10)
    figure.tight_layout()
    figure.savefig(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir", default=os.environ.get("COURSE_DATA_DIR"), help="WikiText-2 (default $COURSE_DATA_DIR)"
    )
    parser.add_argument("--out", default="bench/out/overfit", help="folder for the JSON, the figure and checkpoints")
    parser.add_argument("--slice-tokens", type=int, help="the first tokens of the train split (default: the ratio's)")
    parser.add_argument("--epochs", type=float, default=30.0)
    parser.add_argument("--vocab", type=int, default=VOCAB)
    parser.add_argument("--context", type=int, default=SHAPE["block_size"])
    parser.add_argument("--layers", type=int, default=SHAPE["n_layer"])
    parser.add_argument("--width", type=int, default=SHAPE["n_embd"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup-steps", type=int, default=50)
    parser.add_argument("--eval-every", type=int, default=22, help="steps (half an epoch of the default slice)")
    parser.add_argument("--eval-tokens", type=int, default=32768)
    parser.add_argument("--dropout", type=float, default=0.2, help="the recipe's")
    parser.add_argument("--weight-decay", type=float, default=0.1, help="the recipe's")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS), help="the arms to run (default both)")
    parser.add_argument("--redraw", nargs="+", type=Path, help="train nothing: draw OUT/overfit.png from these JSONs")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.redraw:
        runs = [run for path in args.redraw for run in json.loads(path.read_text())["runs"]]
        for run in runs:
            print(summary(run))
        draw(runs, out / "overfit.png")
        print(f"wrote {out / 'overfit.png'}")
        return 0
    if args.slice_tokens is None:
        params, tokens = course_ratio(args)
        args.slice_tokens = round(bench_params(args) * tokens / params)
        print(
            f"the course preset: {params:,} parameters, {tokens:,} training tokens ({params / tokens:.1f} parameters "
            f"a token); this model: {bench_params(args):,} parameters, so the first {args.slice_tokens:,} tokens"
        )
    training_data(args)  # prepare the corpus once, before the arms start
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    with multiprocessing.get_context("spawn").Pool(len(args.arms)) as pool:
        runs = pool.starmap(run_arm, [(arm, args) for arm in args.arms])
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for run in runs:
        print(summary(run))
    (out / "overfit.json").write_text(json.dumps(dict(args=vars(args), runs=runs), indent=1) + "\n")
    draw(runs, out / "overfit.png")
    print(f"wrote {out / 'overfit.json'} and {out / 'overfit.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
