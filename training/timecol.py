"""The time column: which types it may have, its UTC day, and a window filter for scans.

A time column is a date, a timestamp (with or without time zone: days are UTC days) or
ISO 8601 text (``2024-01-31``, ``2024-01-31T09:30:00``, with or without an offset).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from training.errors import InvalidTrainingInput

__all__ = ["is_time_type", "normalize_time", "window_filter"]


def is_time_type(t: pa.DataType) -> bool:
    """Whether a column of type ``t`` can be the time column."""
    return (pa.types.is_date(t) or pa.types.is_timestamp(t) or pa.types.is_string(t)
            or pa.types.is_large_string(t))


def _to_timestamp(arr: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    """Microsecond timestamps without time zone, holding UTC wall-clock time."""
    t = arr.type
    if pa.types.is_date(t):
        return pc.cast(pc.cast(arr, pa.date32()), pa.timestamp("us"))
    if pa.types.is_timestamp(t):
        return pc.cast(arr, pa.timestamp("us", tz=t.tz)).cast(pa.timestamp("us"))
    for target in (pa.timestamp("us"), pa.timestamp("us", tz="UTC")):
        try:
            return pc.cast(arr, target).cast(pa.timestamp("us"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    bad = next((v for v in arr.to_pylist() if v is not None and _unparseable(v)), None)
    raise InvalidTrainingInput(f"time column {name!r} has a value that is not an ISO date "
                               f"or timestamp: {bad!r}")


def _unparseable(value: str) -> bool:
    try:
        dt.datetime.fromisoformat(value)
        return False
    except ValueError:
        return True


def normalize_time(arr: pa.ChunkedArray | pa.Array, name: str) -> tuple[pa.Array, np.ndarray]:
    """Each row's UTC day and a sortable time key.

    Args:
        arr: the time column.
        name: its name (for errors).

    Returns:
        ``(days, keys)``: ``YYYY-MM-DD`` strings (null where the time is null) and int64
        microseconds since the epoch (``iinfo.min`` where null).

    Raises:
        InvalidTrainingInput: text that is not ISO 8601.
    """
    if isinstance(arr, pa.Array):
        arr = pa.chunked_array([arr])
    ts = _to_timestamp(arr, name)
    days = pc.cast(pc.cast(ts, pa.date32()), pa.string()).combine_chunks()
    keys = pc.cast(ts, pa.int64()).fill_null(np.iinfo(np.int64).min)
    return days, keys.to_numpy()


def window_filter(field: pa.Field, first: str, last: str) -> pads.Expression:
    """A scan filter keeping (at least) the rows of days ``first..last``.

    Bounds are widened by a day on each side, so time zones and offsets in text never drop
    a row; callers keep the exact days after :func:`normalize_time`. Row-group statistics
    prune files and row groups outside the window.

    Args:
        field: the time column's field.
        first: first day, ``YYYY-MM-DD``.
        last: last day.

    Returns:
        A pyarrow dataset expression.
    """
    lo = dt.date.fromisoformat(first) - dt.timedelta(days=1)
    hi = dt.date.fromisoformat(last) + dt.timedelta(days=2)
    t, col = field.type, pads.field(field.name)
    if pa.types.is_timestamp(t):
        tz = dt.UTC if t.tz else None
        lo_s = pa.scalar(dt.datetime(lo.year, lo.month, lo.day, tzinfo=tz), t)
        hi_s = pa.scalar(dt.datetime(hi.year, hi.month, hi.day, tzinfo=tz), t)
    elif pa.types.is_date(t):
        lo_s, hi_s = pa.scalar(lo, pa.date32()).cast(t), pa.scalar(hi, pa.date32()).cast(t)
    else:
        lo_s, hi_s = pa.scalar(lo.isoformat(), t), pa.scalar(hi.isoformat(), t)
    return (col >= lo_s) & (col < hi_s)
