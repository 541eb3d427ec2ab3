"""Scoring the table a training spec describes: its own tenant and time columns, any layout.

:func:`open_spec_source` opens ``spec.table`` as training does
(:class:`~training.source.TableSource`). A Delta table laid out by shard and date (what
``tenantry data import`` writes) keeps the fast path: a bucket reads only its shard's files
of the day. Anything else -- a Parquet file or folder, a Delta table laid out another
way -- is scanned: every bucket (one per registry shard and part) reads the day's rows of
the whole table, pruned by file and row-group statistics on the time column, and keeps
the rows of its own tenants, one record batch at a time. Every bucket reads the day once,
so importing a big table pays off, as it does for training.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from engine.batch.plan import ROW_ID_COLUMN, DataSource, open_source
from registry import shard_of
from training.errors import InvalidTrainingInput
from training.parts import bucket_part
from training.source import Layout, TableSource
from training.spec import TrainingSpec
from training.timecol import normalize_time, window_filter

__all__ = ["open_spec_source", "read_scan"]

_BATCH_ROWS = 64 * 1024


def open_spec_source(spec: TrainingSpec, path: str | None = None, version: int | None = None,
                     row_key: str | None = None) -> DataSource:
    """The table of ``spec`` (or ``path``), read with the spec's tenant and time columns.

    Args:
        spec: the training spec (table, format, tenant/time/label columns).
        path: another table laid out the same way (default ``spec.table``).
        version: the Delta version to read (a shard-and-date table only; a scan reads the
            table as it is).
        row_key: the row-identity column; None = ``row_id`` if the table has one.

    Returns:
        The :class:`DataSource` (``scan`` set unless the table is laid out by shard and date).

    Raises:
        DataNotFound: no table there.
        InvalidTrainingInput: the spec's tenant or time column is not in the table, or a
            ``row_key`` that is unknown or one of those columns.
    """
    path = path or spec.table
    table = TableSource.open(path, spec.format, spec.time_column, spec.tenant_column)
    if table.layout is Layout.SHARDED:
        return replace(open_source(path, version, row_key), tenant_column=spec.tenant_column,
                       time_column=spec.time_column, label_column=spec.label_column)
    schema = table.schema()
    names = {"tenant_column": spec.tenant_column, "time_column": spec.time_column,
             "label_column": spec.label_column}
    for key in ("tenant_column", "time_column"):
        if names[key] not in schema.names:
            raise InvalidTrainingInput(f"table {path!r} has no column {names[key]!r} (the "
                                       f"spec's {key})")
    if row_key is not None and row_key not in schema.names:
        raise InvalidTrainingInput(f"table {path!r} has no column {row_key!r} (--row-key)")
    if row_key is None and ROW_ID_COLUMN in schema.names:
        row_key = ROW_ID_COLUMN
    if row_key in names.values():
        raise InvalidTrainingInput(f"{row_key!r} cannot be the row key")
    at = DeltaTable(path).version() if table.format == "delta" else 0
    return DataSource(path, at, schema, row_key, False, spec.tenant_column, spec.time_column,
                      spec.label_column, table)


def read_scan(src: DataSource, date: str, shard: int, part: int, parts: int,
              num_shards: int) -> pa.Table:
    """The rows of ``date`` whose tenants fall in bucket (``shard``, ``part``), in scan order.

    Args:
        src: a scanned source (``src.scan`` set).
        date: the day, ``YYYY-MM-DD`` (the UTC day of the time column).
        shard: the registry shard of the bucket's tenants.
        part: the bucket's part of its shard.
        parts: parts per shard.
        num_shards: the registry's shard count.

    Returns:
        Every column but the time column; rows without a tenant id are left out.
    """
    assert src.scan is not None
    ds = src.scan.dataset()
    names = [n for n in ds.schema.names if n != src.time_column]
    scanner = ds.scanner(columns=[*names, src.time_column], batch_size=_BATCH_ROWS,
                         filter=window_filter(ds.schema.field(src.time_column), date, date))
    pieces = []
    for batch in scanner.to_batches():
        keep = _mine(batch.column(src.tenant_column), shard, part, parts, num_shards)
        if not keep.any():
            continue
        day, _ = normalize_time(batch.column(src.time_column), src.time_column)
        keep &= pc.equal(day, date).fill_null(False).to_numpy(zero_copy_only=False)
        if keep.any():
            pieces.append(pa.Table.from_batches([batch]).select(names).filter(pa.array(keep)))
    if not pieces:
        return pa.schema([ds.schema.field(n) for n in names]).empty_table()
    return pa.concat_tables(pieces, promote_options="permissive")


def _mine(tenants: pa.Array, shard: int, part: int, parts: int, num_shards: int) -> np.ndarray:
    """Which rows' tenants hash to ``shard`` and fall in ``part`` (null ids: none)."""
    encoded = pc.dictionary_encode(pc.cast(tenants, pa.string()))
    ids = encoded.dictionary.to_pylist()
    ours = np.array([shard_of(t, num_shards) == shard and bucket_part(t, parts) == part
                     for t in ids] + [False], dtype=bool)
    return ours[encoded.indices.fill_null(len(ids)).to_numpy(zero_copy_only=False)]
