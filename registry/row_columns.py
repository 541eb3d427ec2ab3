"""Whole-column work on ``models`` rows, so a snapshot load does little per row in Python.

Each helper answers for every row at once (Arrow compute and numpy): a code per row that
is equal exactly when the column's values are equal, the raw bytes of each hex sha256,
and whether each row's artifact lies at the canonical path of its tenant and version.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["canonical_paths", "column", "digests", "value_codes"]

_HEX = np.full(256, 255, np.uint8)
_HEX[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_HEX[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16)


def column(rows: pa.Table, name: str, type_: pa.DataType) -> pa.Array:
    """Column ``name`` as one array (all nulls when the table predates the column)."""
    if name not in rows.column_names:
        return pa.nulls(rows.num_rows, type_)
    return rows.column(name).combine_chunks()


def _injective_text(values: pa.Array) -> pa.Array:
    """A list<string> column as one string per row, equal exactly when the lists are."""
    flat = pc.replace_substring(pc.replace_substring(values.flatten(), "\\", "\\\\"),
                                "\x1f", "\\u")
    escaped = pa.ListArray.from_arrays(values.offsets, flat, mask=values.is_null())
    lengths = pc.cast(pc.list_value_length(escaped), pa.string())
    return pc.binary_join_element_wise(lengths, pc.binary_join(escaped, "\x1f"), ":")


def value_codes(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Per row a code (-1: null) equal exactly when the values are, and each code's first row.

    Returns:
        (codes, first): ``first[c]`` is a row holding code ``c``'s value.
    """
    if pa.types.is_list(values.type):
        values = _injective_text(values)
    elif pa.types.is_timestamp(values.type):
        values = values.cast(pa.int64())
    encoded = pc.dictionary_encode(values)
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    _, first = np.unique(codes, return_index=True)
    order = np.full(len(encoded.dictionary) + 1, -1, np.int64)
    order[np.unique(codes) + 1] = first  # slot 0: the null code
    return codes, order[1:]


def digests(sha: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Raw 32-byte digests of lowercase-hex sha256 strings, and which rows were such strings.

    Returns:
        (digests, ok): ``digests[i]`` is meaningful only where ``ok[i]``.
    """
    n = len(sha)
    ok = pc.fill_null(pc.equal(pc.binary_length(sha), 64), False).to_numpy(zero_copy_only=False)
    # 64-byte strings back to back: the data buffer between the first and last offsets
    good = pc.filter(sha, pa.array(ok)).cast(pa.string())
    offsets = np.frombuffer(good.buffers()[1], np.int32)[good.offset:good.offset + len(good) + 1]
    data = good.buffers()[2]
    raw = np.frombuffer(data, np.uint8)[offsets[0]:offsets[-1]] if data is not None \
        else np.empty(0, np.uint8)
    nibbles = _HEX[raw].reshape(-1, 64)
    good = (nibbles != 255).all(axis=1)
    out = np.zeros((n, 32), np.uint8)
    out[ok] = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]
    ok[ok] = good
    return out, ok


def canonical_paths(tenant_id: pa.Array, shard: pa.Array, version: pa.Array) -> pa.Array:
    """``artifacts/shard=NN/tenant=ID/v=N/model.ubj`` for every row."""
    shard_text = pc.utf8_lpad(pc.cast(shard, pa.string()), 2, "0")
    return pc.binary_join_element_wise("artifacts/shard=", shard_text, "/tenant=", tenant_id,
                                       "/v=", pc.cast(version, pa.string()), "/model.ubj", "")
