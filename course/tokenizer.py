"""The course tokenizer: a byte-level BPE (as GPT-2's), trained with Hugging Face `tokenizers`.

Byte-level means the base alphabet is the 256 byte values, so any text can be encoded and
decoded back exactly: no unknown tokens, even for characters the training text never had.
BPE then learns merges of frequent neighbouring pieces until the vocabulary reaches its size.
One special token, `<|endoftext|>`, separates articles so the model learns where one ends.

WikiText replaced its rare words by `<unk>`. Left to BPE, `<unk>` is spelled in three pieces (`Ġ<`, `unk`, `>`)
and a model spends a good part of its capacity spelling it. So `<unk>` is one token: ` <unk>` (with the space
before it, as it stands between words) and `<unk>` (after a bracket or at a line's start) are kept whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tokenizers import AddedToken, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from course.errors import UserError
from course.kit import write_atomically

EOT = "<|endoftext|>"
# WikiText's unknown word, each form one token; the longest match wins, so " <unk>" takes its space.
UNK_FORMS = (" <unk>", "<unk>")
# Larger vocabularies gave the tiny model better text per word in the same minutes, up to about 24k (bench/RESULTS.md).
DEFAULT_VOCAB_SIZE = 24576
# A merge must be seen at least this often: merges seen once only memorise the training text.
DEFAULT_MIN_FREQUENCY = 2
# The smallest vocabulary: the 256 byte values and the special tokens. Ids are stored as uint16.
MIN_VOCAB_SIZE = 256 + 1 + len(UNK_FORMS)
MAX_VOCAB_SIZE = 65536


def check_vocab_size(vocab_size: int) -> None:
    if not MIN_VOCAB_SIZE <= vocab_size <= MAX_VOCAB_SIZE:
        raise UserError(
            f"expected a vocabulary size between {MIN_VOCAB_SIZE} (the 256 bytes, {EOT} and <unk>) and "
            f"{MAX_VOCAB_SIZE} (ids are stored as uint16), got {vocab_size}"
        )


def _byte_of_char() -> dict[str, int]:
    """GPT-2's byte-level alphabet: printable bytes stand for themselves, the others are shifted
    to chr(256 + n) in order, so that the space is shown as 'Ġ' and the newline as 'Ċ'."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [byte for byte in range(256) if byte not in kept]
    return {chr(byte): byte for byte in kept} | {chr(256 + n): byte for n, byte in enumerate(shifted)}


_BYTE_OF_CHAR = _byte_of_char()

# Where a line starts with a word (or a space and a word), GPT-2's pre-tokenizer regex always ends
# one piece before it ('\n' alone, as `\s+(?!\S)` backs off from the space) and BPE never merges
# across pieces: encoding the text cut there gives exactly the ids of encoding it whole.
_LINE_START = re.compile(r"(?<=\n)(?= ?\S)")


class Tokenizer:
    """A thin wrapper around a trained `tokenizers.Tokenizer` with the few calls the course needs."""

    def __init__(self, hf_tokenizer: HFTokenizer, where: str = "the tokenizer"):
        """Wrap a `tokenizers.Tokenizer`, which must be a byte-level BPE with <|endoftext|>; `where` names it in errors."""
        pre_tokenizer = hf_tokenizer.pre_tokenizer
        if not (isinstance(pre_tokenizer, pre_tokenizers.ByteLevel) and pre_tokenizer.use_regex):
            raise UserError(
                f"expected a byte-level BPE (ByteLevel pre-tokenizer) in {where}, found {type(pre_tokenizer).__name__}"
            )
        if hf_tokenizer.normalizer is not None:
            raise UserError(
                f"expected a tokenizer that encodes text as written in {where}, "
                f"found a {type(hf_tokenizer.normalizer).__name__} normalizer"
            )
        eot_id = hf_tokenizer.token_to_id(EOT)
        if eot_id is None:
            raise UserError(f"expected the special token {EOT} in {where}, found none")
        self._tokenizer = hf_tokenizer
        self.eot_id: int = eot_id
        self.vocab_size: int = hf_tokenizer.get_vocab_size()

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int = DEFAULT_VOCAB_SIZE,
        min_frequency: int = DEFAULT_MIN_FREQUENCY,
    ) -> Tokenizer:
        """Learn a byte-level BPE from `texts`; the same texts always give the same tokenizer.

        The vocabulary can come out smaller than `vocab_size` when the text has fewer merges to offer.
        """
        check_vocab_size(vocab_size)
        tokenizer = HFTokenizer(models.BPE())
        # add_prefix_space=False: the text is encoded as written, so decode(encode(text)) == text.
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=[EOT, *(AddedToken(form, normalized=False) for form in UNK_FORMS)],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(texts, trainer=trainer)
        return cls(tokenizer)

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError(f"expected a tokenizer file at {path}, found none (run `course prepare` first)") from None
        except (OSError, UnicodeDecodeError) as error:
            raise UserError(f"expected a readable tokenizer.json at {path}: {error}") from None
        return cls.from_str(text, where=str(path))

    @classmethod
    def from_str(cls, text: str, where: str = "the given string") -> Tokenizer:
        """The tokenizer from its JSON text (what `to_str` returns), e.g. embedded in a notebook."""
        try:
            hf_tokenizer = HFTokenizer.from_str(text)
        except Exception as error:  # tokenizers raises a bare Exception on bad JSON
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UserError(f"expected a tokenizer in `tokenizers` JSON format in {where}: {first_line}") from None
        return cls(hf_tokenizer, where)

    def to_str(self) -> str:
        return self._tokenizer.to_str()

    def save(self, path: str | Path) -> None:
        """Write tokenizer.json atomically: a reader never sees a half-written file."""
        write_atomically(path, self.to_str())

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode many texts at once, in parallel over the CPU cores; the same ids as `encode` each.

        Long texts are cut into lines first: many short pieces spread evenly over the cores and
        encode about twice as fast as a few long ones. The cuts change nothing, see _LINE_START.
        """
        pieces, piece_counts = [], []
        for text in texts:
            lines = _LINE_START.split(text)
            pieces += lines
            piece_counts.append(len(lines))
        encoded = self._tokenizer.encode_batch(pieces)
        ids, start = [], 0
        for count in piece_counts:
            ids.append([token for encoding in encoded[start : start + count] for token in encoding.ids])
            start += count
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def token_strings(self, ids: Iterable[int]) -> list[str]:
        """Each token on its own, readable: 'Ġthe' is shown as ' the'.

        A token holding part of a multi-byte character shows the bytes it has, e.g. '\\xe6'.
        """
        return [self._readable(int(i)) for i in ids]

    def _readable(self, token_id: int) -> str:
        token = self._tokenizer.id_to_token(token_id)
        if token is None:
            raise ValueError(f"token id {token_id} is outside the vocabulary (size {self.vocab_size})")
        if token == EOT or token in UNK_FORMS:
            return token
        return bytes(_BYTE_OF_CHAR[char] for char in token).decode("utf-8", errors="backslashreplace")


def unigram_perplexity(train_tokens: np.ndarray, eval_tokens: np.ndarray, vocab_size: int) -> float:
    """The perplexity of the simplest model: each token drawn independently from its train frequency.

    Add-one smoothed (every token seen at least once) unigram fitted on `train_tokens`, evaluated
    on `eval_tokens`: exp(-mean log p(token)). A language model that does not beat it has learned
    nothing about context. Counts stream in chunks, so memmaps of any size are fine.
    """
    train_counts = _token_counts(train_tokens, vocab_size)
    eval_counts = _token_counts(eval_tokens, vocab_size)
    if eval_counts.sum() == 0:
        raise ValueError("unigram_perplexity needs at least one evaluation token")
    log_probs = np.log(train_counts + 1.0) - np.log(train_counts.sum() + vocab_size)
    return float(np.exp(-(eval_counts * log_probs).sum() / eval_counts.sum()))


def _token_counts(tokens: np.ndarray, vocab_size: int, chunk: int = 1 << 24) -> np.ndarray:
    counts = np.zeros(vocab_size, dtype=np.int64)
    tokens = np.asarray(tokens).reshape(-1)
    for start in range(0, len(tokens), chunk):
        part = tokens[start : start + chunk]
        if part.size and int(part.max()) >= vocab_size:
            raise ValueError(f"token id {int(part.max())} is outside the vocabulary (size {vocab_size})")
        counts += np.bincount(part, minlength=vocab_size)
    return counts


def tokenizer_settings(vocab_size: int, min_frequency: int = DEFAULT_MIN_FREQUENCY) -> dict:
    """How a tokenizer is trained, for cache keys: the same settings on the same text, the same tokenizer."""
    return {
        "kind": "byte-level-bpe",
        "vocab_size": vocab_size,
        "min_frequency": min_frequency,
        "special_tokens": [EOT, *UNK_FORMS],
    }
