"""Calls across the boundary, in both directions, nested.

Both processes hold an Endpoint on one socket. A call sends a request and then reads messages until
its reply comes; a request that arrives meanwhile (a callback) is served at once, on the same
stack. So when a test passes the trusted model into the student's `generate`, the student's
`model(ids, cache=cache)` becomes a request to the trusted side, whose real model calls
`cache.update(...)`, a request back to the worker, while both outer calls wait: calls nest like
ordinary Python calls, one thread per side, and the innermost reply always comes first.

    request: {"request": "invoke" | "getattr" | "load", "target": id, "name": str | null, "body": [args, kwargs],
              "arguments": true (optional)}
    reply:   {"reply": value, "generators": [buffer, ...], "arguments": {...}, "parameters": [...]}
             or  {"error": {...}, "generators": [...]}

Generators passed in a request cross as their state; the reply carries their final states, which
the caller writes into its own generators, so a seeded test sees its generator advance.

Inputs are not modified in place (docs/assignments.md). A call from the grader asks for its tensor arguments back
("arguments": true): the worker's reply carries, for every tensor it received, the bytes that tensor
holds after the call (keyed by the buffer index it came in), and the names of the called function's
positional parameters. The grader compares them, bit for bit, with what it sent: the comparison runs
on the trusted side, and a change fails the call with StudentModifiedArgument ("apply_temperature
modified its argument `logits` in place; it must return a new tensor"). Replies to calls that raised
carry no arguments.

Objects that are not data cross as handles. The worker hands out a handle for any of its objects
(the student's KVCache); the trusted side only for objects wrapped with `expose`, which list the
methods the worker may call and the data attributes it sees. A handle sent back to its owner
arrives as the owner's own object. The trusted side keeps what it exposed only as long as the grader
itself holds it (the call's arguments while the call runs, a test's variables until the test ends):
what student code makes an exposed model record is released with the test, however long the worker
keeps the handle, and a later call through that handle fails with a sentence.
"""

from __future__ import annotations

import inspect
import re
import socket
import time
import traceback
import types
import weakref
from contextlib import contextmanager

from grader import wire
from grader.errors import (
    BUILTINS_BY_NAME,
    WORKER_LOST,
    StudentCrashed,
    StudentError,
    StudentModifiedArgument,
    StudentRaised,
    StudentTimeout,
    nearest_builtin,
    student_raised,
)

MAX_MESSAGE_CHARS = 2000
MAX_PARAMETER_NAMES = 100
_NOT_EXPORTED = object()


class Endpoint:
    """One side of the connection. Subclasses say what a request may do and how objects cross."""

    fatal: tuple[type[BaseException], ...] = ()  # errors that end the connection instead of being replied
    returns_arguments = False  # whether, serving a call that asks, this side sends back its tensor arguments

    def __init__(self, sock: socket.socket, max_bytes: int = wire.MAX_MESSAGE_BYTES):
        self.sock = sock
        self.max_bytes = max_bytes
        self.codec = wire.Codec(self.export, self.import_handle, self.own)
        self.exported: dict[int, object] = {}  # handle id -> our object the peer may refer to
        self._ids: dict[int, int] = {}  # id(object) -> handle id, so an object keeps one handle
        self._last_handle = 0  # handle ids are never reused

    # ---------------------------------------------------------------- calling the peer

    def call(
        self,
        op: str,
        target: int,
        name: str | None = None,
        args=(),
        kwargs=None,
        label: str = "call",
        check_arguments: bool = False,
    ):
        buffers: list = []
        generators: list = []
        tensors: list | None = [] if check_arguments else None

        def encode(value, path: str):
            return self.codec.encode(value, buffers, generators, 2, tensors, path)

        kwargs = dict(kwargs or {})
        if not all(type(k) is str for k in kwargs):
            raise TypeError("only dictionaries with string keys can be sent")
        body = [
            [encode(a, f"#{i}") for i, a in enumerate(args)],
            {"$": "dict", "v": {k: encode(v, k) for k, v in kwargs.items()}},
        ]
        request = {"request": op, "target": target, "name": name, "body": body}
        sent = None
        if tensors:  # what each tensor argument holds now, to compare with what it holds after the call
            request["arguments"] = True
            sent = [(path, tree, bytes(buffers[tree["buffer"]])) for path, tree in tensors]
        self.send(request, buffers)
        while True:
            header, received = self.receive()
            if "request" in header:
                self.serve(header, received)
                continue
            self._return_generator_states(header, received, generators)
            if "error" in header:
                raise self.remote_error(header["error"], label)
            if "reply" not in header:
                raise wire.WireError("a message is neither a request nor a reply")
            if sent is not None:
                self._check_arguments(header, received, sent, label)
            return self.codec.decode(header["reply"], received)

    def _check_arguments(self, header: dict, buffers: list, sent: list, label: str) -> None:
        """Raise if a tensor argument came back different (dtype, shape or any bit) from what was sent."""
        returned = header.get("arguments")
        if type(returned) is not dict or len(returned) != len(sent):
            raise wire.WireError("a reply does not return every tensor argument of the call")
        names = header.get("parameters")
        names = names[:MAX_PARAMETER_NAMES] if type(names) is list else []
        for path, tree, before in sent:
            back = returned.get(str(tree["buffer"]))
            if type(back) is not dict or back.get("$") != "tensor":
                raise wire.WireError("a reply returns a tensor argument as something else")
            after = self.codec.decode(back, buffers)  # checks its size against its dtype and shape
            if (
                str(after.dtype).removeprefix("torch.") != tree["dtype"]
                or list(after.shape) != tree["shape"]
                or buffers[back["buffer"]] != before
            ):
                raise self.modified_argument(label, _argument_name(path, names))

    def _return_generator_states(self, header: dict, buffers: list, generators: list) -> None:
        states = header.get("generators", [])
        if type(states) is not list or len(states) != len(generators):
            raise wire.WireError("a reply does not return the state of every generator passed")
        for generator, tree in zip(generators, states):
            try:
                generator.set_state(self.codec.decode(tree, buffers).get_state())
            except AttributeError:
                raise wire.WireError("a returned generator state is not a generator") from None

    # ---------------------------------------------------------------- serving the peer

    def serve(self, header: dict, buffers: list) -> None:
        generators: list = []
        out: list = []
        received: list | None = [] if self.returns_arguments and header.get("arguments") is True else None
        try:
            args, kwargs = self.codec.decode(header.get("body"), buffers, generators, tensors=received)
            target = self.own(header.get("target"))
            op, name = header.get("request"), header.get("name")
            parameters = self.parameter_names(op, target, name) if received is not None else None
            reply = {"reply": self.codec.encode(self.perform(op, target, name, args, kwargs), out)}
            if received is not None:  # every tensor argument as it is now, for the caller to compare
                reply["arguments"] = {str(index): self.codec.encode(tensor, out) for index, tensor in received}
                reply["parameters"] = parameters
        except self.fatal:
            raise
        except BaseException as error:  # noqa: BLE001 -- the worker reports even SystemExit as the call's result
            out = []
            reply = {"error": self.describe_error(error)}
        reply["generators"] = [self.codec.encode(g, out) for g in generators]
        try:
            self.send(reply, out)
        except wire.TooLarge as error:  # nothing was sent yet: say so instead
            out = []
            reply = {"error": self.describe_error(error), "generators": [self.codec.encode(g, out) for g in generators]}
            self.send(reply, out)

    def serve_forever(self) -> None:
        while True:
            header, buffers = self.receive()
            if "request" not in header:
                raise wire.WireError("a reply came with no call waiting for it")
            self.serve(header, buffers)

    # ---------------------------------------------------------------- handles

    def handle_for(self, obj, **fields) -> dict:
        key = id(obj)
        if key not in self._ids:
            self._last_handle += 1
            self._ids[key] = self._last_handle
            self.exported[self._last_handle] = obj
        return {"$": "handle", "id": self._ids[key], "type": type(obj).__name__, **fields}

    def own(self, handle_id):
        found = self.exported.get(handle_id, _NOT_EXPORTED) if type(handle_id) is int else _NOT_EXPORTED
        if found is not _NOT_EXPORTED:
            return found
        if type(handle_id) is int and 0 < handle_id <= self._last_handle:
            raise wire.WireError(
                f"the grader's object behind handle {handle_id} is gone: the call that gave it has returned"
            )
        raise wire.WireError(f"no object with handle {handle_id!r} was ever sent")

    # ---------------------------------------------------------------- subclass hooks

    def send(self, header: dict, buffers: list) -> None:
        wire.send_message(self.sock, header, buffers, self.max_bytes)

    def receive(self) -> tuple[dict, list]:
        return wire.receive_message(self.sock, self.max_bytes)

    def perform(self, op, target, name, args, kwargs):
        raise NotImplementedError

    def parameter_names(self, op, target, name) -> list[str]:
        return []

    def modified_argument(self, label: str, argument: str) -> BaseException:
        return wire.WireError(f"{label} modified its argument {argument} in place")

    def export(self, value, encode) -> dict:
        raise NotImplementedError

    def import_handle(self, tree: dict, decode):
        raise NotImplementedError

    def describe_error(self, error: BaseException) -> dict:
        return {"type": type(error).__name__, "builtin": nearest_builtin(error), "message": _message(error)}

    def remote_error(self, info, label: str) -> BaseException:
        raise NotImplementedError


def _argument_name(path: str, names: list) -> str:
    """How an error names the argument at `path` ('#0', '#1[2]', 'logits', 'history['ids']')."""
    match = re.match(r"#(\d+)", path)
    if match is None:
        return f"`{path}`"
    position, rest = int(match.group(1)), path[match.end() :]
    if position < len(names) and type(names[position]) is str and names[position].isidentifier():
        return f"`{names[position]}{rest}`"
    return f"at position {position + 1}" + (f" (at `{rest}`)" if rest else "")


def _message(error: BaseException) -> str:
    try:  # a hostile exception may fail to print itself
        text = str(error)
    except Exception:
        text = "(an exception that cannot be printed)"
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


# ==================================================================== the trusted side


class DeadlinePassed(wire.WireError):
    """The current call's deadline passed while waiting for the worker."""


class Exposed:
    """A trusted object the worker may use: only `methods` can be called, only `attributes` (data) seen."""

    def __init__(self, target, methods=("__call__",), attributes=None):
        self.target = target
        self.methods = tuple(methods)
        self.attributes = dict(attributes or {})

    def __repr__(self) -> str:
        return f"expose({self.target!r}, methods={self.methods})"


class TrustedEndpoint(Endpoint):
    """The grader's end: every wait obeys the current call's deadline; errors become StudentErrors."""

    fatal = WORKER_LOST

    def __init__(self, sock, max_bytes=wire.MAX_MESSAGE_BYTES, describe_crash=lambda: ""):
        super().__init__(sock, max_bytes)
        self.exported = weakref.WeakValueDictionary()  # what the grader no longer holds is released
        self.deadline = None  # set by the outermost call, obeyed by every nested wait
        self.depth = 0
        self.lost: StudentError | None = None  # once set, every call fails with it
        self.describe_crash = describe_crash

    def call(
        self,
        op,
        target,
        name=None,
        args=(),
        kwargs=None,
        label="call",
        timeout: float = 10.0,
        check_arguments: bool = True,
    ):
        """Call into the worker. Unless `check_arguments` is False, a tensor argument that the call
        modified in place raises StudentModifiedArgument (the worker itself is unharmed)."""
        if self.lost is not None:
            raise self.lost
        if self.depth == 0:
            self.deadline = time.monotonic() + timeout
        self.depth += 1
        try:
            return super().call(op, target, name, args, kwargs, label, check_arguments)
        except wire.TooLarge:  # the test's own arguments are too large; nothing was sent
            raise
        except wire.WireError as e:
            raise self._lose(e, label) from None
        finally:
            self.depth -= 1

    def _lose(self, error: wire.WireError, label: str) -> StudentError:
        if isinstance(error, DeadlinePassed):
            self.lost = StudentTimeout(f"{label} did not finish within its time limit")
        elif isinstance(error, wire.PeerClosed):
            self.lost = StudentCrashed(
                f"{label} ended the worker process (it exited, crashed or ran out of memory){self.describe_crash()}"
            )
        else:
            self.lost = StudentCrashed(f"{label} broke the worker's connection to the grader ({error})")
        return self.lost

    def receive(self):
        with self._transport():
            return super().receive()

    def send(self, header, buffers):
        with self._transport():
            super().send(header, buffers)

    @contextmanager
    def _transport(self):
        """Every wait obeys the deadline; a socket error means the worker is gone."""
        self.sock.settimeout(max(self.deadline - time.monotonic(), 0.001))
        try:
            yield
        except TimeoutError:
            raise DeadlinePassed("the deadline passed") from None
        except OSError as e:
            raise wire.PeerClosed(str(e)) from None

    def modified_argument(self, label, argument):
        return StudentModifiedArgument(
            f"{label} modified its argument {argument} in place; it must return a new tensor"
        )

    def perform(self, op, target, name, args, kwargs):
        if op != "invoke" or not isinstance(target, Exposed):
            raise TypeError("the grader's objects can only be called through their exposed methods")
        method = name or "__call__"
        if method not in target.methods:
            raise AttributeError(f"the grader's {type(target.target).__name__} does not let student code call {method}")
        return getattr(target.target, method)(*args, **kwargs)

    def export(self, value, encode):
        if isinstance(value, StudentObject) and value._endpoint is self:
            return {"$": "yours", "id": value._id}
        if isinstance(value, Exposed):
            attributes = {k: encode(v) for k, v in value.attributes.items()}
            if id(value) not in self._ids:  # once it is released, its id() may be another object's
                weakref.finalize(value, self._ids.pop, id(value), None)
            return self.handle_for(value, methods=list(value.methods), attributes=attributes)
        raise TypeError(
            f"a {type(value).__name__} cannot be passed to student code: pass data, tensors, generators, "
            "or wrap the object with grader.testing.expose"
        )

    def import_handle(self, tree, decode):
        return StudentObject(self, tree["id"], tree["type"])

    def describe_error(self, error):
        if isinstance(error, StudentRaised):
            return {"type": error.builtin.__name__, "builtin": error.builtin.__name__, "message": error.message}
        return super().describe_error(error)

    def remote_error(self, info, label):
        if type(info) is not dict:
            raise wire.WireError("an error reply is not an object")
        builtin = str(info.get("builtin", "Exception"))
        kind = str(info.get("type", "Exception"))[:100]
        message = str(info.get("message", ""))[:MAX_MESSAGE_CHARS]
        where = f" ({info['where']})" if isinstance(info.get("where"), str) else ""
        if builtin == "NotImplementedError":
            detail = f" ({message})" if message else ""
            return student_raised(builtin, f"{label} is not implemented yet{detail}{where}")
        if kind in ("SystemExit", "KeyboardInterrupt"):
            return StudentCrashed(
                f"{label} tried to end the worker process ({kind}{': ' + message if message else ''}){where}"
            )
        return student_raised(builtin, f"{label} raised {kind}{': ' + message if message else ''}{where}")


class StudentObject:
    """An object living in the worker (a student's KVCache, a tensor subclass, ...).

    Attribute access, calls, len() and indexing cross to the worker under the time limit; nothing
    else does: it is never equal to anything but itself and has no truth value.
    """

    def __init__(self, endpoint: TrustedEndpoint, handle_id: int, type_name: str, timeout: float = 10.0):
        self._endpoint = endpoint
        self._id = handle_id
        self._type = type_name
        self._label = type_name  # how errors name it: 'KVCache', 'KVCache.update'
        self._timeout = timeout
        self._check_arguments = True  # False: its methods may modify their tensor arguments in place

    @property
    def student_type(self) -> str:
        return self._type

    @property
    def handle(self) -> int:
        """The worker object's identity: the same for every proxy of one object, whatever the crossing."""
        return self._id

    def set_rules(self, timeout: float, check_arguments: bool) -> None:
        """The time limit of calls through this proxy, and whether they check tensor arguments for in-place changes."""
        self._timeout = timeout
        self._check_arguments = check_arguments

    def _call(self, op, name, args=(), kwargs=None, label=None):
        result = self._endpoint.call(op, self._id, name, args, kwargs, label, self._timeout, self._check_arguments)
        if isinstance(result, StudentObject):
            result.set_rules(self._timeout, self._check_arguments)
        return result

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        result = self._call("getattr", name, label=f"{self._label}.{name}")
        if isinstance(result, StudentObject):
            result._label = f"{self._label}.{name}"
        return result

    def __call__(self, *args, **kwargs):
        return self._call("invoke", None, args, kwargs, label=self._label)

    def __len__(self) -> int:
        n = self._call("invoke", "__len__", label=f"len() of {self._label}")
        if type(n) is not int or n < 0:
            raise TypeError(f"len() of the student's {self._label} returned {n!r}, not a non-negative integer")
        return n

    def __getitem__(self, key):
        return self._call("invoke", "__getitem__", (key,), label=f"{self._label}[...]")

    def __bool__(self):
        raise TypeError(f"a student's {self._type} object has no truth value here; test the data it returns")

    def __iter__(self):
        raise TypeError(f"a student's {self._type} object cannot be iterated here; index it or call its methods")

    def __repr__(self) -> str:
        return f"<student {self._type} object>"


# ==================================================================== the worker side


class WorkerEndpoint(Endpoint):
    """The worker's end: any object can cross as a handle; errors from the grader become builtins."""

    fatal = (wire.WireError,)
    returns_arguments = True

    def __init__(self, sock, namespace, perform_load, max_bytes=wire.MAX_MESSAGE_BYTES):
        super().__init__(sock, max_bytes)
        self.exported[0] = namespace  # handle 0: the student's namespace, as a module-like object
        self.perform_load = perform_load

    def send(self, header, buffers):
        try:
            super().send(header, buffers)
        except OSError as e:  # the grader is gone or broke the connection: so is this worker
            raise wire.PeerClosed(str(e)) from None

    def receive(self):
        try:
            return super().receive()
        except OSError as e:
            raise wire.PeerClosed(str(e)) from None

    def perform(self, op, target, name, args, kwargs):
        if op == "invoke":
            return (target if name is None else getattr(target, name))(*args, **kwargs)
        if op == "getattr":
            return getattr(target, name)
        if op == "load":
            return self.perform_load(*args)
        raise ValueError(f"unknown request {op!r}")

    def parameter_names(self, op, target, name):
        """The names of the called function's positional parameters, for the grader's messages."""
        if op != "invoke":
            return []
        try:
            parameters = inspect.signature(target if name is None else getattr(target, name)).parameters.values()
        except Exception:  # noqa: BLE001 -- no signature: the grader names arguments by position
            return []
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        return [str(p.name) for p in parameters if p.kind in positional][:MAX_PARAMETER_NAMES]

    def export(self, value, encode):
        if isinstance(value, TrustedObject) and value._endpoint is self:
            return {"$": "yours", "id": value._id}
        return self.handle_for(value)

    def import_handle(self, tree, decode):
        methods = tree.get("methods", [])
        attributes = tree.get("attributes", {})
        if type(methods) is not list or type(attributes) is not dict:
            raise wire.WireError("a handle from the grader has no method list")
        return TrustedObject(self, tree["id"], tree["type"], methods, {k: decode(v) for k, v in attributes.items()})

    def describe_error(self, error):
        info = super().describe_error(error)
        where = _student_frame(error)
        if where:
            info["where"] = where
        return info

    def remote_error(self, info, label):
        return BUILTINS_BY_NAME.get(info.get("builtin"), RuntimeError)(info.get("message", ""))


def _student_frame(error: BaseException) -> str | None:
    """'cell 5, line 3': where in the notebook the error was raised (the innermost notebook frame)."""
    where = None
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename.startswith("<cell "):
            where = f"{frame.filename[1:-1]}, line {frame.lineno}"
    return where


class TrustedObject:
    """A grader object in the worker: its exposed methods call back into the grader."""

    def __init__(self, endpoint: WorkerEndpoint, handle_id: int, type_name: str, methods: list, attributes: dict):
        self._endpoint = endpoint
        self._id = handle_id
        self._type = type_name
        self._methods = methods
        self._attributes = attributes

    def _invoke(self, method, args, kwargs):
        if method not in self._methods:
            raise TypeError(f"the grader's {self._type} does not offer {method}")
        return self._endpoint.call("invoke", self._id, method, args, kwargs)

    def __getattr__(self, name: str):
        if name.startswith("_") and name not in self._methods:
            raise AttributeError(name)
        if name in self._attributes:
            return self._attributes[name]
        if name in self._methods:
            return types.MethodType(lambda _self, *a, **k: self._invoke(name, a, k), self)
        raise AttributeError(f"the grader's {self._type} has no attribute {name!r} for student code")

    def __call__(self, *args, **kwargs):
        return self._invoke("__call__", args, kwargs)

    def __len__(self):
        return self._invoke("__len__", (), {})

    def __repr__(self) -> str:
        return f"<grader {self._type}>"
