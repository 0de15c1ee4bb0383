"""What crosses the process boundary: data only, never pickles.

A message is a 4-byte length, a JSON header, then the raw bytes of every tensor it carries:

    [u32 header length][JSON header: {"body": <value tree>, "buffers": [n0, n1, ...]}][n0 bytes][n1 bytes]...

In the value tree, JSON's own null, booleans, numbers (NaN and infinities included), strings and
arrays (lists) stand for themselves. Everything else is an object tagged by its "$" key:

    {"$": "tuple", "v": [...]}                 {"$": "dict", "v": {"key": ...}}   (string keys only)
    {"$": "namespace", "v": {...}}             a types.SimpleNamespace
    {"$": "tensor", "dtype": "float32", "shape": [2, 3], "buffer": 0}
    {"$": "generator", "buffer": 1}            a torch.Generator, as its state
    {"$": "handle", "id": 7, "type": "KVCache", ...}   an object that stays on the sender's side
    {"$": "yours", "id": 7}                    one of the receiver's own objects, sent back to it

Decoding builds fresh plain objects only (exact builtin types and plain CPU tensors) and checks
every size before it allocates anything: nesting depth, items per container, each tensor's shape
(non-negative integers whose product no message could hold) against its buffer's length, and a
bool tensor's bytes (0 or 1). Whatever the other side sends, the receiver gets data or a clear WireError.
Handles are turned into proxies by the `Codec` owner (grader.rpc), which decides what a handle may do.
"""

from __future__ import annotations

import json
import math
import socket
import struct
import types
from collections.abc import Callable

import torch

MAX_MESSAGE_BYTES = 256 * 1024 * 1024
MAX_HEADER_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 64
MAX_ITEMS = 2**20  # per list, tuple, dict or namespace
MAX_DIMS = 32
_LENGTH = struct.Struct("<I")

DTYPES = {
    str(dtype).removeprefix("torch."): dtype
    for dtype in (
        torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
        torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128,
    )
}  # fmt: skip


class WireError(Exception):
    """A message that breaks the format or its limits. On the trusted side: the worker misbehaved."""


class PeerClosed(WireError):
    """The other side closed the connection (or died)."""


class TooLarge(WireError):
    """A message over the size limit; raised before any of it is sent."""


class Codec:
    """Turns values into (tree, buffers) and back. `export` and `import_handle` decide about handles.

    export(obj, encode) -> dict:      how an object that is not data crosses (a handle), or raises TypeError
    import_handle(tree, decode) -> x: the proxy standing for a handle the peer sent (`decode` reads its fields)
    own(id) -> x:             one of our own exported objects, sent back by the peer
    """

    def __init__(self, export: Callable, import_handle: Callable, own: Callable):
        self.export = export
        self.import_handle = import_handle
        self.own = own

    # ---------------------------------------------------------------- encoding

    def encode(
        self,
        value,
        buffers: list,
        generators: list | None = None,
        depth: int = 0,
        tensors: list | None = None,
        path: str = "",
    ):
        """The tree for `value`, appending tensor bytes to `buffers` and generators met to `generators`.

        With a `tensors` list, every tensor met is recorded there as (path, its tree), the path
        written from `path` as Python would index it: `path[0]`, `path['key']`, `path.attr`.
        """
        if depth > MAX_DEPTH:
            raise TypeError(f"a value nested more than {MAX_DEPTH} levels deep cannot be sent")
        kind = type(value)
        if value is None or kind in (bool, str):
            return value
        if kind is int or kind is float:
            return value
        if isinstance(value, (int, float, str)):
            return _plain_scalar(value)  # subclasses of int, str, ...: only their plain value crosses

        def inner(v, key: str = ""):
            return self.encode(v, buffers, generators, depth + 1, tensors, path + key)

        if kind is list:
            return [inner(v, f"[{i}]") for i, v in enumerate(value)]
        if kind is tuple:
            return {"$": "tuple", "v": [inner(v, f"[{i}]") for i, v in enumerate(value)]}
        if kind is dict:
            if not all(type(k) is str for k in value):
                raise TypeError("only dictionaries with string keys can be sent")
            return {"$": "dict", "v": {k: inner(v, f"[{k!r}]") for k, v in value.items()}}
        if kind is types.SimpleNamespace:
            return {"$": "namespace", "v": {k: inner(v, f".{k}") for k, v in vars(value).items()}}
        if kind is torch.Tensor:
            tree = {"$": "tensor", **self._tensor(value, buffers)}
            if tensors is not None:
                tensors.append((path, tree))
            return tree
        if kind is torch.Generator:
            if generators is not None:
                generators.append(value)
            buffers.append(_tensor_bytes(value.get_state()))
            return {"$": "generator", "buffer": len(buffers) - 1}
        return self.export(value, inner)

    @staticmethod
    def _tensor(tensor: torch.Tensor, buffers: list) -> dict:
        tensor = tensor.detach().cpu().contiguous()
        if tensor.is_quantized or tensor.is_sparse or str(tensor.dtype).removeprefix("torch.") not in DTYPES:
            raise TypeError(f"a tensor of dtype {tensor.dtype} cannot be sent")
        buffers.append(_tensor_bytes(tensor))
        return {
            "dtype": str(tensor.dtype).removeprefix("torch."),
            "shape": list(tensor.shape),
            "buffer": len(buffers) - 1,
        }

    # ---------------------------------------------------------------- decoding

    def decode(
        self,
        tree,
        buffers: list[bytearray],
        generators: list | None = None,
        depth: int = 0,
        tensors: list | None = None,
    ):
        """Fresh plain objects for `tree`; generators decoded are appended to `generators`, and with a
        `tensors` list every tensor decoded is recorded there as (buffer index, tensor)."""
        if depth > MAX_DEPTH + 1:
            raise WireError("the value is nested too deeply")
        if tree is None or type(tree) in (bool, int, float, str):
            return tree

        def inner(v):
            return self.decode(v, buffers, generators, depth + 1, tensors)

        if type(tree) is list:
            return [inner(v) for v in _items(tree)]
        if type(tree) is not dict:
            raise WireError(f"unexpected JSON value of type {type(tree).__name__}")
        tag = tree.get("$")
        if tag == "tuple":
            return tuple(inner(v) for v in _items(_field(tree, "v", list)))
        if tag == "dict":
            return {k: inner(v) for k, v in _items(_field(tree, "v", dict)).items()}
        if tag == "namespace":
            return types.SimpleNamespace(**{k: inner(v) for k, v in _items(_field(tree, "v", dict)).items()})
        if tag == "tensor":
            tensor = _decode_tensor(tree, buffers)
            if tensors is not None:
                tensors.append((tree["buffer"], tensor))
            return tensor
        if tag == "generator":
            generator = torch.Generator()
            try:
                generator.set_state(_bytes_tensor(_buffer(tree, buffers)))
            except RuntimeError as e:
                raise WireError(f"a generator state was refused ({e})") from None
            if generators is not None:
                generators.append(generator)
            return generator
        if tag == "handle":
            _field(tree, "id", int)
            _field(tree, "type", str)
            return self.import_handle(tree, inner)
        if tag == "yours":
            return self.own(_field(tree, "id", int))
        raise WireError(f"unknown value tag {tag!r}")


def _plain_scalar(value):
    for plain in (int, float, str):
        if isinstance(value, plain):
            return plain(value)


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    flat = tensor.reshape(-1)
    if flat.numel() == 0:
        return memoryview(b"")
    if flat.stride(0) != 1:  # one element with a stride (`topk(2).indices[..., 1]` of one row) is a view of it
        flat = flat.clone(memory_format=torch.contiguous_format)
    return memoryview(flat.view(torch.uint8).numpy())


def _bytes_tensor(data: bytearray) -> torch.Tensor:
    if not data:
        return torch.empty(0, dtype=torch.uint8)
    return torch.frombuffer(data, dtype=torch.uint8)


def _field(tree: dict, key: str, kind: type):
    value = tree.get(key)
    if type(value) is not kind:
        raise WireError(f"field {key!r} of a {tree.get('$')!r} value is not a {kind.__name__}")
    return value


def _items(container):
    if len(container) > MAX_ITEMS:
        raise WireError(f"a container of {len(container)} items is over the limit of {MAX_ITEMS}")
    return container


def _buffer(tree: dict, buffers: list[bytearray]) -> bytearray:
    index = _field(tree, "buffer", int)
    if not 0 <= index < len(buffers):
        raise WireError("a value refers to a buffer that is not in the message")
    return buffers[index]


def _decode_tensor(tree: dict, buffers: list[bytearray]) -> torch.Tensor:
    dtype = DTYPES.get(_field(tree, "dtype", str))
    if dtype is None:
        raise WireError(f"unknown tensor dtype {tree['dtype']!r}")
    shape = _field(tree, "shape", list)
    if len(shape) > MAX_DIMS or not all(type(n) is int and n >= 0 for n in shape):
        raise WireError(f"a tensor shape must be at most {MAX_DIMS} non-negative integers")
    # Even an empty tensor's other dimensions must fit in memory's address arithmetic: bound them as if non-zero.
    if math.prod(max(n, 1) for n in shape) > MAX_MESSAGE_BYTES:
        raise WireError("a tensor shape's dimensions multiply to more elements than any message can hold")
    data = _buffer(tree, buffers)
    numel = math.prod(shape)
    itemsize = torch.empty((), dtype=dtype).element_size()
    if numel * itemsize != len(data):
        raise WireError(
            f"a tensor of shape {tuple(shape)} and dtype {tree['dtype']} needs {numel * itemsize} bytes, not {len(data)}"
        )
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    tensor = _bytes_tensor(data)
    if dtype is torch.bool and tensor.max() > 1:
        raise WireError("a bool tensor holds bytes other than 0 and 1")
    return tensor.view(dtype).reshape(shape)


# ---------------------------------------------------------------- framing


def send_message(sock: socket.socket, header: dict, buffers: list, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
    """Send one message; raises WireError before sending anything if it would break the limits."""
    header = dict(header, buffers=[len(b) if not isinstance(b, memoryview) else b.nbytes for b in buffers])
    try:
        encoded = json.dumps(header, separators=(",", ":")).encode()
    except (TypeError, ValueError) as e:
        raise WireError(f"the message cannot be written as JSON ({e})") from None
    total = len(encoded) + sum(header["buffers"])
    if len(encoded) > MAX_HEADER_BYTES or total > max_bytes:
        raise TooLarge(
            f"the value is too large to cross to the other process ({total / 2**20:.0f} MB, the limit is {max_bytes / 2**20:.0f} MB)"
        )
    sock.sendall(_LENGTH.pack(len(encoded)) + encoded)
    for buffer in buffers:
        if len(buffer):
            sock.sendall(buffer)


def receive_message(sock: socket.socket, max_bytes: int = MAX_MESSAGE_BYTES) -> tuple[dict, list[bytearray]]:
    """One message: its header (a dict) and its buffers. Checks every size before reading it."""
    (length,) = _LENGTH.unpack(_read_exactly(sock, _LENGTH.size))
    if length > min(MAX_HEADER_BYTES, max_bytes):
        raise WireError(f"a message header of {length} bytes is over the limit")
    try:
        header = json.loads(_read_exactly(sock, length))
    except (ValueError, RecursionError) as e:
        raise WireError(f"a message header is not valid JSON ({type(e).__name__})") from None
    if type(header) is not dict:
        raise WireError("a message header is not a JSON object")
    sizes = header.pop("buffers", None)
    if type(sizes) is not list or not all(type(n) is int and n >= 0 for n in sizes):
        raise WireError("a message header has no valid buffer list")
    if length + sum(sizes) > max_bytes:
        raise WireError(
            f"a message of {(length + sum(sizes)) / 2**20:.0f} MB is over the {max_bytes / 2**20:.0f} MB limit"
        )
    return header, [_read_exactly(sock, n) for n in sizes]


def _read_exactly(sock: socket.socket, n: int) -> bytearray:
    data = bytearray(n)
    view = memoryview(data)
    received = 0
    while received < n:
        count = sock.recv_into(view[received:])
        if count == 0:
            raise PeerClosed("the connection was closed")
        received += count
    return data
