"""Read the trees of an XGBoost UBJSON model into the five node arrays a predictor needs.

A tree object takes ~16 key/value items; parsing them one by one in Python costs ~15 us a
tree. XGBoost 3.x writes every tree with the same keys, types and order, so for a tree of
``n`` nodes the whole object is a fixed byte layout apart from its payloads. The fast path
unpacks a tree with one cached :class:`struct.Struct` per (node count, id marker) and
checks every fixed byte (keys, types, counts, empty categorical arrays, an all-zero
``split_type``, ``tree_param``) with one tuple comparison. A tree that differs in any byte
goes through the generic UBJSON parser and is validated field by field instead.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np

from engine.forest.ubjson import TypedArray, UBJSONError, read_int, read_value

__all__ = ["FIELDS", "FIELD_DTYPES", "NotNumerical", "TreeFields", "read_trees"]

# The node arrays kept, and the big-endian dtype each is normalised to.
FIELDS = ("default_left", "left_children", "right_children", "split_conditions",
          "split_indices")
FIELD_DTYPES: tuple[np.dtype[Any], ...] = (np.dtype("u1"), np.dtype(">i4"), np.dtype(">i4"), np.dtype(">f4"),
                np.dtype(">i4"))
TreeFields = tuple[bytes, bytes, bytes, bytes, bytes]  # payloads of FIELDS, in that order

# XGBoost 3.x tree object: (key, element marker, count) in write order; count "n" = nodes.
_LAYOUT = (("base_weights", "d", "n"), ("categories", "l", 0), ("categories_nodes", "l", 0),
           ("categories_segments", "L", 0), ("categories_sizes", "L", 0),
           ("default_left", "U", "n"), ("id", "", ""), ("left_children", "l", "n"),
           ("loss_changes", "d", "n"), ("parents", "l", "n"), ("right_children", "l", "n"),
           ("split_conditions", "d", "n"), ("split_indices", "l", "n"),
           ("split_type", "U", "zeros"), ("sum_hessian", "d", "n"))
_ID_WIDTH = {ord("i"): 1, ord("U"): 1, ord("I"): 2, ord("l"): 4}
_I64 = struct.Struct(">q")


class NotNumerical(Exception):
    """A tree uses categorical splits or vector leaves."""


def _key(k: str) -> bytes:
    return b"L" + _I64.pack(len(k)) + k.encode()


def _str_item(k: str, v: str) -> bytes:
    return _key(k) + b"SL" + _I64.pack(len(v)) + v.encode()


_SIZES = {"d": 4, "l": 4, "L": 8, "U": 1}
_NF_ITEM = _key("num_feature") + b"SL"
_N_OFFSET = len(b"{" + _key("base_weights") + b"[$d#L")
_PRE_ID = _LAYOUT[:[k for k, _, _ in _LAYOUT].index("id")]
# The id's marker sits at tree start + _ID_AT + _ID_PER_NODE * n.
_ID_AT = 1 + sum(len(_key(k)) + 13 for k, _, _ in _PRE_ID) + len(_key("id"))
_ID_PER_NODE = sum(_SIZES[m] for _, m, c in _PRE_ID if c == "n")


@dataclass(frozen=True)
class _Fast:
    """The fixed layout of one (node count, id marker, num_feature) tree shape."""

    unpack: Callable[[bytes, int], tuple[Any, ...]]
    fixed: Callable[[tuple[Any, ...]], tuple[bytes, ...]]
    expected: tuple[bytes, ...]
    payloads: Callable[[tuple[Any, ...]], TreeFields]
    size: int
    deleted_width_at: int  # offset of the last byte of num_deleted's string length


_CACHE: dict[tuple[int, int, bytes, int], _Fast] = {}
_CACHE_MAX = 4096


def _layout(n: int, id_marker: int, num_feature: bytes, deleted_width: int) -> _Fast:
    """Build (or fetch) the struct that reads a tree of ``n`` nodes in one call."""
    key = (n, id_marker, num_feature, deleted_width)
    fast = _CACHE.get(key)
    if fast is not None:
        return fast
    parts: list[tuple[str, bytes | int]] = [("fixed", b"{")]
    for name, marker, count in _LAYOUT:
        if name == "id":
            parts += [("fixed", _key("id") + bytes([id_marker])),
                      ("skip", _ID_WIDTH[id_marker])]
            continue
        c = n if count in ("n", "zeros") else 0
        parts.append(("fixed", _key(name) + b"[$" + marker.encode() + b"#L" + _I64.pack(c)))
        nbytes = c * _SIZES[marker]
        if count == "zeros":
            parts.append(("fixed", bytes(nbytes)))
        elif nbytes:
            parts.append(("keep" if name in FIELDS else "skip", nbytes))
    # num_deleted counts pruned, unreachable nodes: its digits are not needed.
    parts += [("fixed", _key("tree_param") + b"{" + _key("num_deleted") + b"SL"
               + _I64.pack(deleted_width)), ("skip", deleted_width)]
    deleted_width_at = sum(len(v) if isinstance(v, bytes) else v for _, v in parts[:-1]) - 1
    parts.append(("fixed", _str_item("num_feature", num_feature.decode())
                  + _str_item("num_nodes", str(n)) + _str_item("size_leaf_vector", "1")
                  + b"}}"))
    merged: list[tuple[str, bytes | int]] = []
    for kind, val in parts:  # adjacent fixed runs become one field
        if merged and kind == "fixed" and merged[-1][0] == "fixed":
            merged[-1] = ("fixed", merged[-1][1] + val)  # type: ignore[operator]  # both bytes
        else:
            merged.append((kind, val))
    fmt, i = ">", 0
    fixed_idx: list[int] = []
    keep_idx: list[int] = []
    expected: list[bytes] = []
    for kind, val in merged:
        width = len(val) if isinstance(val, bytes) else val
        if kind == "skip":
            fmt += f"{width}x"
            continue
        fmt += f"{width}s"
        (fixed_idx if kind == "fixed" else keep_idx).append(i)
        if isinstance(val, bytes):
            expected.append(val)
        i += 1
    s = struct.Struct(fmt)
    fast = _Fast(s.unpack_from, itemgetter(*fixed_idx), tuple(expected),
                 itemgetter(*keep_idx), s.size, deleted_width_at)
    if len(_CACHE) < _CACHE_MAX:
        _CACHE[key] = fast
    return fast


def _fast_tree(buf: bytes, pos: int,
               num_feature: bytes) -> tuple[TreeFields, int, bytes] | None:
    """One tree by the fixed layout (and the model's num_feature), or None if it differs.

    ``num_feature`` is the model's, from an earlier tree; empty means read it from this one.
    """
    try:
        n = _I64.unpack_from(buf, pos + _N_OFFSET)[0]
        if not 0 < n <= len(buf):
            return None
        id_marker = buf[pos + _ID_AT + _ID_PER_NODE * n]
        if id_marker not in _ID_WIDTH:
            return None
        guess = num_feature or b"0"
        fast = _layout(n, id_marker, guess, 1)
        width = buf[pos + fast.deleted_width_at]
        if not num_feature:  # its digits follow num_deleted's
            at = pos + fast.deleted_width_at + 1 + width + len(_NF_ITEM)
            k = _I64.unpack_from(buf, at)[0]
            num_feature = buf[at + 8:at + 8 + k] if 0 < k < 20 else b""
            if not num_feature.isdigit():
                return None
        if width != 1 or num_feature != guess:
            fast = _layout(n, id_marker, num_feature, min(width, 8))
        vals = fast.unpack(buf, pos)
    except (struct.error, IndexError):
        return None
    if fast.fixed(vals) != fast.expected:
        return None
    return fast.payloads(vals), pos + fast.size, num_feature


def _as_array(v: Any, buf: bytes) -> np.ndarray:
    if isinstance(v, TypedArray):
        return v.array(buf)
    if isinstance(v, list) and all(isinstance(e, (int, float)) for e in v):
        return np.asarray(v, dtype=np.float64 if any(isinstance(e, float) for e in v) else np.int64)
    raise UBJSONError(f"expected a numeric array, got {type(v).__name__}")


def _generic_tree(tree: Any, buf: bytes) -> TreeFields:
    """Validate a generically parsed tree object and normalise its fields."""
    if not isinstance(tree, dict):
        raise UBJSONError("a tree is not an object")
    param = tree.get("tree_param", {})
    if str(param.get("size_leaf_vector", "1")) not in ("0", "1"):
        raise NotNumerical("vector-leaf trees (multi-target) are not supported")
    if (np.any(_as_array(tree.get("split_type", []), buf) != 0)
            or _as_array(tree.get("categories", []), buf).size):
        raise NotNumerical("categorical splits are not supported")
    arrays = [_as_array(tree[f], buf) for f in FIELDS]
    n = arrays[1].size
    if any(a.size != n for a in arrays):
        raise UBJSONError("node arrays of one tree differ in length")
    for a, dt in zip(arrays[1:], FIELD_DTYPES[1:], strict=True):
        if a.dtype.kind in "iu" and dt.kind == "i" and a.size and (
                a.min() < -(2 ** 31) or a.max() >= 2 ** 31):
            raise UBJSONError("node index out of int32 range")
    return tuple(a.astype(dt).tobytes() for a, dt in  # type: ignore[return-value]  # 5 items
                 zip(arrays, FIELD_DTYPES, strict=True))


def read_trees(buf: bytes, pos: int) -> tuple[list[TreeFields], int]:
    """Parse the ``trees`` array whose marker is at ``pos``.

    Args:
        buf: the model's UBJSON bytes.
        pos: offset of the array's ``[`` marker.

    Returns:
        Per tree, the payloads of :data:`FIELDS` as big-endian bytes of
        :data:`FIELD_DTYPES`; and the offset just past the array.

    Raises:
        UBJSONError: malformed bytes.
        NotNumerical: a tree has categorical splits or vector leaves.
    """
    if buf[pos:pos + 2] != b"[#":
        items, end = read_value(buf, pos)
        if not isinstance(items, list):
            raise UBJSONError("'trees' is not an array")
        return [_generic_tree(t, buf) for t in items], end
    count, pos = read_int(buf, pos + 2)
    if not 0 <= count <= len(buf):
        raise UBJSONError("tree count out of range")
    out: list[TreeFields] = []
    num_feature = b""
    for _ in range(count):
        hit = _fast_tree(buf, pos, num_feature)
        if hit is None:
            tree, pos = read_value(buf, pos)
            out.append(_generic_tree(tree, buf))
        else:
            fields, pos, num_feature = hit
            out.append(fields)
    return out, pos
