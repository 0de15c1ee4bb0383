"""Hidden tests of the example assignment: instructors only."""

import torch

from grader.testing import expect_number, expect_tensor, expose, points

SECRET_EXPECTED_COUNT = 7  # a hidden expected value: it must never appear in feedback


def test_count(student):
    """count returns how many items a list holds, as an int"""
    expect_number(student.count(list(range(SECRET_EXPECTED_COUNT))))
    assert student.count(list(range(SECRET_EXPECTED_COUNT))) == SECRET_EXPECTED_COUNT, "count is wrong for a list of 7"


@points(2)
def test_draw_uses_the_generator(student):
    """draw takes its randomness from the generator it is given"""
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    theirs, ours = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _ in range(3):
        out = student.draw(probs, generator=theirs)
        expect_tensor(out, dtype=torch.int64, shape=(1,))
        assert torch.equal(out, torch.multinomial(probs, 1, generator=ours)), "draw does not follow the generator"


def test_counter_handle(student):
    """Counter counts the items added to it, and len() tells how many"""
    counter = student.Counter()
    counter.add(2)
    counter.add(5)
    assert len(counter) == 2, "len(Counter) should be the number of add() calls"
    assert counter.total() == 7, "Counter.total() should be the sum of the items added"


def test_apply_twice_calls_back(student):
    """apply_twice calls the function it is given twice (the function runs in the grader)"""
    calls = []

    def double(t):
        calls.append(t.clone())
        return t * 2

    out = student.apply_twice(expose(double), torch.tensor([1.5]))
    expect_tensor(out, dtype=torch.float32, shape=(1,))
    assert len(calls) == 2 and out.item() == 6.0, "apply_twice should call the function twice"
