"""WikiText, from files or the hub to token ids on disk: the `course prepare` command.

WikiText (Merity et al. 2016) is Wikipedia text, one paragraph a line, where each article starts
with a top-level heading ` = Title = ` (sections are ` = = Section = = `). Preparing it means:
load the three splits, train the tokenizer on the train split, and encode every split as one long
stream of uint16 ids, articles separated by `<|endoftext|>`. The result is cached: a second
`prepare` with the same inputs finds it and does no work.

Where the text comes from: the `--data-dir` flag, else $COURSE_DATA_DIR, else the folder that an earlier
`prepare` read (each cache records it), else, when that folder is gone, the newest prepared cache of the
dataset as it is, and only when nothing local exists the Hugging Face hub. So once a corpus is prepared,
`course prepare`, `course train` and the notebooks work offline with no flag and no environment variable.

    data = prepare("wikitext-2-v1", data_dir="path/to/wikitext-2")
    data.tokens("train")   # np.memmap of uint16 ids
    data.num_words["valid"]  # for perplexity per word
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from course import kit
from course.errors import UserError
from course.tokenizer import (
    DEFAULT_VOCAB_SIZE,
    Tokenizer,
    check_vocab_size,
    tokenizer_settings,
)

DATASETS = ("wikitext-2-v1", "wikitext-2-raw-v1", "wikitext-103-v1", "wikitext-103-raw-v1")
SPLITS = ("train", "valid", "test")
HUB_NAME = "Salesforce/wikitext"
HUB_SPLIT = {"train": "train", "valid": "validation", "test": "test"}
# The folders the official zips unpack to.
OFFICIAL_FOLDER = {
    "wikitext-2-v1": "wikitext-2",
    "wikitext-2-raw-v1": "wikitext-2-raw",
    "wikitext-103-v1": "wikitext-103",
    "wikitext-103-raw-v1": "wikitext-103-raw",
}
# Bump when what `prepare` writes changes, so that older caches are not mistaken for current ones.
CACHE_FORMAT = 1
META_FILE = "meta.json"
TOKENIZER_FILE = "tokenizer.json"
# Articles are encoded in batches of about this many characters: fast, and memory stays bounded.
ENCODE_BATCH_CHARS = 1 << 20
# Seconds to wait for the hub before saying it cannot be reached (`datasets` itself retries for about 30 s).
HUB_TIMEOUT = 5


def default_cache_dir() -> Path:
    """$COURSE_CACHE_DIR, else data/cache in the kit's folder (a clone or a student release), else the user's
    cache folder: the same place whichever folder a command or notebook runs from."""
    if os.environ.get("COURSE_CACHE_DIR"):
        return Path(os.environ["COURSE_CACHE_DIR"])
    if (kit.ROOT / "pyproject.toml").is_file():
        return kit.ROOT / "data" / "cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "course-kit"


# --- reading the corpus -------------------------------------------------------------------------


def is_article_heading(line: str) -> bool:
    """True for a top-level heading ` = Title = ` (one `=` each side), which starts an article."""
    text = line.strip()
    return (
        len(text) > 4
        and text.startswith("= ")
        and text.endswith(" =")
        and not text.startswith("= =")
        and not text.endswith("= =")
    )


def split_articles(lines: Iterable[str]) -> Iterator[str]:
    """Group paragraph lines into articles, each a text of its lines ending in newlines.

    An article runs from one top-level heading to the next; blank lines at its ends are dropped,
    blank lines inside are kept. Text before the first heading, if any, is an article of its own.
    """
    article: list[str] = []
    for line in lines:
        if is_article_heading(line) and article:
            yield _article_text(article)
            article = []
        if line.strip() or article:
            article.append(line if line.strip() else "")
    if article:
        yield _article_text(article)


def _article_text(lines: list[str]) -> str:
    while lines and not lines[-1]:
        lines.pop()
    return "".join(line + "\n" for line in lines)


def count_words(lines: Iterable[str]) -> int:
    """WikiText's word count: whitespace-separated tokens plus one end-of-line per line."""
    return sum(_words_in_line(line) for line in lines)


def _words_in_line(line: str) -> int:
    return len(line.split()) + 1


@dataclass(frozen=True)
class Corpus:
    """One WikiText config as found on disk or on the hub, read lazily split by split."""

    dataset: str
    where: str  # the folder or hub dataset it came from, for messages
    fingerprint: str  # changes whenever the source files do
    lines: Callable[[str], Iterator[str]]  # split -> its lines, without newlines
    data_dir: Path | None = None  # the local folder it was found through (absolute), None for the hub

    def articles(self, split: str) -> Iterator[str]:
        return split_articles(self.lines(split))


def load_corpus(dataset: str = "wikitext-2-v1", data_dir: str | Path | None = None) -> Corpus:
    """WikiText from a local folder (the flag, else $COURSE_DATA_DIR, else the folder an earlier `prepare`
    read), else from the Hugging Face hub."""
    return _local_corpus_if_any(dataset, data_dir, default_cache_dir()) or _hub_corpus(dataset)


def _local_corpus_if_any(dataset: str, data_dir: str | Path | None, cache_root: Path) -> Corpus | None:
    """The corpus in the folder named by the flag or $COURSE_DATA_DIR, else in the folder recorded by the newest
    cache of `dataset` under `cache_root` that still holds it; None when there is none."""
    if dataset not in DATASETS:
        raise UserError(f"expected a dataset among {', '.join(DATASETS)}, got {dataset!r}")
    folder = kit.data_dir(data_dir)
    if folder is not None:
        return _local_corpus(dataset, folder)
    for _, meta in _cache_metas(cache_root, dataset):
        recorded = meta.get("data_dir")
        if recorded and Path(recorded).is_dir():
            with contextlib.suppress(UserError):  # the files moved away: try the next cache
                return _local_corpus(dataset, Path(recorded))
    return None


def _local_corpus(dataset: str, folder: Path) -> Corpus:
    folder = folder.resolve()
    extension = "raw" if "-raw-" in dataset else "tokens"
    official = [f"wiki.{split}.{extension}" for split in SPLITS]
    bases = [folder, folder / dataset, folder / OFFICIAL_FOLDER[dataset]]
    for base in bases:
        text_files = [base / name for name in official]
        if all(path.is_file() for path in text_files):
            files = {split: [path] for split, path in zip(SPLITS, text_files)}
            return Corpus(
                dataset, str(base), _fingerprint(files), lambda split: _read_text_lines(files[split][0]), folder
            )
        parquet_files = {split: sorted(base.glob(f"{HUB_SPLIT[split]}-*.parquet")) for split in SPLITS}
        if all(parquet_files.values()):
            return Corpus(
                dataset,
                str(base),
                _fingerprint(parquet_files),
                lambda split: _read_parquet_lines(parquet_files[split]),
                folder,
            )
    searched = " or ".join(str(base) for base in bases)
    found = [name for name in official if any((base / name).is_file() for base in bases)]
    message = (
        f"expected {', '.join(official)} (or the hub's train/validation/test-*.parquet) "
        f"for {dataset} in {searched}, found {' and '.join(found) + ' only' if found else 'none of them'}"
    )
    other_extension = "tokens" if extension == "raw" else "raw"
    if any((base / f"wiki.train.{other_extension}").is_file() for base in bases):
        other = dataset.replace("-raw-", "-") if extension == "raw" else dataset.replace("-v1", "-raw-v1")
        message += f"; there are .{other_extension} files: use --dataset {other} for them"
    raise UserError(message)


def _read_text_lines(path: Path) -> Iterator[str]:
    try:
        with open(path, encoding="utf-8", newline="\n") as f:
            for number, line in enumerate(f, start=1):
                if "\x00" in line:
                    raise UserError(f"expected UTF-8 text in {path}, found a NUL byte on line {number}")
                yield line.rstrip("\r\n")
    except UnicodeDecodeError as error:
        raise UserError(f"expected UTF-8 text in {path}, found bytes that are not ({error.reason})") from None


def _read_parquet_lines(paths: list[Path]) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in paths:
        try:
            parquet = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as error:
            raise UserError(f"expected a parquet file at {path}: {str(error).splitlines()[0]}") from None
        schema = parquet.schema_arrow
        if "text" not in schema.names:
            raise UserError(f"expected a column 'text' in {path}, found {', '.join(schema.names)}")
        if schema.field("text").type not in (pa.string(), pa.large_string()):
            raise UserError(f"expected a string column 'text' in {path}, found {schema.field('text').type}")
        for batch in parquet.iter_batches(batch_size=8192, columns=["text"]):
            for line in batch.column(0).to_pylist():
                yield (line or "").rstrip("\n")


def _hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be reached (one quick request), or None when it answers. In the hub's
    offline mode (HF_HUB_OFFLINE) `datasets` reads its own download cache, so nothing is asked."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_DATASETS_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return None
    try:
        urllib.request.urlopen(urllib.request.Request(constants.ENDPOINT, method="HEAD"), timeout=HUB_TIMEOUT).close()
    except urllib.error.HTTPError:
        return None  # an answer, even an error page, means the hub is there
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        return f"{constants.ENDPOINT} is unreachable: {getattr(reason, 'strerror', None) or reason}"
    return None


def _hub_corpus(dataset: str) -> Corpus:
    advice = "pass --data-dir or set COURSE_DATA_DIR to a folder holding the WikiText files"
    unreachable = _hub_unreachable()
    if unreachable:
        raise UserError(
            f"expected to download {HUB_NAME} ({dataset}) from the Hugging Face hub, but {unreachable}; {advice}"
        )
    try:
        import datasets

        splits = datasets.load_dataset(HUB_NAME, dataset)
    except Exception as error:  # network, hub and cache failures all mean the same to the user
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(
            f"expected to download {HUB_NAME} ({dataset}) from the Hugging Face hub, but could not ({reason}); {advice}"
        ) from None
    cache_files = {split: [Path(f["filename"]) for f in splits[HUB_SPLIT[split]].cache_files] for split in SPLITS}

    def read_lines(split: str) -> Iterator[str]:
        for batch in splits[HUB_SPLIT[split]].iter(batch_size=8192):
            for line in batch["text"]:
                yield line.rstrip("\n")

    return Corpus(dataset, f"{HUB_NAME} ({dataset})", _fingerprint(cache_files), read_lines)


def _fingerprint(files: dict[str, list[Path]]) -> str:
    """A hash of the files' contents (names included), so a changed corpus is re-prepared."""
    digest = hashlib.blake2b(digest_size=16)
    for split in SPLITS:
        for path in files[split]:
            digest.update(f"{split}:{path.name}:".encode())
            try:
                with open(path, "rb") as f:
                    while block := f.read(1 << 20):
                        digest.update(block)
            except OSError as error:
                raise UserError(f"expected a readable file at {path}: {error.strerror}") from None
    return digest.hexdigest()


@dataclass
class SplitStats:
    words: int = 0
    articles: int = 0
    chars: int = 0  # of the articles' text


def split_stats(corpus: Corpus, split: str) -> SplitStats:
    """One pass over a split: counts, and the check that it is text and not empty."""
    stats = SplitStats()

    def counting(lines: Iterable[str]) -> Iterator[str]:
        for line in lines:
            stats.words += _words_in_line(line)
            yield line

    for article in split_articles(counting(corpus.lines(split))):
        stats.articles += 1
        stats.chars += len(article)
    if stats.articles == 0:
        raise UserError(f"expected text in the {split} split of {corpus.dataset} in {corpus.where}, found it empty")
    return stats


# --- preparing: tokenizer + encoded splits, cached ---------------------------------------------


@dataclass(frozen=True)
class PreparedData:
    """A prepared corpus: the tokenizer and every split encoded, in one cache folder.

    dataset:        the WikiText config, e.g. "wikitext-2-v1"
    cache_dir:      the folder of this prepared corpus (inside the cache root)
    tokenizer_path: its tokenizer.json (load with `course.tokenizer.Tokenizer.load`)
    num_tokens:     split -> number of BPE tokens, `<|endoftext|>` between articles included
    num_words:      split -> WikiText words, for perplexity per word: exp(total_nll / num_words)
    """

    dataset: str
    cache_dir: Path
    tokenizer_path: Path
    num_tokens: dict[str, int]
    num_words: dict[str, int]

    def split_path(self, split: str) -> Path:
        """The file of `split`'s ids: raw uint16, native byte order, no header."""
        if split not in SPLITS:
            raise UserError(f"expected a split among {', '.join(SPLITS)}, got {split!r}")
        return self.cache_dir / f"{split}.bin"

    def tokens(self, split: str) -> np.memmap:
        """`split`'s token ids as a read-only uint16 memmap (nothing is read until indexed)."""
        return np.memmap(self.split_path(split), dtype=np.uint16, mode="r")


def prepare(
    dataset: str = "wikitext-2-v1",
    data_dir: str | Path | None = None,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    cache_dir: str | Path | None = None,
    quiet: bool = False,
) -> PreparedData:
    """Load WikiText, train the tokenizer on its train split, encode all splits; cached.

    dataset:    a config of Salesforce/wikitext (see DATASETS)
    data_dir:   a local folder with the WikiText files; None means $COURSE_DATA_DIR, else the folder an earlier
                prepare read, else the newest cache of this dataset and vocabulary as it is, else the hub
    vocab_size: the BPE vocabulary size (at most 65536, as ids are stored as uint16)
    cache_dir:  the cache root; None means `default_cache_dir()`
    quiet:      no progress bars and no summary

    The cache key is the config, a hash of the source files and the tokenizer settings, so a second
    call with the same inputs only reads meta.json. Everything is written to a temporary folder that
    replaces the cache folder at the end (`kit.atomic_folder`): an interrupted prepare never leaves a
    cache that looks complete.
    """
    check_vocab_size(vocab_size)
    root = (Path(cache_dir) if cache_dir is not None else default_cache_dir()).resolve()
    corpus = _local_corpus_if_any(dataset, data_dir, root)
    if corpus is None:
        found = _newest_prepared(root, dataset, vocab_size)
        if found is not None:
            if not quiet:
                print(f"already prepared, nothing to do: {found.cache_dir}")
                _print_summary(found)
            return found
        corpus = _hub_corpus(dataset)
    key = hashlib.blake2b(
        json.dumps([CACHE_FORMAT, dataset, corpus.fingerprint, tokenizer_settings(vocab_size)]).encode(),
        digest_size=8,
    ).hexdigest()
    folder = root / f"{dataset}-bpe{vocab_size}-{key}"
    if (folder / META_FILE).is_file():
        prepared = _read_prepared(folder)
        if not quiet:
            print(f"already prepared, nothing to do: {folder}")
            _print_summary(prepared)
        return prepared
    with contextlib.ExitStack() as stack:
        try:  # the cache replaces a leftover without meta.json, or the identical one of a prepare racing us
            work = stack.enter_context(kit.atomic_folder(folder))
        except OSError as error:
            raise UserError(f"expected a writable cache folder at {root} ({error.strerror})") from None
        _build(corpus, vocab_size, work, quiet)
    prepared = _read_prepared(folder)
    if not quiet:
        _print_summary(prepared)
    return prepared


def _cache_metas(root: Path, dataset: str) -> list[tuple[Path, dict]]:
    """(folder, meta.json) of every complete cache of `dataset` in this format under `root`, newest first."""
    found = []
    for path in root.glob(f"{dataset}-bpe*-*/{META_FILE}"):
        with contextlib.suppress(OSError, ValueError):
            meta = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(meta, dict) and meta.get("format") == CACHE_FORMAT and meta.get("dataset") == dataset:
                found.append((path.stat().st_mtime_ns, path.parent, meta))
    return [(folder, meta) for _, folder, meta in sorted(found, key=lambda entry: entry[0], reverse=True)]


def _newest_prepared(root: Path, dataset: str, vocab_size: int) -> PreparedData | None:
    """The newest cache of `dataset` prepared with these tokenizer settings, used as it is (its source may be gone)."""
    for folder, meta in _cache_metas(root, dataset):
        if meta.get("tokenizer") == tokenizer_settings(vocab_size):
            return _read_prepared(folder)
    return None


def _build(corpus: Corpus, vocab_size: int, folder: Path, quiet: bool) -> None:
    stats = {split: split_stats(corpus, split) for split in SPLITS}
    with tqdm(
        total=stats["train"].chars, unit="char", unit_scale=True, desc="training tokenizer", disable=quiet or None
    ) as progress:
        tokenizer = Tokenizer.train(_reporting(corpus.articles("train"), progress), vocab_size=vocab_size)
    tokenizer.save(folder / TOKENIZER_FILE)
    num_tokens = {}
    for split in SPLITS:
        with tqdm(
            total=stats[split].chars, unit="char", unit_scale=True, desc=f"encoding {split}", disable=quiet or None
        ) as progress:
            num_tokens[split] = _encode_articles(tokenizer, corpus.articles(split), folder / f"{split}.bin", progress)
    meta = {
        "format": CACHE_FORMAT,
        "dataset": corpus.dataset,
        "source": corpus.where,
        "data_dir": str(corpus.data_dir) if corpus.data_dir is not None else None,
        "fingerprint": corpus.fingerprint,
        "tokenizer_path": TOKENIZER_FILE,
        "tokenizer": tokenizer_settings(vocab_size),
        "vocab_size": tokenizer.vocab_size,
        "dtype": "uint16",
        "num_tokens": num_tokens,
        "num_words": {split: stats[split].words for split in SPLITS},
        "num_articles": {split: stats[split].articles for split in SPLITS},
    }
    (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def _encode_articles(tokenizer: Tokenizer, articles: Iterable[str], path: Path, progress: tqdm) -> int:
    """Append each article's ids to `path`, `<|endoftext|>` between articles; returns the count."""
    eot = np.array([tokenizer.eot_id], dtype=np.uint16)
    count = 0
    with open(path, "wb") as f:
        for batch in _batches(articles, ENCODE_BATCH_CHARS):
            for ids in tokenizer.encode_batch(batch):
                if count:
                    f.write(eot.tobytes())
                    count += 1
                f.write(np.asarray(ids, dtype=np.uint16).tobytes())
                count += len(ids)
            progress.update(sum(len(article) for article in batch))
    return count


def _reporting(texts: Iterable[str], progress: tqdm) -> Iterator[str]:
    for text in texts:
        yield text
        progress.update(len(text))


def _batches(texts: Iterable[str], max_chars: int) -> Iterator[list[str]]:
    batch, size = [], 0
    for text in texts:
        batch.append(text)
        size += len(text)
        if size >= max_chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _read_prepared(folder: Path) -> PreparedData:
    meta_path = folder / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        prepared = PreparedData(
            dataset=meta["dataset"],
            cache_dir=folder,
            tokenizer_path=folder / meta["tokenizer_path"],
            num_tokens={split: int(meta["num_tokens"][split]) for split in SPLITS},
            num_words={split: int(meta["num_words"][split]) for split in SPLITS},
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(
            f"expected a readable {META_FILE} in {folder} ({error}); delete the folder to prepare again"
        ) from None
    for split in SPLITS:
        path = prepared.split_path(split)
        if not path.is_file() or path.stat().st_size != 2 * prepared.num_tokens[split]:
            raise UserError(
                f"expected {path} to hold {prepared.num_tokens[split]} uint16 ids; delete {folder} to prepare again"
            )
    return prepared


def _print_summary(prepared: PreparedData) -> None:
    meta = json.loads((prepared.cache_dir / META_FILE).read_text(encoding="utf-8"))
    print(f"{prepared.dataset} from {meta['source']}")
    for split in SPLITS:
        print(f"  {split:5s} {prepared.num_tokens[split]:>12,} tokens  {prepared.num_words[split]:>12,} words")
    print(f"  vocabulary {meta['vocab_size']:,} tokens: {prepared.tokenizer_path}")
    print(f"  cache: {prepared.cache_dir}")


# --- the command --------------------------------------------------------------------------------


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="load WikiText, train the tokenizer, cache the encoded splits",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--dataset", default="wikitext-2-v1", choices=DATASETS, help="the WikiText config")
    parser.add_argument(
        "--data-dir",
        help="a folder with the WikiText files (default: $COURSE_DATA_DIR, else what an earlier prepare used, else the hub)",
    )
    parser.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE, help="BPE vocabulary size")
    parser.add_argument(
        "--cache-dir", help="where encoded splits go (default: $COURSE_CACHE_DIR, else data/cache in the kit's folder)"
    )
    parser.set_defaults(run=run)


def run(args) -> int:
    prepare(args.dataset, data_dir=args.data_dir, vocab_size=args.vocab_size, cache_dir=args.cache_dir)
    return 0
