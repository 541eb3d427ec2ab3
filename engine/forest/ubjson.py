"""A strict, bounded UBJSON reader (https://ubjson.org) that leaves numeric arrays in place.

Optimised containers of a numeric type (``[$d#...``) are not unpacked: they come back as
:class:`TypedArray` (type marker, offset, count) over the original buffer, so a caller can
``np.frombuffer`` them, or join the payloads of many, without per-element Python work.
Everything else becomes ``dict`` (str keys), ``list``, ``str``, ``int``, ``float``, ``bool``
or ``None``. Malformed input raises :class:`UBJSONError`; counts are checked against the
buffer and nesting is bounded, so corrupt bytes cannot allocate without limit or hang.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "NUMERIC_DTYPES",
    "Hook",
    "TypedArray",
    "UBJSONError",
    "loads",
    "read_int",
    "read_value",
]

MAX_DEPTH = 64

# Big-endian numpy dtypes of UBJSON's fixed-size numeric markers.
NUMERIC_DTYPES: dict[int, np.dtype[Any]] = {
    ord("i"): np.dtype("i1"), ord("U"): np.dtype("u1"), ord("I"): np.dtype(">i2"),
    ord("l"): np.dtype(">i4"), ord("L"): np.dtype(">i8"),
    ord("d"): np.dtype(">f4"), ord("D"): np.dtype(">f8"),
}
_UNPACK: dict[int, Callable[[bytes, int], tuple[Any, ...]]] = {
    ord(m): struct.Struct(">" + code).unpack_from
    for m, code in zip("iUIlLdD", "bBhiqfd", strict=True)}
_SIZE = {m: dt.itemsize for m, dt in NUMERIC_DTYPES.items()}
_INTS = frozenset(map(ord, "iUIlL"))
_CONST: dict[int, Any] = {ord("Z"): None, ord("T"): True, ord("F"): False}
_ARR, _OBJ, _END_ARR, _END_OBJ = ord("["), ord("{"), ord("]"), ord("}")
_TYPE, _COUNT, _NOOP = ord("$"), ord("#"), ord("N")
_STR, _CHAR, _HIGH = ord("S"), ord("C"), ord("H")


class UBJSONError(ValueError):
    """The bytes are not valid (or not supported) UBJSON."""


class TypedArray(NamedTuple):
    """A numeric optimised array left in the buffer: ``length`` items of ``marker`` at ``offset``."""

    marker: int
    offset: int
    length: int

    def array(self, buf: bytes) -> np.ndarray:
        """The items as a read-only big-endian numpy view of ``buf``.

        Args:
            buf: the buffer this array was parsed from.

        Returns:
            A 1-D array of ``length`` items.
        """
        return np.frombuffer(buf, NUMERIC_DTYPES[self.marker], self.length, self.offset)


# A hook parses the value of one object key itself: (buf, pos of the value's marker) -> (value, end).
Hook = Callable[[bytes, int], tuple[Any, int]]


def read_int(buf: bytes, pos: int) -> tuple[int, int]:
    """Read a marker-prefixed integer (a length or count).

    Args:
        buf: UBJSON bytes.
        pos: offset of the integer's type marker.

    Returns:
        The value and the offset just past it.

    Raises:
        UBJSONError: the marker is not an integer type.
    """
    m = buf[pos]
    if m not in _INTS:
        raise UBJSONError(f"expected an integer marker at {pos}, got {m!r}")
    return _UNPACK[m](buf, pos + 1)[0], pos + 1 + _SIZE[m]


def loads(buf: bytes, hooks: Mapping[str, Hook] | None = None) -> Any:
    """Parse one UBJSON value that spans all of ``buf``.

    Args:
        buf: the bytes.
        hooks: per object key, a parser used instead of the generic one for that key's value.

    Returns:
        The value; numeric optimised arrays are :class:`TypedArray` over ``buf``.

    Raises:
        UBJSONError: malformed, truncated, too deep, or trailing bytes.
    """
    value, end = read_value(buf, 0, hooks)
    if end != len(buf):
        raise UBJSONError(f"{len(buf) - end} trailing bytes after the root value")
    return value


def read_value(buf: bytes, pos: int,
               hooks: Mapping[str, Hook] | None = None) -> tuple[Any, int]:
    """Parse the one UBJSON value whose marker is at ``pos``.

    Args:
        buf: the bytes.
        pos: offset of the value's type marker.
        hooks: as for :func:`loads`.

    Returns:
        The value and the offset just past it.

    Raises:
        UBJSONError: malformed, truncated or too deep.
    """
    try:
        return _Parser(buf, hooks or {}).value(buf[pos], pos + 1, 0)
    except UBJSONError:
        raise
    except (IndexError, struct.error, UnicodeDecodeError, KeyError, ValueError) as exc:
        raise UBJSONError(f"malformed UBJSON: {exc!r}") from exc


class _Parser:
    """Recursive-descent parser state: the buffer and the key hooks."""

    def __init__(self, buf: bytes, hooks: Mapping[str, Hook]) -> None:
        self.buf, self.hooks, self.n = buf, hooks, len(buf)

    def count(self, pos: int) -> tuple[int, int]:
        c, pos = read_int(self.buf, pos)
        if c < 0 or c > self.n:  # no container can hold more items than there are bytes
            raise UBJSONError(f"container count {c} out of range")
        return c, pos

    def value(self, m: int, pos: int, depth: int) -> tuple[Any, int]:
        """Parse the value whose marker ``m`` was at ``pos - 1``; return it and its end."""
        buf = self.buf
        if m in _UNPACK:
            return _UNPACK[m](buf, pos)[0], pos + _SIZE[m]
        if m == _STR or m == _HIGH:
            k, pos = self.count(pos)
            if pos + k > self.n:
                raise UBJSONError("string runs past the end")
            s = buf[pos:pos + k].decode()
            return (float(s) if m == _HIGH else s), pos + k
        if m in _CONST:
            return _CONST[m], pos
        if m == _CHAR:
            return buf[pos:pos + 1].decode(), pos + 1
        if m == _ARR or m == _OBJ:
            if depth >= MAX_DEPTH:
                raise UBJSONError("containers nested too deep")
            return self.container(m == _OBJ, pos, depth + 1)
        raise UBJSONError(f"unknown marker {m!r} at {pos - 1}")

    def container(self, is_obj: bool, pos: int, depth: int) -> tuple[Any, int]:
        buf, typ, count = self.buf, None, -1
        if buf[pos] == _TYPE:
            typ = buf[pos + 1]
            if buf[pos + 2] != _COUNT:
                raise UBJSONError("'$' without '#'")
            count, pos = self.count(pos + 3)
            if typ in _SIZE and not is_obj:
                end = pos + count * _SIZE[typ]
                if end > self.n:
                    raise UBJSONError("typed array runs past the end")
                return TypedArray(typ, pos, count), end
        elif buf[pos] == _COUNT:
            count, pos = self.count(pos + 1)
        out: Any = {} if is_obj else []
        i = 0
        if not is_obj and typ is None and count > 0:  # e.g. XGBoost's tree_info: i0 i0 i0 ...
            if buf[pos:pos + 2 * count:2] == b"i" * count:
                return np.frombuffer(buf[pos + 1:pos + 2 * count:2], np.int8).tolist(), \
                    pos + 2 * count
            while i != count and buf[pos] in _UNPACK:  # numbers of mixed widths
                m = buf[pos]
                out.append(_UNPACK[m](buf, pos + 1)[0])
                pos, i = pos + 1 + _SIZE[m], i + 1
        while i != count:
            if count < 0:  # no count: items until the closing marker, skipping no-ops
                while buf[pos] == _NOOP:
                    pos += 1
                if buf[pos] == (_END_OBJ if is_obj else _END_ARR):
                    return out, pos + 1
            if is_obj:
                k, pos = self.count(pos)
                key = buf[pos:pos + k].decode()
                pos += k
                hook = self.hooks.get(key)
                if hook is not None and typ is None:
                    out[key], pos = hook(buf, pos)
                    i += 1
                    continue
            if typ is None:
                v, pos = self.value(buf[pos], pos + 1, depth)
            else:
                v, pos = self.value(typ, pos, depth)
            if is_obj:
                out[key] = v
            else:
                out.append(v)
            i += 1
        return out, pos
