"""The runner's channels: frames to and from the host, and the pipe pair between the
harness process and the candidate process (``runner_candidate.py``).

Host frames: a 4-byte big-endian length and UTF-8 JSON (``recv_frame`` /
``send_frame``). The instances frame that follows ``setup`` is never parsed here:
``store_frame`` moves its bytes into a sealed memfd through one zeroed buffer, so
the runner's heap, which every candidate process is forked from, never holds them.

Harness <-> candidate: one message per direction per call, a 4-byte little-endian
length, one kind byte, then a value in ``runner_codec``'s encoding:

* candidate -> harness once imported: ``Y`` + list of its callable names, or ``X`` +
  ``(error kind, message)`` when the import failed;
* harness -> candidate: ``C`` + u16 index of the function in that list + the args
  tuple, or ``K`` + the same + the kwargs dict;
* candidate -> harness: ``R`` + the return value, or ``E`` + ``(kind, builtin
  exception name or None, args, one-line description, traceback text)``.

The harness side decodes every reply with bounded sizes; anything malformed breaks
the channel (``ChannelBroken``, a crash), an exception in the candidate is raised
again in the harness as the same builtin type (``CandidateError`` otherwise) with
the candidate's description and traceback attached (``describe``,
``print_traceback``), and a value the candidate returns that cannot cross raises
``UnsendableValue`` (invalid output). End of file means the candidate process
ended: the owner's ``on_closed`` decides what that becomes.

Stdlib only, no engine imports (the same files serve inside sandbox images).
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import os
import struct
import sys
import threading
import traceback
import types
from collections.abc import Callable
from typing import Any, NoReturn

from runner_codec import CodecError, decode, encode, encode_into

MAX_MESSAGE = 64 << 20  # bytes of one message from the candidate (a reply or its ready)
MAX_NAMES = 10_000  # callables a candidate module may expose (< 2 ** 16)
MAX_NAME_CHARS = 200
DESCRIPTION_CHARS = 1000
TRACEBACK_CHARS = 8000
CALL, CALL_KW, RESULT, ERROR, READY, FAILED = (ord(c) for c in "CKREYX")
_HEADER = struct.Struct("<I")
INDEX = struct.Struct("<H")  # a function's place in the ready list
_HOST_HEADER = struct.Struct(">I")
_CHUNK = 1 << 20


# ------------------------------------------------------------- host frames


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, _CHUNK))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_frame(fd: int) -> Any:
    """Next message from the host, or None when it closed the pipe."""
    header = _read_exact(fd, _HOST_HEADER.size)
    if header is None:
        return None
    body = _read_exact(fd, _HOST_HEADER.unpack(header)[0])
    return None if body is None else json.loads(body)


def send_frame(fd: int, message: dict) -> None:
    """Write one message to the host."""
    body = json.dumps(message).encode("utf-8")
    view = memoryview(_HOST_HEADER.pack(len(body)) + body)
    while view:
        view = view[os.write(fd, view):]


def store_frame(fd: int) -> tuple[int, int] | None:
    """Move the next frame's body, unparsed, into a read-only memfd: (fd, size), or
    None at end of file. The bytes pass through one buffer that is zeroed after."""
    header = _read_exact(fd, _HOST_HEADER.size)
    if header is None:
        return None
    size = _HOST_HEADER.unpack(header)[0]
    try:
        store = os.memfd_create("instances", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except (AttributeError, OSError):  # no memfd: an unlinked file in our root (cwd)
        import tempfile

        store, path = tempfile.mkstemp(dir=".")
        os.unlink(path)
    buffer = bytearray(min(size, _CHUNK))
    view = memoryview(buffer)
    try:
        left = size
        while left:
            got = os.readv(fd, [view[:min(left, len(buffer))]])
            if not got:
                os.close(store)
                return None
            written = 0
            while written < got:
                written += os.write(store, view[written:got])
            left -= got
    finally:
        view[:] = bytes(len(buffer))
        view.release()
    with contextlib.suppress(AttributeError, OSError):
        fcntl.fcntl(store, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW
                    | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
    return store, size


def load_stored(fd: int, size: int) -> Any:
    """Parse what ``store_frame`` stored."""
    chunks, got = [], 0
    while got < size:
        chunk = os.pread(fd, min(size - got, 1 << 30), got)
        if not chunk:
            raise EOFError(f"the stored instances end after {got} of {size} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return json.loads(b"".join(chunks))


# ------------------------------------------------------ candidate messages


class ChannelClosed(Exception):
    """The other end closed the channel (its process ended)."""


class ChannelBroken(RuntimeError):
    """The candidate process broke the channel's protocol."""


class CandidateError(Exception):
    """An exception from the candidate process whose type is not a builtin one."""


class UnsendableValue(TypeError):
    """The candidate returned a value that cannot leave its process."""


def new_message(kind: int) -> bytearray:
    """An outgoing message of ``kind``: room for the length, then the kind byte."""
    out = bytearray(5)
    out[4] = kind
    return out


class Channel:
    """One end of the pipe pair: ``send`` a message, ``recv`` the next one whole."""

    def __init__(self, read_fd: int, write_fd: int, max_in: int = MAX_MESSAGE) -> None:
        self.read_fd, self.write_fd, self.max_in = read_fd, write_fd, max_in

    def send(self, out: bytearray) -> None:
        """Write ``out`` (made by ``new_message``); OSError (EPIPE) when the reader is gone."""
        _HEADER.pack_into(out, 0, len(out) - 4)
        written = os.write(self.write_fd, out)
        if written < len(out):
            view = memoryview(out)[written:]
            while view:
                view = view[os.write(self.write_fd, view):]

    def recv(self) -> bytes | bytearray:
        """The next message (its length header included: the kind is at [4]).
        ChannelClosed at end of file, ChannelBroken for an oversized message or bytes
        beyond it (nothing may arrive unasked)."""
        data = os.read(self.read_fd, 1 << 16)
        while len(data) < 5:
            more = os.read(self.read_fd, 1 << 16) if data else b""
            if not more:
                raise ChannelClosed("end of file")
            data += more
        total = _HEADER.unpack_from(data)[0] + 4
        if total > self.max_in + 4:
            raise ChannelBroken(f"a {total - 4}-byte message (limit {self.max_in})")
        if len(data) == total:
            return data
        if len(data) > total:
            raise ChannelBroken(f"{len(data) - total} unexpected bytes after a message")
        whole = bytearray(total)
        whole[:len(data)] = data
        view, got = memoryview(whole), len(data)
        try:
            while got < total:
                n = os.readv(self.read_fd, [view[got:]])
                if not n:
                    raise ChannelClosed("end of file in the middle of a message")
                got += n
        finally:
            view.release()
        return whole

    def close(self) -> None:
        for fd in (self.write_fd, self.read_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


# ------------------------------------------------------------- harness side


class CandidateCaller:
    """The harness's end: forwards calls and turns replies back into values or
    exceptions. ``on_closed`` runs when the candidate's end closed (it should not
    return; if it does, the call raises ChannelBroken)."""

    def __init__(self, channel: Channel, on_closed: Callable[[], None]) -> None:
        self.channel, self.on_closed = channel, on_closed
        self.broken = ""
        self._lock = threading.Lock()  # a harness may call from several threads

    def call(self, out: bytearray) -> Any:
        if self.broken:
            raise ChannelBroken(self.broken)
        try:
            with self._lock:
                self.channel.send(out)
                reply = self.channel.recv()
        except (ChannelClosed, BrokenPipeError):
            self.on_closed()
            self._break("the candidate process closed its end of the channel")
        except ChannelBroken as exc:
            self._break(f"the candidate process sent a malformed reply: {exc}")
        try:
            value = decode(reply, 5)
        except CodecError as exc:
            self._break(f"the candidate process sent a malformed reply: {exc}")
        if reply[4] == RESULT:
            return value
        if reply[4] == ERROR:
            raise remote_exception(value)
        self._break(f"the candidate process sent a message of kind {reply[4]} for a reply")

    def _break(self, message: str) -> NoReturn:
        self.broken = message
        raise ChannelBroken(message)

    def module(self, name: str, functions: list[str], path: str) -> types.ModuleType:
        """A module whose attributes ``functions`` forward to the candidate's: its
        callables (its other attributes stay in its process)."""
        module = types.ModuleType(name, "The candidate, in a process of its own.")
        module.__file__ = path
        for index, function in enumerate(functions):
            setattr(module, function, self._forwarder(function, index))
        return module

    def _forwarder(self, name: str, index: int) -> Callable[..., Any]:
        plain, with_kwargs = (bytes(new_message(kind) + INDEX.pack(index))
                              for kind in (CALL, CALL_KW))
        call = self.call

        def forward(*args: Any, **kwargs: Any) -> Any:
            out = bytearray(with_kwargs if kwargs else plain)
            try:
                encode_into(out, args, 1)
                if kwargs:
                    encode_into(out, kwargs, 1)
            except CodecError as exc:
                raise TypeError(f"cannot pass the arguments of {name}() to the candidate "
                                f"process: {exc}") from None
            return call(out)

        forward.__name__ = forward.__qualname__ = name
        return forward


def remote_exception(fields: Any) -> BaseException:
    """The exception an ``E`` reply describes, checked field by field."""
    if not (isinstance(fields, tuple) and len(fields) == 5):
        return ChannelBroken("the candidate process sent a malformed error reply")
    kind, builtin, args, description, trace = fields
    if not (isinstance(description, str) and isinstance(trace, str)
            and isinstance(args, tuple)):
        return ChannelBroken("the candidate process sent a malformed error reply")
    exc: BaseException | None = None
    if kind == "unsendable":
        exc = UnsendableValue(description)
    elif isinstance(builtin, str):
        cls = getattr(builtins, builtin, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            with contextlib.suppress(Exception):
                exc = cls(*args)
    if exc is None:
        exc = CandidateError(*args)
    exc.evo_description = description[:DESCRIPTION_CHARS]  # type: ignore[attr-defined]
    exc.evo_traceback = trace[-TRACEBACK_CHARS:]  # type: ignore[attr-defined]
    return exc


# ----------------------------------------------------- exceptions and ready


def describe(exc: BaseException) -> str:
    """``ExcType: message (at file:line in function)``: one line for the prompt; for
    an exception that came from the candidate process, the line it made there."""
    carried = getattr(exc, "evo_description", None)
    if isinstance(carried, str):
        return carried[:DESCRIPTION_CHARS]
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:  # a candidate's exception whose __str__ raises
        text = type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (at {os.path.basename(last.filename)}:{last.lineno} in {last.name})"
    return text[:DESCRIPTION_CHARS]


def format_traceback(exc: BaseException, skip: int = 0) -> str:
    """The traceback as Python prints it, without its first ``skip`` frames."""
    tb = exc.__traceback__
    for _ in range(skip):
        tb = tb.tb_next if tb is not None else None
    try:
        return "".join(traceback.format_exception(type(exc), exc, tb))
    except Exception:
        return describe(exc) + "\n"


def print_traceback(exc: BaseException) -> None:
    """Print the traceback to stderr (the candidate's own, for one it raised)."""
    try:
        trace = getattr(exc, "evo_traceback", None)
        sys.__stderr__.write(trace if isinstance(trace, str) else format_traceback(exc))
        sys.__stderr__.flush()
    except Exception:
        pass


def ready_message(names: list[str]) -> bytearray:
    """The ``Y`` message: the names of the candidate's callables."""
    out = new_message(READY)
    encode_into(out, names)
    return out


def failed_message(kind: str, message: str) -> bytearray:
    """The ``X`` message: the candidate could not be imported."""
    out = new_message(FAILED)
    out += encode((kind, message[:DESCRIPTION_CHARS]))
    return out


def read_ready(reply: bytes | bytearray) -> list[str] | tuple[str, str]:
    """The candidate's names (``Y``) or (error kind, message) (``X``); ChannelBroken
    for anything else."""
    try:
        value = decode(reply, 5)
    except CodecError as exc:
        raise ChannelBroken(f"the candidate process sent a malformed first message: {exc}"
                            ) from None
    if reply[4] == READY and isinstance(value, list) and len(value) <= MAX_NAMES and all(
            isinstance(name, str) and 0 < len(name) <= MAX_NAME_CHARS for name in value):
        return value
    if reply[4] == FAILED and isinstance(value, tuple) and len(value) == 2 and all(
            isinstance(part, str) for part in value):
        kind = value[0] if value[0] in ("syntax", "memory", "crash") else "crash"
        return kind, value[1][:DESCRIPTION_CHARS]
    raise ChannelBroken("the candidate process sent a malformed first message")
