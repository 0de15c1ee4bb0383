"""The course tokenizer: exact round trips, the end-of-text token, readable pieces, the unigram baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers

from course.errors import UserError
from course.tokenizer import EOT, Tokenizer, unigram_perplexity

TRAINING_TEXT = [
    " The cat sat on the mat , and the dog sat on the log .\n",
    " = Valkyria Chronicles III = \n\n The game began development in 2010 .\n",
    " In 1998 the team released a game that sold 3 @,@ 000 copies .\n",
    " The <unk> of the <unk> (<unk>) .\n",
] * 50


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.train(TRAINING_TEXT, vocab_size=350)


@pytest.mark.parametrize(
    "text",
    [
        " The cat sat on the mat .",
        "naïve café, Ærøskøbing, Москва, 日本語, 🙂🚀 and a zero-width\u200bjoiner",  # never seen in training
        "  two spaces,\ttabs,\n\n\nnewlines and a trailing space ",
        "",
    ],
)
def test_decode_inverts_encode_exactly(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_byte_level_means_every_byte_has_a_token(tokenizer):
    ids = tokenizer.encode("日")  # three UTF-8 bytes the training text never had
    assert len(ids) == 3
    assert tokenizer.token_strings(ids) == ["\\xe6", "\\x97", "\\xa5"]


def test_eot_is_one_special_token(tokenizer):
    ids = tokenizer.encode(f" the cat{EOT} the dog")
    assert ids.count(tokenizer.eot_id) == 1
    assert tokenizer.decode(ids) == f" the cat{EOT} the dog"
    assert tokenizer.token_strings([tokenizer.eot_id]) == [EOT]


@pytest.mark.parametrize(
    ("text", "unk_pieces"),
    [
        (" a <unk> sat", [" <unk>"]),  # between words: the space goes with it
        (" (<unk>) <unk>", ["<unk>", " <unk>"]),  # after a bracket: <unk> alone
        ("<unk><unk>", ["<unk>", "<unk>"]),
    ],
)
def test_unk_is_one_token(tokenizer, text, unk_pieces):
    """WikiText's `<unk>` is never spelled in pieces, and the text still comes back exactly."""
    ids = tokenizer.encode(text)
    pieces = tokenizer.token_strings(ids)
    assert [piece for piece in pieces if "unk" in piece] == unk_pieces
    assert "".join(pieces) == text
    assert tokenizer.decode(ids) == text


def test_token_strings_show_spaces_as_spaces(tokenizer):
    ids = tokenizer.encode(" the cat sat")
    assert tokenizer.token_strings(ids) == [" the", " cat", " sat"]  # GPT-2 writes them 'Ġthe', 'Ġcat', 'Ġsat'
    # GPT-2's 'Ċ', 'ĉ', '~', and 'Ã', '©' (the two bytes of an 'é' never merged in training)
    assert tokenizer.token_strings(tokenizer.encode("\n\t~é")) == ["\n", "\t", "~", "\\xc3", "\\xa9"]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tokenizer.token_strings([tokenizer.vocab_size])


def test_training_reaches_the_vocabulary_size_and_is_deterministic(tokenizer):
    assert tokenizer.vocab_size == 350
    assert Tokenizer.train(TRAINING_TEXT, vocab_size=350).to_str() == tokenizer.to_str()
    # a short text runs out of pairs seen twice before a large vocabulary fills up
    assert Tokenizer.train(TRAINING_TEXT, vocab_size=1000).vocab_size < 1000


@pytest.mark.parametrize("vocab_size", [256, 65537])
def test_vocabulary_size_out_of_range(vocab_size):
    with pytest.raises(UserError, match="vocabulary size between 259 .* and 65536"):
        Tokenizer.train(TRAINING_TEXT, vocab_size=vocab_size)


def test_encode_batch_gives_the_ids_of_encode(tokenizer):
    # encode_batch cuts texts at line starts; these texts probe every kind of line boundary.
    texts = [
        " = A = \n\n The cat sat .\n The dog sat .\n",
        "no leading space\nx\n\n\n  two spaces\n\ttab\n \n's and 't\n",
        "ends without newline\n the",
        "\n\n\n",
        "",
        f" the cat\n{EOT}\n the dog\n",
    ]
    assert tokenizer.encode_batch(texts) == [tokenizer.encode(text) for text in texts]


def test_save_load_and_string_round_trips(tokenizer, tmp_path):
    path = tmp_path / "nested" / "tokenizer.json"
    tokenizer.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["tokenizer.json"]  # no temporary file left behind
    for copy in (Tokenizer.load(path), Tokenizer.from_str(tokenizer.to_str())):
        assert copy.to_str() == tokenizer.to_str()
        assert (copy.vocab_size, copy.eot_id) == (tokenizer.vocab_size, tokenizer.eot_id)
        assert copy.encode(" the cat sat on the mat") == tokenizer.encode(" the cat sat on the mat")


def test_load_missing_tokenizer(tmp_path):
    with pytest.raises(UserError, match=r"expected a tokenizer file at .*missing\.json.*course prepare"):
        Tokenizer.load(tmp_path / "missing.json")


@pytest.mark.parametrize("content", [b'{"version": "1.0", "model": ', b"\xff\xfe\x00binary", b"[]"])
def test_load_corrupt_tokenizer(tmp_path, content):
    path = tmp_path / "tokenizer.json"
    path.write_bytes(content)
    with pytest.raises(UserError, match="tokenizer") as error:
        Tokenizer.load(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_tokenizer_of_another_kind_is_refused(tmp_path):
    word_level = HFTokenizer(models.WordLevel({"a": 0, EOT: 1}, unk_token=EOT))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    word_level.save(str(tmp_path / "word-level.json"))
    with pytest.raises(UserError, match=r"expected a byte-level BPE .* in .*word-level\.json, found Whitespace"):
        Tokenizer.load(tmp_path / "word-level.json")
    without_eot = HFTokenizer(models.BPE())
    without_eot.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    with pytest.raises(UserError, match=f"expected the special token {EOT} in the given string, found none"):
        Tokenizer.from_str(without_eot.to_str())


def test_unigram_perplexity_fixed_values(tmp_path):
    # add-one counts on train [0, 0, 1] with 3 tokens: [3, 2, 1] / 6 -> p = 1/2, 1/3, 1/6
    assert unigram_perplexity(np.array([0, 0, 1]), np.array([0, 1, 2]), 3) == pytest.approx(36 ** (1 / 3), rel=1e-12)
    assert unigram_perplexity(np.array([0, 0, 1]), np.array([0]), 3) == pytest.approx(2.0, rel=1e-12)
    # nothing learned: uniform over the vocabulary
    assert unigram_perplexity(np.array([], dtype=np.uint16), np.array([5, 7]), 10) == pytest.approx(10.0, rel=1e-12)
    # memmaps of uint16, as `prepare` writes them
    path = tmp_path / "ids.bin"
    np.array([0, 0, 1], dtype=np.uint16).tofile(path)
    ids = np.memmap(path, dtype=np.uint16, mode="r")
    assert unigram_perplexity(ids, ids, 3) == pytest.approx(math.exp(-(2 * math.log(1 / 2) + math.log(1 / 3)) / 3))


def test_unigram_perplexity_rejects_ids_outside_the_vocabulary():
    with pytest.raises(ValueError, match="outside the vocabulary"):
        unigram_perplexity(np.array([0, 3]), np.array([0]), 3)
    with pytest.raises(ValueError, match="at least one evaluation token"):
        unigram_perplexity(np.array([0]), np.array([], dtype=np.int64), 3)
