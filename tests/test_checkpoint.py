"""Checkpoints: exact round trip, tied weights stored once, atomic saves, one-line errors on bad folders."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import course.checkpoint as checkpoint
from course.checkpoint import find_checkpoints, load_checkpoint, load_train_state, save_checkpoint
from course.errors import UserError
from course.model import GPT, GPTConfig
from course.tokenizer import Tokenizer

TEXT = [
    "The cat sat on the mat. The dog sat on the log.",
    "A tiny corpus for a tiny tokenizer, with numbers 1 2 3 and words that repeat: the the the.",
]


def make_tokenizer(vocab_size: int = 300) -> Tokenizer:
    return Tokenizer.train(TEXT * 20, vocab_size=vocab_size)


def make_model(vocab_size: int, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=16))


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture
def saved(tmp_path, tokenizer):
    model = make_model(tokenizer.vocab_size)
    path = save_checkpoint(tmp_path / "ckpt", model, tokenizer, train_state={"step": 7, "history": [{"step": 7}]})
    return path, model


def folder_bytes(path):
    return {file.name: file.read_bytes() for file in sorted(path.iterdir())}


def test_round_trip_gives_identical_logits_and_state(saved, tokenizer):
    path, model = saved
    loaded, loaded_tokenizer = load_checkpoint(path)
    ids = torch.randint(0, tokenizer.vocab_size, (2, 10))
    assert torch.equal(loaded(ids), model(ids))
    assert loaded.config == model.config
    assert not loaded.training
    assert loaded_tokenizer.encode(TEXT[0]) == tokenizer.encode(TEXT[0])
    assert load_train_state(path) == {"step": 7, "history": [{"step": 7}]}


def test_tied_weights_are_stored_once_and_stay_tied(saved):
    path, _ = saved
    assert "lm_head.weight" not in load_file(path / "model.safetensors")
    loaded, _ = load_checkpoint(path)
    assert loaded.lm_head.weight is loaded.transformer.wte.weight


def test_saving_again_replaces_the_folder_and_leaves_no_temporary_files(saved, tokenizer):
    path, _ = saved
    newer = make_model(tokenizer.vocab_size, seed=1)
    save_checkpoint(path, newer, tokenizer)  # no train state this time
    assert sorted(os.listdir(path)) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert os.listdir(path.parent) == ["ckpt"]
    loaded, _ = load_checkpoint(path)
    assert torch.equal(loaded.transformer.wte.weight, newer.transformer.wte.weight)


def test_the_checkpoint_is_readable_as_the_umask_allows(tmp_path, tokenizer, umask):
    umask(0o022)
    path = save_checkpoint(tmp_path / "ckpt", make_model(tokenizer.vocab_size), tokenizer, train_state={"step": 1})
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert {file.name: stat.S_IMODE(file.stat().st_mode) for file in path.iterdir()} == {
        "config.json": 0o644,
        "model.safetensors": 0o644,
        "tokenizer.json": 0o644,
        "train_state.pt": 0o644,
    }


def test_a_crash_while_writing_leaves_the_previous_checkpoint_unchanged(saved, tokenizer, monkeypatch):
    path, _ = saved
    before = folder_bytes(path)

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)  # the last file of the save
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, make_model(tokenizer.vocab_size, seed=2), tokenizer, train_state={"step": 8})
    assert folder_bytes(path) == before
    assert os.listdir(path.parent) == ["ckpt"]
    load_checkpoint(path)


def test_a_crash_between_the_renames_of_the_swap_is_recovered(saved, tokenizer, monkeypatch):
    """Killed after the old folder moved aside and before the new one moved in: loading finds the old one."""
    path, _ = saved
    before = folder_bytes(path)
    real_replace = os.replace

    def die_on_swap_in(src, dst):
        if Path(src).suffix == ".partial":  # the new folder moving in
            raise KeyboardInterrupt  # what a kill at that instant looks like from here
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", die_on_swap_in)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, make_model(tokenizer.vocab_size, seed=3), tokenizer, train_state={"step": 9})
    monkeypatch.setattr(os, "replace", real_replace)
    assert not path.exists()
    load_checkpoint(path)
    assert folder_bytes(path) == before
    assert load_train_state(path)["step"] == 7


def expect_user_error(path, *fragments):
    with pytest.raises(UserError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_missing_folder(tmp_path):
    expect_user_error(tmp_path / "nowhere", "does not exist")


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "tokenizer.json"])
def test_missing_file(saved, name):
    path, _ = saved
    (path / name).unlink()
    expect_user_error(path, f"has no {name}")


def test_missing_train_state_is_named(saved, tokenizer):
    path, model = saved
    save_checkpoint(path, model, tokenizer)
    with pytest.raises(UserError, match="has no train_state.pt"):
        load_train_state(path)


def test_truncated_weights(saved):
    path, _ = saved
    file = path / "model.safetensors"
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    expect_user_error(path, "truncated or not a safetensors file")


def test_foreign_weights(saved):
    path, _ = saved
    save_file({"bert.embeddings.word_embeddings.weight": torch.zeros(4, 4)}, path / "model.safetensors")
    expect_user_error(path, "does not hold a course GPT", "missing tensor")


def test_config_that_does_not_match_the_weights_names_the_tensor_and_shapes(saved):
    path, _ = saved
    config = json.loads((path / "config.json").read_text())
    config["model"]["block_size"] = 32
    (path / "config.json").write_text(json.dumps(config))
    expect_user_error(path, "'transformer.wpe.weight'", "(16, 16)", "(32, 16)")


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("{not json", "not a course checkpoint config"),
        ('{"format_version": 99, "model": {}}', "format_version 99"),
        ('{"format_version": 1, "model": {"n_layers": 2}}', "exactly the fields"),
    ],
)
def test_bad_config(saved, text, fragment):
    path, _ = saved
    (path / "config.json").write_text(text)
    expect_user_error(path, fragment)


def test_tokenizer_vocabulary_must_match_the_config(saved):
    path, _ = saved
    make_tokenizer(vocab_size=280).save(path / "tokenizer.json")
    expect_user_error(path, "tokenizer.json has 280 tokens", "vocab_size 300")


def test_damaged_train_state(saved):
    path, _ = saved
    (path / "train_state.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="damaged"):
        load_train_state(path)


def fake_checkpoint(folder):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    return folder


def test_checkpoints_are_found_here_then_one_folder_up_the_largest_preset_first(tmp_path, monkeypatch):
    monkeypatch.delenv("COURSE_CHECKPOINT", raising=False)
    notebooks = tmp_path / "assignments"
    notebooks.mkdir()
    assert find_checkpoints(notebooks) == {}
    up = {name: fake_checkpoint(tmp_path / "runs" / name) for name in ("tiny", "laptop", "course")}
    here = fake_checkpoint(notebooks / "runs" / "tiny")
    assert find_checkpoints(notebooks) == {"course": up["course"], "laptop": up["laptop"], "tiny": here}
    monkeypatch.setenv("COURSE_CHECKPOINT", str(up["tiny"]))
    assert list(find_checkpoints(notebooks)) == ["env", "course", "laptop", "tiny"]
    monkeypatch.setenv("COURSE_CHECKPOINT", str(up["course"]))  # the same folder is listed once
    assert list(find_checkpoints(notebooks)) == ["env", "laptop", "tiny"]
    monkeypatch.setenv("COURSE_CHECKPOINT", str(tmp_path))
    with pytest.raises(UserError, match=rf"COURSE_CHECKPOINT={tmp_path} is not a checkpoint folder"):
        find_checkpoints(notebooks)
