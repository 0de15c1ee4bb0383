"""The generation loop and `course generate` with a notebook's sampling functions."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys

import nbformat
import pytest
import torch

import course.checkpoint
import course.generation
import course.kit
from course.assignments import assignments, grading
from course.errors import UserError
from course.generation import generate
from course.model import GPT, GPTConfig

VOCAB = 128  # the stand-in tokenizer's ids are character codes

SAMPLER_NOTEBOOK = """\
import torch

def greedy(logits):
    return logits.argmax(dim=-1)

def sample_next(logits, temperature=1.0, top_k=None, top_p=None, min_p=None, generator=None):
    print(f"sample_next temperature={temperature} top_k={top_k} top_p={top_p} min_p={min_p} {type(generator).__name__}")
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

def sample_with_penalties(logits, history, temperature=1.0, top_k=None, top_p=None,
                          frequency_penalty=1.0, presence_penalty=1.0, generator=None):
    print(f"penalties history={tuple(history.shape)} {frequency_penalty} {presence_penalty}")
    return sample_next(logits, temperature, top_k, top_p, generator)
"""


def tiny_gpt(block_size: int = 8) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=VOCAB, block_size=block_size, n_layer=1, n_head=2, n_embd=16))


def argmax(logits, history):
    return logits.argmax(dim=-1)


def test_generate_keeps_prompt_and_adds_tokens():
    prompt = torch.randint(0, VOCAB, (3, 5))
    out = generate(tiny_gpt(), prompt, 4, argmax)
    assert out.shape == (3, 9) and out.dtype == torch.long
    assert torch.equal(out[:, :5], prompt)
    assert torch.equal(generate(tiny_gpt(), prompt, 0, argmax), prompt)


def test_rows_that_emit_eos_are_finished_and_the_loop_ends_when_all_are():
    """A finished row is filled with eos_id; the result is shorter once every row has finished."""
    eos, steps = 3, []
    scripted = [torch.tensor([eos, 5]), torch.tensor([7, 6]), torch.tensor([8, eos]), torch.tensor([9, 9])]

    def script(logits, history):
        steps.append(history.shape[1])
        return scripted[len(steps) - 1]

    prompt = torch.tensor([[1, 2], [2, 1]])
    out = generate(tiny_gpt(), prompt, 10, script, eos_id=eos)
    assert out.tolist() == [[1, 2, eos, eos, eos], [2, 1, 5, 6, eos]]  # row 0's 7 and 8 replaced by eos
    assert steps == [2, 3, 4]  # three steps, not ten
    assert generate(tiny_gpt(), prompt, 4, lambda logits, history: torch.tensor([eos, eos])).shape == (
        2,
        6,
    )  # no eos_id
    assert course.generation.until_eos([4, 5, eos, 6, eos], eos) == [4, 5] and course.generation.until_eos(
        [4], eos
    ) == [4]


def test_generate_crops_the_context_past_block_size():
    model = tiny_gpt(block_size=8)
    seen = []

    def next_token(logits, history):
        seen.append((logits.clone(), history.clone()))
        return (history[:, -1] + 1) % VOCAB

    out = generate(model, torch.tensor([[5, 6, 7]]), 12, next_token)
    assert out[0].tolist() == list(range(5, 20))
    for logits, history in seen:  # the whole history for penalties, the last window for the model
        assert torch.allclose(logits, model(history[:, -8:])[:, -1, :], atol=1e-6)
    assert [h.shape[1] for _, h in seen] == list(range(3, 15))


def test_generate_runs_in_eval_mode_without_grad_and_restores_the_mode():
    model = tiny_gpt().train()
    states = []

    def next_token(logits, history):
        states.append((model.training, torch.is_grad_enabled(), logits.requires_grad))
        return argmax(logits, history)

    generate(model, torch.zeros(1, 2, dtype=torch.long), 2, next_token)
    assert states == [(False, False, False)] * 2 and model.training


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        (lambda logits: logits.argmax(dim=-1, keepdim=True), r"integer ids of shape \(2,\)"),
        (lambda logits: logits.max(dim=-1).values, r"integer ids of shape \(2,\), not a torch.float32"),
        (lambda logits: [0, 0], "not a list"),
        (lambda logits: torch.full((2,), VOCAB), "outside the vocabulary"),
    ],
)
def test_bad_next_token_results_are_named(returned, message):
    with pytest.raises(UserError, match=message):
        generate(tiny_gpt(), torch.zeros(2, 3, dtype=torch.long), 1, lambda logits, history: returned(logits))


def test_bad_prompt_is_refused():
    with pytest.raises(ValueError, match="prompt_ids"):
        generate(tiny_gpt(), torch.zeros(3, dtype=torch.long), 1, argmax)


# ---------------------------------------------------------------- course generate, with a stand-in checkpoint


class CharTokenizer:
    eot_id = 0

    def encode(self, text):
        return [ord(c) % VOCAB for c in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


@pytest.fixture
def stand_in_checkpoint(monkeypatch):
    model = tiny_gpt(block_size=16)
    monkeypatch.setattr(course.checkpoint, "load_checkpoint", lambda path, device="cpu": (model, CharTokenizer()))
    return model


@pytest.fixture
def sampler(tmp_path):
    return write_notebook(tmp_path / "my_sampling.ipynb", SAMPLER_NOTEBOOK)


def write_notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# sampling")] + [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, path)
    return path


def course_generate(*argv) -> int:
    parser = argparse.ArgumentParser()
    course.generation.register(parser.add_subparsers())
    args = parser.parse_args(["generate", "ckpt", *argv])
    return args.run(args)


def test_greedy_prints_prompt_and_greedy_continuation(stand_in_checkpoint, sampler, capsys):
    assert course_generate("--prompt", "abc", "--greedy", "--max-new-tokens", "5", "--sampler", str(sampler)) == 0
    expected = generate(stand_in_checkpoint, torch.tensor([[97, 98, 99]]), 5, argmax)[0].tolist()
    assert capsys.readouterr().out == "".join(map(chr, expected)) + "\n"


def test_options_reach_sample_next_and_the_seed_repeats(stand_in_checkpoint, sampler, capsys):
    def run(seed):
        course_generate("--prompt", "ab", "--max-new-tokens", "6", "--seed", seed, "--temperature", "0.5",
                        "--top-k", "3", "--top-p", "0.9", "--sampler", str(sampler))  # fmt: skip
        return capsys.readouterr().out.splitlines()

    first = run("1")
    assert first[:6] == ["sample_next temperature=0.5 top_k=3 top_p=0.9 min_p=None Generator"] * 6
    assert run("1") == first
    assert run("2") != first
    course_generate("--prompt", "ab", "--max-new-tokens", "1", "--min-p", "0.1", "--sampler", str(sampler))
    assert (
        capsys.readouterr().out.splitlines()[0]
        == "sample_next temperature=1.0 top_k=None top_p=None min_p=0.1 Generator"
    )


def test_a_sampler_from_before_min_p_still_samples(stand_in_checkpoint, tmp_path, capsys):
    notebook = write_notebook(
        tmp_path / "older.ipynb",
        "import torch\n"
        "def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):\n"
        "    return logits.argmax(dim=-1)",
    )
    assert course_generate("--prompt", "ab", "--max-new-tokens", "2", "--top-p", "0.5", "--sampler", str(notebook)) == 0


def test_penalties_use_sample_with_penalties_and_the_whole_history(stand_in_checkpoint, sampler, capsys):
    course_generate("--prompt", "abcd", "--max-new-tokens", "2", "--presence-penalty", "1.5", "--sampler", str(sampler))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "penalties history=(1, 4) 1.0 1.5" and lines[2] == "penalties history=(1, 5) 1.0 1.5"


def test_missing_function_is_named_with_the_option_that_needs_it(stand_in_checkpoint, tmp_path):
    notebook = write_notebook(tmp_path / "partial.ipynb", "def greedy(logits):\n    return logits.argmax(-1)")
    with pytest.raises(UserError, match=rf"^{notebook} defines no `sample_next`; it is needed for --top-p$"):
        course_generate("--prompt", "a", "--top-p", "0.9", "--sampler", str(notebook))
    with pytest.raises(UserError, match=r"defines no `sample_with_penalties`; it is needed for --frequency-penalty$"):
        course_generate("--prompt", "a", "--frequency-penalty", "1.2", "--sampler", str(notebook))


def test_a_stub_that_raises_is_one_line_naming_the_cell(stand_in_checkpoint, tmp_path):
    notebook = write_notebook(
        tmp_path / "student.ipynb",
        "print('top-level work is not run')",
        "def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):\n"
        '    raise NotImplementedError("Your code here")',
    )
    message = rf"^{notebook}: `sample_next` raised NotImplementedError: Your code here \(cell 3, line 2\)$"
    with pytest.raises(UserError, match=message):
        course_generate("--prompt", "a", "--sampler", str(notebook))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--temperature", "0"], "--temperature must be > 0"),
        (["--temperature", "nan"], "--temperature must be > 0"),
        (["--top-p", "1.5"], r"--top-p must be in \(0, 1\]"),
        (["--top-p", "0"], r"--top-p must be in \(0, 1\]"),
        (["--top-k", "0"], "--top-k must be >= 1"),
        (["--max-new-tokens", "-1"], "--max-new-tokens must be >= 0"),
        (["--frequency-penalty", "0"], "--frequency-penalty must be > 0"),
        (["--greedy", "--top-k", "5"], "--greedy takes no sampling options, but --top-k was given"),
        (["--min-p", "1.5"], r"--min-p must be in \[0, 1\]"),
        (["--min-p", "0.1", "--presence-penalty", "1.2"], "--min-p is sample_next's .* give one or the other"),
    ],
)
def test_nonsense_values_are_refused(stand_in_checkpoint, sampler, options, message):
    with pytest.raises(UserError, match=message):
        course_generate("--prompt", "a", "--sampler", str(sampler), *options)


def test_prompt_longer_than_the_context(stand_in_checkpoint, sampler):
    with pytest.raises(UserError, match="the prompt is 17 tokens, longer than the model's context of 16 tokens"):
        course_generate("--prompt", "x" * 17, "--sampler", str(sampler))


def test_empty_prompt_starts_a_new_document_and_stops_at_its_end(stand_in_checkpoint, sampler, capsys, monkeypatch):
    eot = course.checkpoint.load_checkpoint(stand_in_checkpoint)[1].eot_id
    calls = []

    def spy(model, prompt_ids, *args, **kwargs):
        calls.append((prompt_ids.tolist(), kwargs.get("eos_id")))
        return generate(model, prompt_ids, *args, **kwargs)

    monkeypatch.setattr(course.generation, "generate", spy)
    course_generate("--prompt", "", "--greedy", "--max-new-tokens", "3", "--sampler", str(sampler))
    assert calls == [([[eot]], eot)]
    assert len(capsys.readouterr().out) <= 3 + 1  # at most 3 byte tokens, fewer if the document ended


def test_without_sampler_the_solution_notebook_is_used_or_asked_for(stand_in_checkpoint, tmp_path, monkeypatch, capsys):
    """The solution of the assignment that grades the function (its manifest's `graded`), in solutions/ here or in
    the kit; a kit without solutions/ (a student's release) asks for a notebook."""
    penalties, sampling = grading(["sample_with_penalties"]).name, grading(["sample_next"]).name
    elsewhere = tmp_path / "elsewhere" / "grader" / "assignments"
    for one in assignments():
        shutil.copytree(one.folder, elsewhere / one.name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(course.kit, "ROOT", tmp_path / "elsewhere")
    with pytest.raises(UserError, match=rf"^no solutions/{penalties}.ipynb found: give --sampler NOTEBOOK"):
        course_generate("--prompt", "a", "--presence-penalty", "1.2")
    (tmp_path / "solutions").mkdir()
    write_notebook(tmp_path / "solutions" / f"{sampling}.ipynb", SAMPLER_NOTEBOOK)
    assert course_generate("--prompt", "a", "--greedy", "--max-new-tokens", "2") == 0
    shutil.rmtree(elsewhere)
    with pytest.raises(UserError, match=r"^no assignment of this kit grades `greedy`: give --sampler NOTEBOOK"):
        course_generate("--prompt", "a", "--greedy")


# ---------------------------------------------------------------- end to end, with a trained checkpoint


@pytest.mark.slow
def test_course_generate_end_to_end(tiny_checkpoint, sampler):
    def cli(*argv):
        return subprocess.run(
            [sys.executable, "-m", "course.cli", "generate", str(tiny_checkpoint), *argv],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    result = cli(
        "--prompt",
        "The history of",
        "--max-new-tokens",
        "20",
        "--top-k",
        "20",
        "--seed",
        "0",
        "--sampler",
        str(sampler),
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout.split("sample_next temperature=1.0 top_k=20 top_p=None min_p=None Generator\n")[-1]
    assert text.startswith("The history of") and len(text) > len("The history of\n")

    partial = write_notebook(sampler.parent / "partial.ipynb", "def greedy(logits):\n    return logits.argmax(-1)")
    result = cli("--prompt", "The", "--top-p", "0.9", "--sampler", str(partial))
    assert result.returncode == 2
    assert result.stderr == f"course generate: error: {partial} defines no `sample_next`; it is needed for --top-p\n"
