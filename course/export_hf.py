"""`course export-hf CKPT OUT`: a checkpoint as a Hugging Face `transformers` GPT2LMHeadModel folder.

The course GPT is GPT-2's architecture with GPT-2's module names, so the export is a renaming-free copy
with two details: GPT-2 stores its projections as `Conv1D`, whose weight is the transpose of
`nn.Linear`'s, and our MLP uses the exact GELU (GPT-2's own checkpoints use the tanh approximation).
"""

from __future__ import annotations

from pathlib import Path

import torch

from course.checkpoint import load_checkpoint
from course.errors import UserError
from course.kit import atomic_folder
from course.model import GPT
from course.tokenizer import EOT, Tokenizer

CONV1D_WEIGHTS = ("c_attn.weight", "c_proj.weight", "c_fc.weight")  # (in, out) in GPT-2, (out, in) here


def _transformers():
    try:
        import transformers
    except ImportError:
        raise UserError("export-hf needs the transformers package: pip install -e '.[hf]'") from None
    return transformers


def to_gpt2(model: GPT, tokenizer: Tokenizer):
    """A GPT2LMHeadModel (eval mode, fp32) computing the same logits as `model`."""
    transformers = _transformers()
    c = model.config
    config = transformers.GPT2Config(
        vocab_size=c.vocab_size,
        n_positions=c.block_size,
        n_embd=c.n_embd,
        n_layer=c.n_layer,
        n_head=c.n_head,
        n_inner=4 * c.n_embd,
        activation_function="gelu",  # exact GELU, as nn.GELU()
        layer_norm_epsilon=1e-5,  # nn.LayerNorm's default
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.eot_id,
        eos_token_id=tokenizer.eot_id,
        tie_word_embeddings=True,
    )
    hf_model = transformers.GPT2LMHeadModel(config)
    state = {
        name: (tensor.t() if name.endswith(CONV1D_WEIGHTS) else tensor).detach().to("cpu", torch.float32).contiguous()
        for name, tensor in model.state_dict().items()
    }
    result = hf_model.load_state_dict(state, strict=False)
    parameters = dict(hf_model.named_parameters(remove_duplicate=False))
    missing = [name for name in result.missing_keys if name in parameters]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"GPT-2 layout mismatch: missing {missing}, unexpected {result.unexpected_keys}")
    return hf_model.eval()


def to_hf_tokenizer(tokenizer: Tokenizer, context_length: int):
    transformers = _transformers()
    from tokenizers import Tokenizer as HFTokenizer

    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=HFTokenizer.from_str(tokenizer.to_str()),
        bos_token=EOT,
        eos_token=EOT,
        unk_token=EOT,
        model_max_length=context_length,
    )


def export_hf(checkpoint: str | Path, out: str | Path) -> Path:
    """Write the Hugging Face folder `out` (config.json, model.safetensors, tokenizer files), atomically."""
    model, tokenizer = load_checkpoint(checkpoint)
    hf_model = to_gpt2(model, tokenizer)
    hf_tokenizer = to_hf_tokenizer(tokenizer, model.config.block_size)
    out = Path(out)
    if out.resolve() == Path(checkpoint).resolve():
        raise UserError(f"export-hf would overwrite the checkpoint {checkpoint}: choose another output folder")
    with atomic_folder(out) as staging:
        hf_model.save_pretrained(staging)
        hf_tokenizer.save_pretrained(staging)
    return out


def run(args) -> int:
    out = export_hf(args.checkpoint, args.out)
    print(f"wrote {out}: load it with transformers.GPT2LMHeadModel.from_pretrained({str(out)!r})")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export-hf",
        help="export a checkpoint as a Hugging Face GPT2LMHeadModel folder",
        description="Write a transformers GPT2LMHeadModel folder (config, safetensors, tokenizer) with identical logits.",
    )
    parser.add_argument("checkpoint", help="checkpoint folder written by `course train`")
    parser.add_argument("out", help="output folder (replaced as a whole)")
    parser.set_defaults(run=run)
