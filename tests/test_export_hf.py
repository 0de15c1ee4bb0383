"""Export to transformers: the GPT2LMHeadModel folder gives our logits (fp32, within 1e-4) and our tokens."""

from __future__ import annotations

import pytest
import torch

from course.checkpoint import save_checkpoint
from course.errors import UserError
from course.export_hf import export_hf
from course.model import GPT, GPTConfig
from test_checkpoint import TEXT, make_tokenizer

transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install -e '.[hf]')")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tokenizer = make_tokenizer()
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=2, n_head=4, n_embd=32)).eval()
    # random LayerNorm gains and biases too, so that every tensor's layout is exercised
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() == 1:
                parameter.normal_(mean=1.0 if name.endswith("ln_1.weight") else 0.0, std=0.1)
    root = tmp_path_factory.mktemp("export")
    checkpoint = save_checkpoint(root / "ckpt", model, tokenizer)
    return model, tokenizer, export_hf(checkpoint, root / "hf")


def test_logits_match_within_1e_4(exported):
    model, tokenizer, out = exported
    hf_model = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    ids = torch.randint(0, tokenizer.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(ids)
        actual = hf_model(ids).logits
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=0)
    assert hf_model.lm_head.weight.data_ptr() == hf_model.transformer.wte.weight.data_ptr()


def test_tokenizer_round_trips_through_transformers(exported):
    _, tokenizer, out = exported
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert hf_tokenizer.encode(TEXT[1]) == tokenizer.encode(TEXT[1])
    assert hf_tokenizer.eos_token_id == tokenizer.eot_id


def test_exporting_onto_the_checkpoint_itself_is_refused(exported):
    _, _, out = exported
    with pytest.raises(UserError, match="would overwrite the checkpoint"):
        export_hf(out.parent / "ckpt", out.parent / "ckpt")
