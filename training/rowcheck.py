"""Row checks of ``tenantry data import``: which source rows are bad, and why.

Each check takes one source column and returns the converted column plus a
:class:`Verdict`: a boolean mask of bad rows, the reason they are counted under, and the
offending values for the report's examples. Conversions never fail a whole import for a
few bad values: those rows are rejected, the rest go in.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from registry.ids import TENANT_ID_PATTERN

__all__ = ["NUMBER", "Verdict", "check_label", "check_numeric", "check_tenant", "check_time",
           "numeric_share"]

NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"
"""A decimal number as text (what a numeric CSV cell looks like)."""


@dataclass(frozen=True)
class Verdict:
    """Bad rows of one check: ``bad[i]`` is True when row i fails, counted under ``reason``."""

    reason: str
    bad: np.ndarray
    values: pa.Array
    """The source values (for examples of bad rows)."""


def _mask(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def _text(arr: pa.ChunkedArray) -> bool:
    return pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)


def check_tenant(arr: pa.ChunkedArray) -> tuple[pa.ChunkedArray, Verdict]:
    """Tenant ids as text; rows whose id breaks the registry's rule are bad."""
    text = arr if _text(arr) else pc.cast(arr, pa.string())
    ok = pc.match_substring_regex(text, TENANT_ID_PATTERN.pattern)
    return text, Verdict("invalid_tenant_id", ~_mask(ok), text)


def numeric_share(arr: pa.ChunkedArray) -> float:
    """The share of non-null values of a text column that read as numbers (1.0: not text)."""
    if not _text(arr):
        return 1.0
    present = arr.length() - arr.null_count
    if not present:
        return 1.0
    return int(pc.sum(pc.match_substring_regex(arr, NUMBER)).as_py() or 0) / present


def _to_float(arr: pa.ChunkedArray) -> tuple[pa.ChunkedArray, np.ndarray]:
    """(float64 column, rows that hold a value that is not a number)."""
    if pa.types.is_boolean(arr.type):
        arr = pc.cast(arr, pa.int8())
    if not _text(arr):
        return pc.cast(arr, pa.float64()), np.zeros(len(arr), dtype=bool)
    is_num = pc.match_substring_regex(arr, NUMBER)
    bad = _mask(pc.invert(is_num))
    clean = pc.if_else(is_num, pc.utf8_trim_whitespace(arr), pa.scalar(None, arr.type))
    return pc.cast(clean, pa.float64()), bad


def check_numeric(arr: pa.ChunkedArray, name: str) -> tuple[pa.ChunkedArray, Verdict]:
    """A numeric feature: null stays missing, text that is not a number is bad."""
    values, bad = _to_float(arr)
    return values, Verdict(f"feature_not_numeric:{name}", bad, arr)


def check_label(arr: pa.ChunkedArray, objective: str,
                num_class: int | None) -> tuple[pa.ChunkedArray, list[Verdict]]:
    """The label: present, numeric, and a value the objective can take.

    Args:
        arr: the label column.
        objective: ``binary`` (0/1), ``regression`` (any number) or ``multiclass`` (class
            ids 0..K-1; K = ``num_class`` when given).
        num_class: the spec's class count, if any.
    """
    values, not_number = _to_float(arr)
    missing = ~_mask(pc.is_valid(arr))
    y = values.to_numpy(zero_copy_only=False).astype(np.float64)
    with np.errstate(invalid="ignore"):
        if objective == "binary":
            wrong = ~np.isin(y, (0.0, 1.0))
        elif objective == "multiclass":
            top = num_class if num_class is not None else np.inf
            wrong = (y != np.round(y)) | (y < 0) | (y >= top)
        else:
            wrong = ~np.isfinite(y)
    wrong &= ~missing & ~not_number
    return values, [Verdict("missing_label", missing, arr),
                    Verdict("label_not_numeric", not_number & ~missing, arr),
                    Verdict(f"label_not_{objective}", wrong, arr)]


def _parse_one(value: str) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed.astimezone(dt.UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


def check_time(arr: pa.ChunkedArray) -> tuple[pa.ChunkedArray, list[Verdict]]:
    """The time column as UTC timestamps (microseconds); missing or unparseable rows are bad."""
    missing = ~_mask(pc.is_valid(arr))
    utc = pa.timestamp("us", tz="UTC")
    if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
        ts = pc.cast(arr, pa.timestamp("us")) if pa.types.is_date(arr.type) else arr
        if not pa.types.is_timestamp(ts.type) or ts.type.tz is None:
            ts = pc.cast(ts, pa.timestamp("us"))
            ts = pc.assume_timezone(ts, "UTC")
        return pc.cast(ts, utc), [Verdict("missing_time", missing, arr)]
    text = arr if _text(arr) else pc.cast(arr, pa.string())
    encoded = pc.dictionary_encode(text).combine_chunks()
    parsed = [_parse_one(v) for v in encoded.dictionary.to_pylist()]
    lookup = pa.array(parsed + [None], pa.timestamp("us"))
    idx = encoded.indices.fill_null(len(parsed))
    ts = pc.assume_timezone(pc.take(lookup, idx), "UTC")
    unparseable = ~_mask(pc.is_valid(ts)) & ~missing
    return pa.chunked_array([ts]), [Verdict("missing_time", missing, arr),
                                    Verdict("time_not_iso", unparseable, arr)]
