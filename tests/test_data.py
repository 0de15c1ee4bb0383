"""The data layer: WikiText in every accepted layout, articles, word counts, the cache, bad input.

Fast tests use a small hand-made corpus in the official file layout; the real WikiText-2 is read
through the `wikitext2_dir` fixture.
"""

from __future__ import annotations

import argparse
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from course import data
from course.data import PreparedData, count_words, is_article_heading, load_corpus, prepare, split_articles
from course.errors import UserError
from course.kit import ROOT
from course.tokenizer import EOT, Tokenizer

SMALL_VOCAB = 300

# Lines as in the tokenized files: a leading space, blank lines holding one space.
ARTICLE_LINES = {
    "train": [
        " ",
        " = Robert Boulter = ",
        " ",
        " Robert Boulter is an English film , television and theatre actor . ",
        " ",
        " = = Career = = ",
        " ",
        " In 2000 Boulter had a guest @-@ starring role on the television series The Bill . ",
        " ",
        " = Du Fu = ",
        " ",
        " Du Fu was a prominent Chinese poet of the Tang dynasty . ",
        " = = = Early life = = = ",
        " Most of what is known of Du Fu 's life comes from his poems . ",
        " ",
        " ",
        " = Kiss You = ",
        " Kiss You is a song recorded by English @-@ Irish boy band One Direction . ",
        " ",
    ],
    "valid": [" ", " = Homarus gammarus = ", " ", " Homarus gammarus is a species of clawed lobster . ", " "],
    "test": [" ", " = Tropical Storm = ", " ", " The storm formed on June 3 and dissipated on June 9 . ", " "],
}


def write_wikitext(folder: Path, extension: str = "tokens", lines: dict[str, list[str]] = ARTICLE_LINES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, split_lines in lines.items():
        (folder / f"wiki.{split}.{extension}").write_text(
            "".join(line + "\n" for line in split_lines), encoding="utf-8"
        )
    return folder


def write_hub_parquet(folder: Path, shards: dict[str, int]) -> Path:
    """The hub's layout: a `text` column of lines ending in a newline, blank lines as ''."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, hub_split in (("train", "train"), ("valid", "validation"), ("test", "test")):
        rows = [line + "\n" if line.strip() else "" for line in ARTICLE_LINES[split]]
        count = shards.get(split, 1)
        for shard in range(count):
            part = rows[shard * len(rows) // count : (shard + 1) * len(rows) // count]
            pq.write_table(pa.table({"text": part}), folder / f"{hub_split}-{shard:05d}-of-{count:05d}.parquet")
    return folder


@pytest.fixture
def small_corpus(tmp_path) -> Path:
    return write_wikitext(tmp_path / "wikitext")


# --- articles and words ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, expected",
    [
        (" = Du Fu = ", True),
        ("= Du Fu =", True),
        (" = = Career = = ", False),
        (" = = = Early life = = = ", False),
        (" Du Fu = a poet ", False),
        (" = ", False),
        (" ", False),
    ],
)
def test_article_headings_have_one_equals_sign_each_side(line, expected):
    assert is_article_heading(line) is expected


def test_split_articles_at_top_level_headings():
    lines = [line if line.strip() else "" for line in ARTICLE_LINES["train"]]
    assert list(split_articles(lines)) == [
        " = Robert Boulter = \n\n Robert Boulter is an English film , television and theatre actor . \n\n"
        " = = Career = = \n\n In 2000 Boulter had a guest @-@ starring role on the television series The Bill . \n",
        " = Du Fu = \n\n Du Fu was a prominent Chinese poet of the Tang dynasty . \n = = = Early life = = = \n"
        " Most of what is known of Du Fu 's life comes from his poems . \n",
        " = Kiss You = \n Kiss You is a song recorded by English @-@ Irish boy band One Direction . \n",
    ]


def test_text_before_the_first_heading_is_an_article_of_its_own():
    assert list(split_articles(["", " An orphan paragraph . ", "", " = A = ", " Text . "])) == [
        " An orphan paragraph . \n",
        " = A = \n Text . \n",
    ]
    assert list(split_articles(["", "  ", ""])) == []


def test_word_count_is_whitespace_tokens_plus_one_per_line():
    assert count_words([" = A = ", " ", " x y z ", ""]) == 4 + 1 + 4 + 1


def test_real_wikitext2_word_and_article_counts(wikitext2_dir):
    corpus = load_corpus("wikitext-2-v1", wikitext2_dir)
    assert {split: count_words(corpus.lines(split)) for split in data.SPLITS} == {
        "train": 2_088_628,
        "valid": 217_646,
        "test": 245_569,
    }
    assert sum(1 for _ in corpus.articles("valid")) == 60
    assert next(corpus.articles("train")).startswith(" = Valkyria Chronicles III = \n\n Senjō no Valkyria 3 :")


# --- layouts --------------------------------------------------------------------------------------


def test_official_files_and_hub_parquet_give_the_same_lines(tmp_path):
    expected = {split: [line if line.strip() else "" for line in lines] for split, lines in ARTICLE_LINES.items()}
    layouts = {
        "top-level .tokens": ("wikitext-2-v1", write_wikitext(tmp_path / "a")),
        "official zip folder": ("wikitext-2-v1", write_wikitext(tmp_path / "b" / "wikitext-2").parent),
        "raw files": ("wikitext-2-raw-v1", write_wikitext(tmp_path / "c", extension="raw")),
        "hub parquet, config folder, sharded": (
            "wikitext-103-v1",
            write_hub_parquet(tmp_path / "d" / "wikitext-103-v1", {"train": 2}).parent,
        ),
    }
    for layout, (dataset, folder) in layouts.items():
        corpus = load_corpus(dataset, folder)
        for split in data.SPLITS:
            assert [line if line.strip() else "" for line in corpus.lines(split)] == expected[split], layout


def test_without_a_folder_the_hub_dataset_is_read(monkeypatch, tmp_path):
    datasets = pytest.importorskip("datasets")
    hub_rows = {  # as Salesforce/wikitext stores them: lines ending in a newline, blank lines ''
        hub_split: [line + "\n" if line.strip() else "" for line in ARTICLE_LINES[split]]
        for split, hub_split in (("train", "train"), ("valid", "validation"), ("test", "test"))
    }
    requested = []

    def load_dataset(name, config):
        requested.append((name, config))
        return datasets.DatasetDict(
            {split: datasets.Dataset.from_dict({"text": rows}) for split, rows in hub_rows.items()}
        )

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(data, "_hub_unreachable", lambda: None)  # the hub answers
    monkeypatch.delenv("COURSE_DATA_DIR", raising=False)
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))  # nothing prepared
    corpus = load_corpus("wikitext-103-raw-v1")
    assert requested == [("Salesforce/wikitext", "wikitext-103-raw-v1")]
    assert corpus.where == "Salesforce/wikitext (wikitext-103-raw-v1)"
    for split in data.SPLITS:
        assert list(corpus.lines(split)) == [line if line.strip() else "" for line in ARTICLE_LINES[split]]


# --- bad input: one line naming what was expected and where -----------------------------------------


def expect_user_error(pattern: str, call, *args, **kwargs) -> str:
    with pytest.raises(UserError, match=pattern) as error:
        call(*args, **kwargs)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_missing_folder(tmp_path):
    message = expect_user_error(
        "expected a folder holding the WikiText files", load_corpus, "wikitext-2-v1", tmp_path / "nope"
    )
    assert str(tmp_path / "nope") in message


def test_folder_without_the_files_lists_what_it_looked_for(tmp_path):
    (tmp_path / "wiki.train.tokens").write_text(" = A = \n", encoding="utf-8")
    message = expect_user_error(
        "expected wiki.train.tokens, wiki.valid.tokens, wiki.test.tokens", load_corpus, "wikitext-2-v1", tmp_path
    )
    assert (
        "parquet" in message and str(tmp_path / "wikitext-2-v1") in message and str(tmp_path / "wikitext-2") in message
    )
    assert message.endswith("found wiki.train.tokens only")
    empty = tmp_path / "empty"
    empty.mkdir()
    expect_user_error("found none of them", load_corpus, "wikitext-2-v1", empty)


def test_raw_files_for_a_tokenized_config_name_the_right_config(tmp_path):
    write_wikitext(tmp_path, extension="raw")
    expect_user_error("use --dataset wikitext-2-raw-v1", load_corpus, "wikitext-2-v1", tmp_path)
    expect_user_error(
        "use --dataset wikitext-103-v1", load_corpus, "wikitext-103-raw-v1", write_wikitext(tmp_path / "t")
    )


def test_unknown_dataset(small_corpus):
    expect_user_error(
        "expected a dataset among wikitext-2-v1, .*got 'wikitext-3'", load_corpus, "wikitext-3", small_corpus
    )


def test_empty_split(small_corpus, tmp_path):
    (small_corpus / "wiki.valid.tokens").write_text(" \n \n", encoding="utf-8")
    message = expect_user_error(
        "expected text in the valid split",
        prepare,
        data_dir=small_corpus,
        vocab_size=SMALL_VOCAB,
        cache_dir=tmp_path / "cache",
        quiet=True,
    )
    assert str(small_corpus) in message


@pytest.mark.parametrize(
    "content, found",
    [(b" = A = \n \xff\xfe\x80 \n", "bytes that are not"), (b" = A = \n\x00\x00\n", "a NUL byte on line 2")],
)
def test_a_file_that_is_not_text(small_corpus, tmp_path, content, found):
    (small_corpus / "wiki.test.tokens").write_bytes(content)
    message = expect_user_error(
        f"expected UTF-8 text in .*wiki.test.tokens, found {found}",
        prepare,
        data_dir=small_corpus,
        vocab_size=SMALL_VOCAB,
        cache_dir=tmp_path / "cache",
        quiet=True,
    )
    assert str(small_corpus / "wiki.test.tokens") in message
    assert not any((tmp_path / "cache").glob("*/meta.json"))


def test_a_parquet_file_that_is_not_parquet_or_has_no_text(tmp_path):
    folder = write_hub_parquet(tmp_path / "hub", {})
    (folder / "test-00000-of-00001.parquet").write_bytes(b"not a parquet file")
    expect_user_error(
        "expected a parquet file at .*test-00000-of-00001.parquet",
        list,
        load_corpus("wikitext-2-v1", folder).lines("test"),
    )
    pq.write_table(pa.table({"content": ["x"]}), folder / "test-00000-of-00001.parquet")
    expect_user_error(
        "expected a column 'text' in .*test-00000", list, load_corpus("wikitext-2-v1", folder).lines("test")
    )
    pq.write_table(pa.table({"text": [1, 2]}), folder / "test-00000-of-00001.parquet")
    expect_user_error("expected a string column 'text'", list, load_corpus("wikitext-2-v1", folder).lines("test"))


def test_cache_folder_that_cannot_be_written(small_corpus, tmp_path):
    (tmp_path / "a-file").write_text("not a folder", encoding="utf-8")
    expect_user_error(
        "expected a writable cache folder at .*a-file",
        prepare,
        data_dir=small_corpus,
        vocab_size=SMALL_VOCAB,
        cache_dir=tmp_path / "a-file",
        quiet=True,
    )


def test_vocabulary_size_out_of_range(small_corpus, tmp_path):
    expect_user_error(
        "vocabulary size between 259 .* and 65536",
        prepare,
        data_dir=small_corpus,
        vocab_size=70_000,
        cache_dir=tmp_path / "cache",
        quiet=True,
    )


# The hub's address when the network is down: connections are refused at once. Its offline switches are unset.
UNREACHABLE_HUB = {"HF_ENDPOINT": "http://127.0.0.1:9"}
UNSET = ("COURSE_DATA_DIR", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def run_cli(*args: str, cwd: Path = ROOT, **environment: str) -> subprocess.CompletedProcess:
    """`course ARGS...` in a fresh process, without $COURSE_DATA_DIR and without the hub's offline mode."""
    env = {key: value for key, value in os.environ.items() if key not in UNSET} | environment
    return subprocess.run(
        [sys.executable, "-m", "course.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def test_the_command_line_prints_one_line_and_exits_2(tmp_path):
    result = run_cli("prepare", "--data-dir", "/nonexistent", "--cache-dir", str(tmp_path))
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        "course prepare: error: expected a folder holding the WikiText files at /nonexistent, found no such folder\n"
    )
    assert result.stdout == ""


@pytest.mark.slow
def test_without_network_the_hub_fails_in_one_line(tmp_path):
    result = run_cli(
        "prepare",
        "--cache-dir",
        str(tmp_path),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf"),
    )
    assert result.returncode == 2, result.stderr
    last_line = result.stderr.splitlines()[-1]
    assert last_line.startswith("course prepare: error: expected to download Salesforce/wikitext (wikitext-2-v1)")
    assert "--data-dir" in last_line and "Traceback" not in result.stderr


# --- prepare and its cache ------------------------------------------------------------------------


@pytest.fixture
def prepared(small_corpus, tmp_path) -> PreparedData:
    return prepare(
        "wikitext-2-v1", data_dir=small_corpus, vocab_size=SMALL_VOCAB, cache_dir=tmp_path / "cache", quiet=True
    )


def test_prepared_splits_decode_to_the_articles_separated_by_eot(prepared, small_corpus):
    tokenizer = Tokenizer.load(prepared.tokenizer_path)
    assert tokenizer.vocab_size == SMALL_VOCAB
    corpus = load_corpus("wikitext-2-v1", small_corpus)
    for split in data.SPLITS:
        ids = prepared.tokens(split)
        assert isinstance(ids, np.memmap) and ids.dtype == np.uint16 and not ids.flags.writeable
        assert len(ids) == prepared.num_tokens[split] == prepared.split_path(split).stat().st_size // 2
        assert tokenizer.decode(ids).split(EOT) == list(corpus.articles(split))
        assert prepared.num_words[split] == count_words(corpus.lines(split))
    assert (tokenizer.decode(prepared.tokens("train")).count(EOT), prepared.num_words["valid"]) == (
        2,
        1 + 5 + 1 + 10 + 1,
    )


def test_a_second_prepare_does_no_work(prepared, small_corpus, tmp_path, monkeypatch, capsys):
    files = sorted(prepared.cache_dir.iterdir())
    stamps = [path.stat().st_mtime_ns for path in files]

    def no_training(*args, **kwargs):
        raise AssertionError("the tokenizer was trained again")

    monkeypatch.setattr(data.Tokenizer, "train", no_training)
    start = time.perf_counter()
    again = prepare("wikitext-2-v1", data_dir=small_corpus, vocab_size=SMALL_VOCAB, cache_dir=tmp_path / "cache")
    assert time.perf_counter() - start < 1.0
    assert again == prepared
    assert sorted(prepared.cache_dir.iterdir()) == files
    assert [path.stat().st_mtime_ns for path in files] == stamps
    assert "already prepared, nothing to do" in capsys.readouterr().out


def test_changed_sources_or_settings_get_their_own_cache(prepared, small_corpus, tmp_path):
    other_vocab = prepare(
        "wikitext-2-v1", data_dir=small_corpus, vocab_size=SMALL_VOCAB + 10, cache_dir=tmp_path / "cache", quiet=True
    )
    with open(small_corpus / "wiki.test.tokens", "a", encoding="utf-8") as f:
        f.write(" One more line . \n")
    other_text = prepare(
        "wikitext-2-v1", data_dir=small_corpus, vocab_size=SMALL_VOCAB, cache_dir=tmp_path / "cache", quiet=True
    )
    assert len({prepared.cache_dir, other_vocab.cache_dir, other_text.cache_dir}) == 3
    assert other_text.num_words["test"] == prepared.num_words["test"] + 5
    assert prepared.tokens("train").tobytes() == other_text.tokens("train").tobytes()


def test_an_interrupted_prepare_leaves_nothing_that_looks_complete(small_corpus, tmp_path, monkeypatch):
    real_encode = data._encode_articles

    def interrupted_at_test(tokenizer, articles, path, progress):
        if path.name == "test.bin":
            raise KeyboardInterrupt
        return real_encode(tokenizer, articles, path, progress)

    monkeypatch.setattr(data, "_encode_articles", interrupted_at_test)
    with pytest.raises(KeyboardInterrupt):
        prepare(data_dir=small_corpus, vocab_size=SMALL_VOCAB, cache_dir=tmp_path / "cache", quiet=True)
    assert list((tmp_path / "cache").iterdir()) == []
    monkeypatch.undo()
    prepared = prepare(data_dir=small_corpus, vocab_size=SMALL_VOCAB, cache_dir=tmp_path / "cache", quiet=True)
    assert [path.name for path in (tmp_path / "cache").iterdir()] == [prepared.cache_dir.name]


def test_a_damaged_cache_is_reported(prepared, small_corpus, tmp_path):
    with open(prepared.split_path("valid"), "r+b") as f:
        f.truncate(4)
    expect_user_error(
        r"expected .*valid.bin to hold \d+ uint16 ids; delete .* to prepare again",
        prepare,
        data_dir=small_corpus,
        vocab_size=SMALL_VOCAB,
        cache_dir=tmp_path / "cache",
        quiet=True,
    )
    with pytest.raises(UserError, match="expected a split among train, valid, test, got 'validation'"):
        prepared.split_path("validation")


def test_cache_dir_defaults_to_the_environment_then_the_kit_then_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "env-cache"))
    assert data.default_cache_dir() == tmp_path / "env-cache"
    monkeypatch.delenv("COURSE_CACHE_DIR")
    monkeypatch.chdir(tmp_path)  # whatever folder a command or notebook runs from
    assert data.default_cache_dir() == ROOT / "data" / "cache"
    monkeypatch.setattr(data.kit, "ROOT", tmp_path / "site-packages")  # an installed kit, not a clone
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    assert data.default_cache_dir() == tmp_path / "user-cache" / "course-kit"


def test_prepared_files_are_readable_as_the_umask_allows(small_corpus, tmp_path, umask):
    umask(0o022)
    prepared = prepare(data_dir=small_corpus, vocab_size=SMALL_VOCAB, cache_dir=tmp_path / "cache", quiet=True)
    assert stat.S_IMODE(prepared.cache_dir.stat().st_mode) == 0o755
    assert {path.name: stat.S_IMODE(path.stat().st_mode) for path in prepared.cache_dir.iterdir()} == {
        name: 0o644 for name in ("meta.json", "tokenizer.json", "train.bin", "valid.bin", "test.bin")
    }


def test_the_prepare_command_prints_a_summary(small_corpus, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    data.register(parser.add_subparsers())
    args = parser.parse_args(
        [
            "prepare",
            "--data-dir",
            str(small_corpus),
            "--vocab-size",
            str(SMALL_VOCAB),
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    assert args.run(args) == 0
    summary = capsys.readouterr().out
    prepared = prepare(data_dir=small_corpus, vocab_size=SMALL_VOCAB, cache_dir=tmp_path / "cache", quiet=True)
    assert f"{prepared.num_tokens['train']:,} tokens" in summary
    assert f"vocabulary {SMALL_VOCAB} tokens" in summary and str(prepared.cache_dir) in summary


@pytest.mark.slow
def test_prepare_real_wikitext2(wikitext2_dir, course_cache_dir):
    # Shares the session cache with the `tiny_checkpoint` fixture, which then finds it ready.
    start = time.perf_counter()
    prepared = prepare("wikitext-2-v1", data_dir=wikitext2_dir, cache_dir=course_cache_dir, quiet=True)
    seconds = time.perf_counter() - start
    tokenizer = Tokenizer.load(prepared.tokenizer_path)
    assert tokenizer.vocab_size == 24576
    assert prepared.num_words == {"train": 2_088_628, "valid": 217_646, "test": 245_569}
    train = prepared.tokens("train")
    assert 1.0 < prepared.num_tokens["train"] / prepared.num_words["train"] < 1.2  # BPE tokens per WikiText word
    assert prepared.num_tokens["train"] == 2_210_154  # each <unk> one token (WikiText-2's train split has 54,625)
    assert int(np.count_nonzero(train == tokenizer.eot_id)) == 628  # 629 articles
    assert tokenizer.decode(train[:8]).startswith(" = Valkyria Chronicles III = \n")
    articles = list(load_corpus("wikitext-2-v1", wikitext2_dir).articles("valid"))
    assert tokenizer.encode_batch(articles) == [tokenizer.encode(article) for article in articles]
    assert seconds < 120, f"preparing WikiText-2 took {seconds:.0f} s"


# --- prepared once, found again without a folder, an environment variable or the hub ---------------


@pytest.fixture
def no_hub(monkeypatch):
    """No $COURSE_DATA_DIR, and any use of the hub fails the test."""
    monkeypatch.delenv("COURSE_DATA_DIR", raising=False)

    def hub_corpus(dataset):
        raise AssertionError(f"the hub was asked for {dataset}")

    monkeypatch.setattr(data, "_hub_corpus", hub_corpus)


def test_without_a_folder_the_one_an_earlier_prepare_read_is_used(small_corpus, tmp_path, monkeypatch, no_hub):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "cache"))
    first = prepare(data_dir=small_corpus, vocab_size=SMALL_VOCAB, quiet=True)
    assert prepare(vocab_size=SMALL_VOCAB, quiet=True) == first
    assert load_corpus().where == str(small_corpus)  # what the lectures read
    with open(small_corpus / "wiki.test.tokens", "a", encoding="utf-8") as f:
        f.write(" One more line . \n")
    changed = prepare(vocab_size=SMALL_VOCAB, quiet=True)  # the recorded folder is read again, not trusted
    assert changed.cache_dir != first.cache_dir and changed.num_words["test"] == first.num_words["test"] + 5


def test_when_that_folder_is_gone_the_newest_cache_is_used_as_it_is(small_corpus, tmp_path, no_hub, capsys):
    cache = tmp_path / "cache"
    prepare(data_dir=small_corpus, vocab_size=SMALL_VOCAB, cache_dir=cache, quiet=True)
    newest = prepare(data_dir=small_corpus, vocab_size=SMALL_VOCAB + 10, cache_dir=cache, quiet=True)
    small_corpus.rename(tmp_path / "moved")
    capsys.readouterr()
    assert prepare(vocab_size=SMALL_VOCAB + 10, cache_dir=cache) == newest
    printed = capsys.readouterr().out
    assert f"already prepared, nothing to do: {newest.cache_dir}" in printed
    assert f"wikitext-2-v1 from {small_corpus}" in printed
    with pytest.raises(AssertionError, match="the hub was asked for wikitext-103-v1"):  # nothing local for it
        prepare("wikitext-103-v1", vocab_size=SMALL_VOCAB, cache_dir=cache, quiet=True)


def test_with_nothing_prepared_an_unreachable_hub_is_one_line(tmp_path):
    result = run_cli("prepare", COURSE_CACHE_DIR=str(tmp_path / "cache"), **UNREACHABLE_HUB, HF_HOME=str(tmp_path))
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        "course prepare: error: expected to download Salesforce/wikitext (wikitext-2-v1) from the Hugging Face hub, "
        "but http://127.0.0.1:9 is unreachable: Connection refused; "
        "pass --data-dir or set COURSE_DATA_DIR to a folder holding the WikiText files\n"
    )


def test_an_unreachable_hub_is_asked_once_and_datasets_never(tmp_path, monkeypatch):
    """`datasets` retried such a hub for about 30 s before giving up."""
    constants = pytest.importorskip("huggingface_hub.constants")
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(constants, "ENDPOINT", UNREACHABLE_HUB["HF_ENDPOINT"])
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("COURSE_DATA_DIR", raising=False)

    def load_dataset(*args, **kwargs):
        raise AssertionError("datasets was asked to reach an unreachable hub")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    start = time.perf_counter()
    expect_user_error("but http://127.0.0.1:9 is unreachable", prepare, cache_dir=tmp_path, quiet=True)
    assert time.perf_counter() - start < 1.0  # one refused connection


@pytest.mark.slow
def test_once_prepared_course_train_runs_offline_without_a_folder(tmp_path, wikitext2_dir, course_cache_dir):
    """A student prepares once with --data-dir; later commands, run from another folder with no
    $COURSE_DATA_DIR and an unreachable hub, find the prepared corpus and never ask the hub."""
    offline = dict(COURSE_CACHE_DIR=str(course_cache_dir), **UNREACHABLE_HUB, HF_HOME=str(tmp_path / "hf"))
    prepared = run_cli("prepare", "--data-dir", str(wikitext2_dir), **offline)
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    again = run_cli("prepare", cwd=tmp_path, **offline)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already prepared, nothing to do" in again.stdout
    assert f"wikitext-2-v1 from {wikitext2_dir.resolve()}" in again.stdout
    trained = run_cli("train", "--preset", "tiny", "--max-steps", "2", "--out", "tiny", cwd=tmp_path, **offline)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert "saved tiny (step 2" in trained.stdout and "hub" not in trained.stdout + trained.stderr
