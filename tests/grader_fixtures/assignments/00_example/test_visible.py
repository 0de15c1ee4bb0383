"""Visible tests of the example assignment: shipped to students, run by `grader check`."""

import pytest
import torch

from grader.testing import expect_tensor, points


@points(2)
def test_add_one(student):
    """add_one adds one to every element"""
    out = student.add_one(torch.tensor([1.0, 2.5]))
    expect_tensor(out, dtype=torch.float32, shape=(2,))
    assert torch.equal(out, torch.tensor([2.0, 3.5])), f"add_one([1.0, 2.5]) should be [2.0, 3.5], not {out.tolist()}"


def test_pick(student):
    """pick returns the index of the largest logit"""
    out = student.pick(torch.tensor([0.1, 3.0, 2.0]))
    expect_tensor(out, dtype=torch.int64, shape=())
    assert out.item() == 1, "pick should return 1, the index of the largest logit 3.0"


def test_pick_rejects_empty(student):
    """pick raises ValueError on an empty tensor"""
    with pytest.raises(ValueError):
        student.pick(torch.tensor([]))
