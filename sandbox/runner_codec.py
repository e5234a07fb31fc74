"""The codec between the harness process and the candidate process.

What crosses is data only, never code: the harness's calls into the candidate and
the candidate's answers. Nothing that came from the candidate is ever unpickled;
this small tagged binary encoding of plain values is decoded by hand instead, with
every length, count, depth and dtype checked against the bytes actually received.

Values that cross (the JSON value set, plus tuples and numeric arrays):

* ``None``, ``bool``, ``int`` (any size), ``float`` (NaN and infinities included),
  ``str``; subclasses (an ``IntEnum``, a ``numpy.float64``) cross as the base type;
* numpy scalars as Python numbers (``numpy.int64`` -> ``int``, ``numpy.bool_`` ->
  ``bool``);
* numpy arrays of bool, integer or float dtype (kinds ``b i u f``), as raw bytes
  with their dtype and shape; they arrive as fresh, writable, C-ordered arrays;
* lists, tuples and dicts of the above (dict keys: any hashable value above).

Anything else (objects, functions, sets, bytes, complex, object or string arrays)
raises ``CodecError`` when encoded. The format, little-endian throughout: one tag
byte, then ``f`` float64, ``i`` int64, ``I`` u32 length + decimal digits, ``s`` u32
length + UTF-8, ``N``/``T``/``F``, ``l``/``t`` u32 count + items, ``d`` u32 count +
key/value pairs, ``a`` u8 length + dtype string, u8 ndim, ndim x u64 dims, raw data.
JSON itself would cost about twice as much per call and cannot carry arrays as bytes.

Stdlib only, no engine imports (the same files serve inside sandbox images); numpy
is used when the values hold arrays, and is then already imported.
"""

from __future__ import annotations

import re
import struct
import sys
from typing import Any

MAX_DEPTH = 64  # nesting of lists, tuples and dicts
MAX_NDIM = 32
MAX_INT_DIGITS = 4000  # below Python's own limit on int <-> str conversion

_F64 = struct.Struct("<d")
_I64 = struct.Struct("<q")
_U32 = struct.Struct("<I")
_TAGGED_F64 = struct.Struct("<cd").pack
_TAGGED_I64 = struct.Struct("<cq").pack
_TAGGED_U32 = struct.Struct("<cI").pack
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1
_DTYPE = re.compile(rb"[<>|=]?[biuf][0-9]{1,2}")
_ARRAY_KINDS = "biuf"
_TAG_F, _TAG_I, _TAG_BIG, _TAG_S = ord("f"), ord("i"), ord("I"), ord("s")
_TAG_N, _TAG_T, _TAG_FALSE = ord("N"), ord("T"), ord("F")
_TAG_L, _TAG_TUPLE, _TAG_D, _TAG_A = ord("l"), ord("t"), ord("d"), ord("a")
_SHAPES = [struct.Struct(f"<{ndim}Q") for ndim in range(MAX_NDIM + 1)]
_array_heads: dict[tuple[str, int], bytes] = {}  # (dtype string, ndim) -> encoded head
_dtypes: dict[bytes, Any] = {}  # dtype string -> numpy dtype, once checked
_np: Any = None  # numpy, once an array was decoded
_ndarray: Any = None  # numpy.ndarray, once an array was encoded


class CodecError(ValueError):
    """A value that cannot cross, or bytes that do not decode to one."""


# ------------------------------------------------------------------ encoding


def encode_into(out: bytearray, value: Any, depth: int = 0) -> None:
    """Append the encoding of ``value`` to ``out``; CodecError if it cannot cross."""
    kind = type(value)
    if kind is float:
        out += _TAGGED_F64(b"f", value)
    elif kind is int and _I64_MIN <= value <= _I64_MAX:
        out += _TAGGED_I64(b"i", value)
    elif kind is _ndarray:
        _encode_array(out, value)
    elif kind is tuple or kind is list:
        if depth >= MAX_DEPTH:
            raise CodecError(f"values nested deeper than {MAX_DEPTH} levels")
        out += _TAGGED_U32(b"t" if kind is tuple else b"l", len(value))
        depth += 1
        for item in value:  # numbers inline: the common case, a list of them
            kind = type(item)
            if kind is float:
                out += _TAGGED_F64(b"f", item)
            elif kind is int and _I64_MIN <= item <= _I64_MAX:
                out += _TAGGED_I64(b"i", item)
            else:
                encode_into(out, item, depth)
    elif value is None:
        out += b"N"
    elif kind is bool:
        out += b"T" if value else b"F"
    elif kind is str:
        _encode_str(out, value)
    elif kind is dict:
        _encode_dict(out, value, depth)
    else:
        _encode_other(out, value, depth)


def encode(value: Any) -> bytes:
    """The encoding of ``value`` as bytes."""
    out = bytearray()
    encode_into(out, value)
    return bytes(out)


def _encode_big_int(out: bytearray, value: int) -> None:
    try:
        digits = str(value).encode("ascii")
    except ValueError as exc:  # beyond Python's int -> str limit
        raise CodecError(f"an int too large to send: {exc}") from None
    if len(digits) > MAX_INT_DIGITS:
        raise CodecError(f"an int of {len(digits)} digits is too large to send")
    out += _TAGGED_U32(b"I", len(digits))
    out += digits


def _encode_str(out: bytearray, value: str) -> None:
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CodecError(f"a str that is not valid Unicode: {exc}") from None
    out += _TAGGED_U32(b"s", len(data))
    out += data


def _encode_dict(out: bytearray, value: dict, depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise CodecError(f"values nested deeper than {MAX_DEPTH} levels")
    out += _TAGGED_U32(b"d", len(value))
    for key, item in value.items():
        encode_into(out, key, depth + 1)
        encode_into(out, item, depth + 1)


def _encode_other(out: bytearray, value: Any, depth: int) -> None:
    """Arrays, numpy scalars and subclasses of the plain types."""
    global _ndarray
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.ndarray):
        _ndarray = np.ndarray  # from now on, encode_into sends arrays straight here
        _encode_array(out, value)
    elif type(value) is int:
        _encode_big_int(out, value)
    elif np is not None and isinstance(value, np.generic):
        plain = value.item()
        if type(plain) not in (bool, int, float):
            raise CodecError(f"a numpy {value.dtype} scalar cannot be sent "
                             "(only bool, integer and float ones)")
        encode_into(out, plain, depth)
    elif isinstance(value, int | float | str):  # an IntEnum, a str subclass, ...
        base = int if isinstance(value, int) else float if isinstance(value, float) else str
        encode_into(out, base(value), depth)
    elif isinstance(value, list | tuple):
        encode_into(out, (list if isinstance(value, list) else tuple)(value), depth)
    elif isinstance(value, dict):
        _encode_dict(out, value, depth)
    else:
        raise CodecError(f"a {type(value).__name__} cannot be sent (only None, bool, int, "
                         "float, str, lists, tuples and dicts of them, and numpy arrays "
                         "of bool, integer or float dtype)")


def _encode_array(out: bytearray, value: Any) -> None:
    dtype, ndim = value.dtype, value.ndim
    head = _array_heads.get((dtype.str, ndim))
    if head is None:
        if dtype.kind not in _ARRAY_KINDS or dtype.fields is not None or dtype.subdtype:
            raise CodecError(f"a numpy array of dtype {dtype} cannot be sent "
                             "(only bool, integer and float arrays)")
        if ndim > MAX_NDIM:
            raise CodecError(f"a numpy array of {ndim} dimensions cannot be sent")
        name = dtype.str.encode("ascii")
        head = _array_heads[(dtype.str, ndim)] = b"a" + bytes([len(name)]) + name + bytes([ndim])
    out += head
    out += _SHAPES[ndim].pack(*value.shape)
    data = value.data
    out += data if data.c_contiguous else value.tobytes()  # always C order


# ------------------------------------------------------------------ decoding


def decode(data: bytes | memoryview, start: int = 0) -> Any:
    """The value encoded in ``data[start:]``, which must hold exactly one value.

    CodecError for anything malformed: an unknown tag, a length or count beyond the
    bytes there, nesting deeper than ``MAX_DEPTH``, a dtype outside ``biuf``,
    trailing bytes. Never allocates more than a small multiple of ``len(data)``.
    """
    try:
        value, end = _decode(data, start, 0)
    except CodecError:
        raise
    except (IndexError, ValueError, TypeError, OverflowError, struct.error) as exc:
        raise CodecError(f"malformed value: {type(exc).__name__}: {exc}") from None
    if end != len(data):
        raise CodecError(f"{len(data) - end} unexpected bytes after the value")
    return value


def decode_pair(data: bytes | bytearray, start: int) -> tuple[Any, Any]:
    """The two values encoded one after the other in ``data[start:]``."""
    try:
        first, middle = _decode(data, start, 0)
    except CodecError:
        raise
    except (IndexError, ValueError, TypeError, OverflowError, struct.error) as exc:
        raise CodecError(f"malformed value: {type(exc).__name__}: {exc}") from None
    return first, decode(data, middle)


def _decode(data: Any, pos: int, depth: int) -> tuple[Any, int]:
    tag = data[pos]
    pos += 1
    if tag == _TAG_A:
        return _decode_array(data, pos)
    if tag == _TAG_F:
        return _F64.unpack_from(data, pos)[0], pos + 8
    if tag == _TAG_I:
        return _I64.unpack_from(data, pos)[0], pos + 8
    if tag in (_TAG_TUPLE, _TAG_L, _TAG_D):
        tag_seq = tag
        if depth >= MAX_DEPTH:
            raise CodecError(f"values nested deeper than {MAX_DEPTH} levels")
        count = _U32.unpack_from(data, pos)[0]
        pos += 4
        _need(data, pos, count * (2 if tag == _TAG_D else 1))  # >= 1 byte per value
        if tag == _TAG_D:
            result: dict = {}
            for _ in range(count):
                key, pos = _decode(data, pos, depth + 1)
                result[key], pos = _decode(data, pos, depth + 1)  # TypeError: unhashable
            return result, pos
        items = []
        append = items.append
        for _ in range(count):  # numbers and arrays inline: the common cases
            tag = data[pos]
            if tag == _TAG_F:
                append(_F64.unpack_from(data, pos + 1)[0])
                pos += 9
            elif tag == _TAG_I:
                append(_I64.unpack_from(data, pos + 1)[0])
                pos += 9
            elif tag == _TAG_A:
                item, pos = _decode_array(data, pos + 1)
                append(item)
            else:
                item, pos = _decode(data, pos, depth + 1)
                append(item)
        return (tuple(items) if tag_seq == _TAG_TUPLE else items), pos
    if tag == _TAG_S:
        size = _U32.unpack_from(data, pos)[0]
        pos += 4
        _need(data, pos, size)
        return str(data[pos:pos + size], "utf-8"), pos + size
    if tag == _TAG_N:
        return None, pos
    if tag == _TAG_T:
        return True, pos
    if tag == _TAG_FALSE:
        return False, pos
    if tag == _TAG_BIG:
        size = _U32.unpack_from(data, pos)[0]
        pos += 4
        if size > MAX_INT_DIGITS:
            raise CodecError(f"an int of {size} digits")
        _need(data, pos, size)
        digits = bytes(data[pos:pos + size])
        if not re.fullmatch(rb"-?[0-9]+", digits):
            raise CodecError("a big int that is not decimal digits")
        return int(digits), pos + size
    raise CodecError(f"unknown tag {tag!r} at byte {pos - 1}")


def _need(data: Any, pos: int, size: int) -> None:
    if pos + size > len(data):
        raise CodecError(f"a length of {size} at byte {pos} runs past the end")


def _dtype(name: bytes) -> Any:
    """The numpy dtype ``name`` names, if it is a bool, integer or float one."""
    global _np
    if _np is None:
        import numpy  # the sender had arrays, so numpy is here and imported

        _np = numpy
    if not _DTYPE.fullmatch(name):
        raise CodecError(f"array dtype {name!r} is not a bool, integer or float dtype")
    dtype = _np.dtype(name.decode("ascii"))
    if dtype.kind not in _ARRAY_KINDS or dtype.itemsize == 0:
        raise CodecError(f"array dtype {name!r} is not a bool, integer or float dtype")
    _dtypes[name] = dtype
    return dtype


def _decode_array(data: Any, pos: int) -> tuple[Any, int]:
    size = data[pos]
    pos += 1
    name = bytes(data[pos:pos + size])
    dtype = _dtypes.get(name) or _dtype(name)
    pos += size
    ndim = data[pos]
    if ndim > MAX_NDIM:
        raise CodecError(f"an array of {ndim} dimensions")
    shape = _SHAPES[ndim].unpack_from(data, pos + 1)
    pos += 1 + 8 * ndim
    if ndim == 1:
        count = shape[0]
    else:
        count = 1
        for dim in shape:
            count *= dim
    end = pos + count * dtype.itemsize
    if end > len(data):
        raise CodecError(f"an array of {count} x {dtype} at byte {pos} runs past the end")
    if count == 0:
        return _np.zeros(shape, dtype), end
    flat = _np.frombuffer(data, dtype, count, pos)
    return (flat.copy() if ndim == 1 else flat.reshape(shape).copy()), end
