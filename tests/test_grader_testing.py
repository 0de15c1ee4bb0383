"""grader.testing's shared trusted helpers: the seeded generator, the frequency check (its tolerance, what it counts and
the one figure a report states), the toy language models; and a grading that counts the checks its tests make."""

from __future__ import annotations

import math
from pathlib import Path

import nbformat
import pytest
import torch

from grader import testing
from grader.results import frequency_checks_by_file, report
from grader.runner import grade
from grader.testing import (
    FALSE_FAILURE_PER_CHECK,
    PrefixModel,
    chance_statement,
    expect_frequencies,
    frequency_checks_made,
    frequency_tolerance,
    hashed_model,
    seeded,
    table_model,
)


@pytest.mark.parametrize(("p", "n"), [(0.5, 20_000), (0.3, 1_000), (0.01, 500), (0.99, 50)])
def test_the_tolerance_solves_bernsteins_bound_at_the_stated_rate(p, n):
    """2 exp(-n t^2 / (2 p (1 - p) + 2 t / 3)) = FALSE_FAILURE_PER_CHECK at t = frequency_tolerance(p, n)."""
    t = frequency_tolerance(p, n)
    bound = 2 * math.exp(-n * t * t / (2 * p * (1 - p) + 2 * t / 3))
    assert bound == pytest.approx(FALSE_FAILURE_PER_CHECK, rel=1e-9)


def test_a_correct_sampler_passes_and_each_token_of_non_zero_probability_is_one_check():
    probabilities = torch.tensor([0.5, 0.3, 0.0, 0.2], dtype=torch.float64)
    before = frequency_checks_made()
    for seed in range(50):  # 50 runs of 3 checks at 1e-9 each: a failure here would be a 1.5e-7 event
        draws = torch.multinomial(probabilities, 2_000, replacement=True, generator=seeded(seed))
        expect_frequencies(draws, probabilities, "multinomial")
    assert frequency_checks_made() - before == 50 * 3  # the token of probability 0 is certain, not a check


@pytest.mark.parametrize(
    ("draws", "message"),
    [
        (torch.tensor([0] * 700 + [1] * 300), r"^skewed: over 1000 draws a token of probability 0.500 came out 0.700"),
        (torch.tensor([0, 1, 2] * 10), r"^skewed: a token with probability 0 \(logit -inf after filtering\) was drawn"),
        (torch.tensor([0, 1, 5]), r"^skewed: an id outside the vocabulary 0..2 was drawn"),
        (torch.tensor([0, -1]), r"^skewed: an id outside the vocabulary 0..2 was drawn"),
        (torch.tensor([], dtype=torch.long), r"^skewed: no draws to count"),
    ],
)
def test_a_wrong_sampler_fails_with_what_it_drew(draws, message):
    with pytest.raises(AssertionError, match=message):
        expect_frequencies(draws, [0.5, 0.5, 0.0], "skewed")


def test_the_report_states_the_checks_per_file_and_their_union_bound():
    assert chance_statement({}) == ""
    assert chance_statement({"test_visible.py": 3, "test_hidden.py": 18}) == (
        "Sampled frequencies: 21 checks (test_hidden.py 18, test_visible.py 3), each failing a correct sampler with "
        "probability at most 1e-09: a correct notebook loses a point to chance with probability at most 2.1e-08."
    )


def test_the_same_seed_draws_the_same():
    assert torch.equal(torch.rand(5, generator=seeded(3)), torch.rand(5, generator=seeded(3)))
    assert not torch.equal(torch.rand(5, generator=seeded(3)), torch.rand(5, generator=seeded(4)))


def test_a_table_model_gives_its_distribution_per_context_as_logits():
    model = table_model({(): (0.5, 0.5, 0.0), (1,): (0.1, 0.2, 0.7)}, default=(0.2, 0.2, 0.6), prompt_length=1)
    logits = model(torch.tensor([[2, 1, 0]]))
    assert logits.shape == (1, 3, 3) and logits.dtype == torch.float32
    for position, expected in enumerate([(0.5, 0.5, 0.0), (0.1, 0.2, 0.7), (0.2, 0.2, 0.6)]):
        probabilities = torch.softmax(logits[0, position].double(), dim=-1)
        torch.testing.assert_close(probabilities, torch.tensor(expected, dtype=torch.float64), atol=1e-6, rtol=0)
    assert not torch.allclose(logits[0, 1].exp().sum(), torch.tensor(1.0))  # logits, not log-probabilities
    assert torch.equal(model.probabilities((2, 1)), torch.softmax(logits[0, 1].double(), dim=-1))


def test_a_hashed_model_is_the_same_everywhere_and_refuses_what_it_cannot_run():
    first, again = hashed_model(vocab_size=5, seed=7, block_size=4), hashed_model(vocab_size=5, seed=7, block_size=4)
    ids = torch.tensor([[1, 2, 3], [4, 0, 1]])
    assert torch.equal(first(ids), again(ids)) and not torch.equal(first(ids), hashed_model(5, 8, block_size=4)(ids))
    assert (first.calls, first.positions) == (2, 12)  # two calls of 2 rows x 3 positions
    for wrong, message in [
        (torch.tensor([[1, 2, 3, 4, 0]]), r"1 to block_size = 4 positions"),
        (torch.tensor([[1, 9]]), r"ids outside its vocabulary 0..4"),
        (torch.tensor([[1.0]]), r"should have dtype torch.int64"),
    ]:
        with pytest.raises((ValueError, AssertionError), match=message):
            first(wrong)
    with pytest.raises(TypeError, match="takes no cache"):
        first(ids, cache=object())


def test_a_prefix_model_stops_a_runaway_caller():
    model = PrefixModel(lambda prefix: [0.0, 0.0], vocab_size=2, block_size=8, max_calls=3, max_positions=10)
    for _ in range(3):
        model(torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="called more than 3 times in one test"):
        model(torch.zeros(1, 2, dtype=torch.long))
    roomy = PrefixModel(lambda prefix: [0.0, 0.0], vocab_size=2, block_size=8, max_positions=10)
    roomy(torch.zeros(1, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="run on more than 10 positions in one test"):
        roomy(torch.zeros(1, 8, dtype=torch.long))


FREQUENCY_TEST = '''
from grader.testing import expect_frequencies, points, seeded


@points(1)
def test_sample(student):
    """sample follows softmax"""
    import torch

    out = student.sample(torch.log(torch.tensor([0.25, 0.75])).expand(4000, 2), generator=seeded(0))
    expect_frequencies(out, [0.25, 0.75], "sample")
'''


SAMPLER = """import torch

def sample(logits, generator=None):
    return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)[:, 0]
"""


@pytest.mark.slow  # a grading
def test_a_grading_counts_the_checks_of_each_test_and_its_report_says_so(tmp_path):
    tests = tmp_path / "07_example"
    tests.mkdir()
    (tests / "test_visible.py").write_text(FREQUENCY_TEST)
    submitted = tmp_path / "07_example.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SAMPLER)]), submitted)
    results = grade(submitted, tests, visible_only=True)
    assert results["score"] == 1
    assert results["tests"][0]["extra_data"] == {"test": "test_visible.py::test_sample", "frequency_checks": 2}
    assert frequency_checks_by_file(results) == {"test_visible.py": 2}
    assert report(results, "example").splitlines()[-1] == chance_statement({"test_visible.py": 2})


def test_only_the_shared_helpers_are_the_assignments_own():
    """No assignment's tests define their own seeded generator or frequency check: grader.testing's are theirs."""
    root = Path(testing.__file__).parent / "assignments"
    for path in root.glob("*/*.py"):
        text = path.read_text()
        assert "torch.Generator().manual_seed" not in text and "frequency_tolerance(" not in text, path
        assert "class PrefixModel" not in text, path
