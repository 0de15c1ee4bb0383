"""The data-only wire format and the nested calls across it, in one process (the worker side on a thread)."""

from __future__ import annotations

import gc
import json
import math
import socket
import struct
import threading
import time
import types
import weakref
from enum import IntEnum

import pytest
import torch

from grader import wire
from grader.errors import (
    MATCHED_BUILTINS,
    MissingFunction,
    StudentCrashed,
    StudentError,
    StudentModifiedArgument,
    StudentRaised,
    StudentTimeout,
    student_raised,
)
from grader.rpc import StudentObject, TrustedEndpoint, WorkerEndpoint
from grader.testing import expect_number, expect_tensor, expose


def _roundtrip(value, export=None):
    exported = []
    codec = wire.Codec(
        export or (lambda v, enc: exported.append(v) or {"$": "handle", "id": 1, "type": type(v).__name__}),
        lambda tree, dec: ("handle", tree["type"]),
        lambda i: ("own", i),
    )
    a, b = socket.socketpair()
    with a, b:
        buffers: list = []
        wire.send_message(a, {"body": codec.encode(value, buffers)}, buffers)
        header, received = wire.receive_message(b)
    return codec.decode(header["body"], received)


@pytest.mark.parametrize(
    "value",
    [None, True, False, 0, -(2**70), 1.5, -0.0, math.inf, "héllo\n", [], [1, [2, "x"]], (1, (2.0,)),
     {"a": 1, "b": [None]}, types.SimpleNamespace(vocab_size=5, name="x")],
)  # fmt: skip
def test_plain_values_cross_unchanged_and_with_their_exact_type(value):
    out = _roundtrip(value)
    assert out == value and type(out) is type(value)


def test_nan_crosses():
    assert math.isnan(_roundtrip(float("nan")))


@pytest.mark.parametrize("dtype", list(wire.DTYPES.values()))
@pytest.mark.parametrize("shape", [(), (0,), (3,), (2, 0, 4), (2, 3)])
def test_tensors_of_every_dtype_and_shape_cross_bit_for_bit(dtype, shape):
    tensor = (torch.arange(math.prod(shape)).reshape(shape) % 3).to(dtype)
    out = _roundtrip(tensor)
    assert type(out) is torch.Tensor and out.dtype == dtype and out.shape == shape
    assert torch.equal(out, tensor)


def test_non_contiguous_and_grad_tensors_cross_as_plain_data():
    tensor = torch.arange(6.0, requires_grad=True).reshape(2, 3).t()
    out = _roundtrip(tensor)
    assert torch.equal(out, tensor.detach()) and not out.requires_grad and out.is_contiguous()


def test_one_element_with_a_stride_crosses():
    """`logits.topk(2).indices[..., 1]` of one row: contiguous to torch, but its one element is 2 elements apart."""
    second = torch.tensor([[0.5, 3.0, 2.0]]).topk(2, dim=-1).indices[..., 1]
    assert second.stride() == (2,)
    assert _roundtrip(second).tolist() == [2]


def test_subclasses_of_plain_types_cross_as_their_plain_value():
    class Sneaky(int):
        def __eq__(self, other):
            return True

    class Colour(IntEnum):
        RED = 2

    assert type(_roundtrip(Sneaky(3))) is int and _roundtrip(Sneaky(3)) == 3
    assert type(_roundtrip(Colour.RED)) is int


def test_anything_else_crosses_as_a_handle():
    class MyTensor(torch.Tensor):
        pass

    assert _roundtrip(torch.zeros(2).as_subclass(MyTensor)) == ("handle", "MyTensor")
    assert _roundtrip([object()]) == [("handle", "object")]


def test_generator_crosses_as_its_state():
    generator = torch.Generator().manual_seed(7)
    out = _roundtrip(generator)
    assert type(out) is torch.Generator and out is not generator
    assert torch.equal(torch.rand(3, generator=out), torch.rand(3, generator=generator))


def test_dict_keys_must_be_strings_and_nesting_is_bounded():
    with pytest.raises(TypeError, match="string keys"):
        _roundtrip({1: 2})
    deep: list = []
    for _ in range(wire.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(TypeError, match="nested"):
        _roundtrip(deep)


def _raw(header_bytes: bytes, *buffers: bytes) -> socket.socket:
    a, b = socket.socketpair()
    a.sendall(struct.pack("<I", len(header_bytes)) + header_bytes + b"".join(buffers))
    a.close()
    return b


@pytest.mark.parametrize(
    "header, buffers, error",
    [
        (b"not json", (), "not valid JSON"),
        (b"[1]", (), "not a JSON object"),
        (b'{"body": 1}', (), "buffer list"),
        (json.dumps({"buffers": [2**40]}).encode(), (), "over the"),
        (b'{"buffers": [4]}', (b"ab",), "closed"),
    ],
)
def test_malformed_messages_are_refused(header, buffers, error):
    with _raw(header, *buffers) as sock, pytest.raises(wire.WireError, match=error):
        wire.receive_message(sock)


def test_a_huge_header_length_is_refused_before_reading():
    a, b = socket.socketpair()
    with a, b:
        a.sendall(struct.pack("<I", 2**32 - 1))
        with pytest.raises(wire.WireError, match="over the limit"):
            wire.receive_message(b)


@pytest.mark.parametrize(
    "tree, buffers, error",
    [
        ({"$": "tensor", "dtype": "float32", "shape": [3], "buffer": 0}, [bytearray(8)], "needs 12 bytes"),
        ({"$": "tensor", "dtype": "object", "shape": [1], "buffer": 0}, [bytearray(8)], "unknown tensor dtype"),
        ({"$": "tensor", "dtype": "int64", "shape": [-1], "buffer": 0}, [bytearray(8)], "non-negative"),
        ({"$": "tensor", "dtype": "int64", "shape": [1], "buffer": 5}, [bytearray(8)], "not in the message"),
        ({"$": "generator", "buffer": 0}, [bytearray(3)], "generator state"),
        ({"$": "pickle", "v": "..."}, [], "unknown value tag"),
        ({"$": "dict", "v": [1]}, [], "not a dict"),
    ],
)
def test_malformed_values_are_refused(tree, buffers, error):
    codec = wire.Codec(None, None, None)
    with pytest.raises(wire.WireError, match=error):
        codec.decode(tree, buffers)


def _tensor_tree(shape, dtype="float32") -> dict:
    return {"$": "tensor", "dtype": dtype, "shape": shape, "buffer": 0}


@pytest.mark.parametrize(
    "tree, buffer, error",
    [
        (_tensor_tree([2**70]), bytes(8), "more elements than any message can hold"),
        (_tensor_tree([2**70, 0]), b"", "more elements than any message can hold"),  # empty, yet torch would overflow
        (_tensor_tree([2**40, 2**40, 0]), b"", "more elements than any message can hold"),
        (_tensor_tree([2**14] * 3), bytes(8), "more elements than any message can hold"),  # 2**42 in all
        (_tensor_tree([3, -2]), bytes(8), "non-negative integers"),
        (_tensor_tree([2.0]), bytes(8), "non-negative integers"),
        (_tensor_tree([True]), bytes(4), "non-negative integers"),
        (_tensor_tree([1] * 33), bytes(4), "at most 32"),
        (_tensor_tree([2, 2]), bytes(12), "needs 16 bytes, not 12"),
        (_tensor_tree([2**20, 2**8]), bytes(8), "needs 1073741824 bytes, not 8"),
        (_tensor_tree([3], "bool"), bytes([0, 1, 2]), "other than 0 and 1"),
    ],
    ids=["huge", "huge-empty", "product-overflows-empty", "product-huge", "negative", "float", "bool", "33-dims",
         "too-few-bytes", "far-too-few-bytes", "bool-byte-2"],
)  # fmt: skip
def test_forged_tensor_shapes_are_a_wire_error_before_any_allocation(tree, buffer, error):
    """Each dimension is checked, then their product against the buffer's length, before torch sees the shape."""
    with pytest.raises(wire.WireError, match=error):
        wire.Codec(None, None, None).decode(tree, [bytearray(buffer)])


@pytest.mark.parametrize(
    "tree",
    [
        [None] * (wire.MAX_ITEMS + 1),
        {"$": "tuple", "v": [0] * (wire.MAX_ITEMS + 1)},
        {"$": "dict", "v": {str(i): 0 for i in range(wire.MAX_ITEMS + 1)}},
        {"$": "namespace", "v": {f"a{i}": 0 for i in range(wire.MAX_ITEMS + 1)}},
    ],
)
def test_containers_over_the_item_limit_are_refused(tree):
    with pytest.raises(wire.WireError, match=f"over the limit of {wire.MAX_ITEMS}"):
        wire.Codec(None, None, None).decode(tree, [])


def test_containers_at_the_item_limit_and_the_depth_limit_decode():
    codec = wire.Codec(None, None, None)
    assert len(codec.decode([0] * wire.MAX_ITEMS, [])) == wire.MAX_ITEMS
    deep: list = []
    for _ in range(wire.MAX_DEPTH + 1):
        deep = [deep]
    assert codec.decode(deep, []) == deep
    with pytest.raises(wire.WireError, match="nested too deeply"):
        codec.decode([deep], [])


def test_a_message_over_the_limit_is_refused_before_anything_is_sent():
    a, b = socket.socketpair()
    with a, b:
        buffers: list = []
        body = wire.Codec(None, None, None).encode(torch.zeros(1000), buffers)
        with pytest.raises(wire.TooLarge, match="too large"):
            wire.send_message(a, {"body": body}, buffers, max_bytes=1000)
        b.setblocking(False)
        with pytest.raises(BlockingIOError):
            b.recv(1)


# ---------------------------------------------------------------- nested calls, handles, deadlines

STUDENT_CODE = '''
import time, torch

def add_one(t):
    return t + 1

def fails(kind):
    raise {"value": ValueError("bad k"), "stub": NotImplementedError(), "exit": SystemExit(2)}[kind]

def slow(seconds):
    time.sleep(seconds)
    return seconds

def draw(generator):
    return torch.rand(2, generator=generator)

class Cache:
    def __init__(self):
        self.items = []
    def update(self, x):
        self.items.append(x)
        return len(self.items)
    def __len__(self):
        return len(self.items)
    def __getitem__(self, i):
        return self.items[i]

def run_model(model, cache):
    """calls the grader's model, which calls back into the student's cache"""
    return model(torch.ones(2), cache=cache), model.config.width

def keep_model(model, cache):
    cache.items.append(model)
    return 0

def call_hidden(model):
    return model.state_dict()

def call_kept_model(cache):
    """calls the model that an earlier call left in the cache"""
    return cache.items[0](torch.ones(1), cache=cache)

def divide_in_place(logits, temperature):
    logits /= temperature
    return logits

def mask_in_place(logits):
    logits[logits < 0] = float("-inf")
    return logits

def same_tensor(logits, *rest):
    return logits

def zero_nested(batch, extra=None):
    batch["rows"][1].zero_()
    return 0

def bump_second(*tensors):
    tensors[1].add_(1)
    return 0

def reshape_in_place(logits):
    logits.unsqueeze_(0)
    return logits.shape[0]
'''


@pytest.fixture
def endpoint():
    """A trusted endpoint talking to a worker endpoint served on a thread, over a real socket."""
    trusted_sock, worker_sock = socket.socketpair()
    student = types.ModuleType("submission")
    exec(compile(STUDENT_CODE, "<cell 1>", "exec"), student.__dict__)
    worker = WorkerEndpoint(worker_sock, student, perform_load=None)
    thread = threading.Thread(target=lambda: _serve_quietly(worker), daemon=True)
    thread.start()
    yield TrustedEndpoint(trusted_sock)
    trusted_sock.close()


def _serve_quietly(worker):
    try:
        worker.serve_forever()
    except wire.WireError:
        pass


def call(endpoint, name, *args, timeout=5.0, **kwargs):
    return endpoint.call("invoke", 0, name, args, kwargs, label=name, timeout=timeout)


def test_a_call_returns_fresh_data(endpoint):
    out = call(endpoint, "add_one", torch.tensor([1.0, 2.0]))
    expect_tensor(out, dtype=torch.float32, shape=(2,))
    assert out.tolist() == [2.0, 3.0]


def test_student_exceptions_become_student_errors_of_the_matching_builtin(endpoint):
    with pytest.raises(ValueError, match="fails raised ValueError: bad k") as info:
        call(endpoint, "fails", "value")
    assert isinstance(info.value, StudentRaised) and "line" in str(info.value)
    with pytest.raises(NotImplementedError, match="fails is not implemented yet"):
        call(endpoint, "fails", "stub")
    with pytest.raises(StudentCrashed, match="tried to end the worker process"):
        call(endpoint, "fails", "exit")
    assert not isinstance(StudentCrashed("x"), SystemExit)


def test_the_generator_advances_as_if_the_student_had_used_it(endpoint):
    theirs, ours = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    out = call(endpoint, "draw", theirs)
    assert torch.equal(out, torch.rand(2, generator=ours))
    assert torch.equal(theirs.get_state(), ours.get_state())


def test_student_objects_are_handles(endpoint):
    cache = call(endpoint, "Cache")
    assert isinstance(cache, StudentObject) and cache.student_type == "Cache"
    assert cache.update(torch.zeros(1)) == 1 and cache.update(torch.ones(1)) == 2
    assert len(cache) == 2 and torch.equal(cache[1], torch.ones(1))
    assert cache != cache.update  # never equal to anything but itself
    with pytest.raises(TypeError, match="no truth value"):
        bool(cache)
    with pytest.raises(AssertionError, match="should be a torch.Tensor, but it is a Cache"):
        expect_tensor(cache)
    with pytest.raises(AssertionError, match="Python number, but it is a Cache"):
        expect_number(cache)


def test_callbacks_nest_in_both_directions(endpoint):
    seen = []

    class Model:
        def __call__(self, x, cache):
            seen.append(len(cache))  # a call back into the worker while the worker waits for us
            n = cache.update(x * 2)
            seen.append(len(cache))
            return x * n

    cache = call(endpoint, "Cache")
    model = expose(Model(), attributes={"config": types.SimpleNamespace(width=4)})
    out, width = call(endpoint, "run_model", model, cache)
    assert seen == [0, 1] and width == 4 and out.tolist() == [1.0, 1.0]
    assert torch.equal(cache[0], torch.full((2,), 2.0))


def test_an_exposed_object_is_kept_only_while_the_grader_holds_it(endpoint):
    """What student code makes an exposed object record goes with the test: the worker keeps the handle (in its
    Cache), the grader lets go of the object when the test does, and a later call through the handle fails."""

    class Model:
        def __call__(self, x, cache):
            return x + len(cache)

    model = expose(Model())
    released = []
    weakref.finalize(model, released.append, "model")
    cache = call(endpoint, "Cache")
    call(endpoint, "keep_model", model, cache)
    assert call(endpoint, "call_kept_model", cache).tolist() == [2.0]  # the test holds the model: kept
    del model
    gc.collect()
    assert released == ["model"]
    with pytest.raises(StudentRaised, match="the grader's object behind handle 1 is gone"):
        call(endpoint, "call_kept_model", cache)


def test_the_worker_can_use_only_what_is_exposed(endpoint):
    model = torch.nn.Linear(2, 2)
    with pytest.raises(AttributeError, match="no attribute 'state_dict'"):
        call(endpoint, "call_hidden", expose(model))
    with pytest.raises(TypeError, match="wrap the object with grader.testing.expose"):
        call(endpoint, "call_hidden", model)


def test_a_call_past_its_deadline_loses_the_worker(endpoint):
    started = time.monotonic()
    with pytest.raises(StudentTimeout, match="slow did not finish within its time limit"):
        call(endpoint, "slow", 2.0, timeout=0.2)
    assert time.monotonic() - started < 1.5
    with pytest.raises(StudentTimeout):  # a lost worker stays lost: the session replaces it
        call(endpoint, "add_one", torch.zeros(1))


@pytest.mark.parametrize("builtin", MATCHED_BUILTINS, ids=lambda cls: cls.__name__)
def test_a_student_exception_becomes_its_builtin(builtin):
    """MemoryError too: a worker that runs out of memory in a call raises one, and it must reach the test as such."""
    error = student_raised(builtin.__name__, "add_one raised it")
    assert isinstance(error, builtin) and isinstance(error, StudentRaised) and str(error) == "add_one raised it"


def test_student_errors_are_one_family():
    for error in (StudentRaised, StudentTimeout, StudentCrashed, MissingFunction):
        assert issubclass(error, StudentError)


def test_a_tensor_argument_modified_in_place_fails_the_call(endpoint):
    logits = torch.tensor([1.0, -2.0, 4.0])
    with pytest.raises(
        StudentModifiedArgument,
        match=r"divide_in_place modified its argument `logits` in place; it must return a new tensor",
    ):
        call(endpoint, "divide_in_place", logits, 2.0)
    assert logits.tolist() == [1.0, -2.0, 4.0]  # the grader's tensor never changes: the worker had a copy
    with pytest.raises(StudentModifiedArgument, match="`logits`"):
        call(endpoint, "mask_in_place", logits=logits)
    with pytest.raises(StudentModifiedArgument, match="`logits`"):
        call(endpoint, "reshape_in_place", logits)  # a change of shape is a change
    with pytest.raises(StudentModifiedArgument, match=r"zero_nested modified its argument `batch\['rows'\]\[1\]`"):
        call(endpoint, "zero_nested", {"rows": [torch.ones(2), torch.ones(2)]}, extra=torch.ones(1))
    assert call(endpoint, "add_one", torch.zeros(1)).tolist() == [1.0]  # the worker goes on


def test_arguments_returned_unchanged_or_left_alone_pass(endpoint):
    nan = torch.tensor([float("nan"), -0.0, float("-inf")])
    out = call(endpoint, "same_tensor", nan, torch.ones(2), [torch.zeros(3)])
    assert torch.equal(out.view(torch.int32), nan.view(torch.int32))  # bit for bit, NaN included
    assert call(endpoint, "mask_in_place", torch.tensor([1.0, 2.0])).tolist() == [1.0, 2.0]  # nothing to mask
    half = torch.tensor([1.0, 3.0], dtype=torch.bfloat16)
    assert call(endpoint, "same_tensor", half[::1]).dtype == torch.bfloat16


def test_a_call_may_be_allowed_to_modify_its_arguments(endpoint):
    out = endpoint.call(
        "invoke", 0, "divide_in_place", (torch.tensor([2.0]), 2.0), {}, label="d", check_arguments=False
    )
    assert out.tolist() == [1.0]


def _forging_worker(sock: socket.socket, reply_tree: dict, buffer: bytes) -> None:
    """Answer one request with a reply whose tensor says one size while its buffer holds another."""
    with sock:
        wire.receive_message(sock)
        header = json.dumps({"reply": reply_tree, "generators": [], "buffers": [len(buffer)]}).encode()
        sock.sendall(struct.pack("<I", len(header)) + header + buffer)


@pytest.mark.parametrize(
    "shape, buffer",
    [([2**70], bytes(8)), ([2**70, 0], b""), ([2**40, 2**40, 0], b""), ([-1], bytes(8)), ([4], bytes(8))],
)
def test_a_forged_reply_loses_the_worker_with_a_sentence(shape, buffer):
    """A reply with an impossible tensor shape is a protocol error: the call fails, the worker is replaced."""
    trusted_sock, worker_sock = socket.socketpair()
    forger = threading.Thread(target=_forging_worker, args=(worker_sock, _tensor_tree(shape), buffer), daemon=True)
    forger.start()
    with trusted_sock:
        endpoint = TrustedEndpoint(trusted_sock)
        with pytest.raises(StudentCrashed, match=r"^add_one broke the worker's connection to the grader \(a tensor"):
            call(endpoint, "add_one", 1.0)
    forger.join(timeout=5)


def test_an_argument_without_a_parameter_name_is_named_by_its_position(endpoint):
    with pytest.raises(StudentModifiedArgument, match="bump_second modified its argument at position 2 in place"):
        call(endpoint, "bump_second", torch.ones(1), torch.ones(1))
