"""A training run's input table, whatever its shape: Delta or Parquet, sharded or not.

Two layouts:

- ``sharded``: a Delta table partitioned by ``shard`` and ``date`` (what ``tenantry data
  generate`` and ``tenantry data import`` write). A bucket reads only its shard's files
  of the window's days, found in the Delta log (:meth:`FeatureTable.read_shard`).
- ``scan``: anything else -- a Parquet file or folder, a Delta table laid out any other
  way. There is no shard column to trust: a bucket scans the window (files and row groups
  outside it are pruned by their statistics), computes each tenant's part from its id and
  keeps its own tenants, a record batch at a time. Every bucket reads the window once, so
  importing the table (sharded layout) pays off when a run has many buckets.

Every read returns the requested columns plus :data:`~training.frame.DAY` (the row's UTC
day) and, when asked, :data:`~training.frame.TIME_KEY`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from deltalake import DeltaTable

from training.errors import DataNotFound
from training.features import DATE_COLUMN, SHARD_COLUMN, TENANT_COLUMN
from training.frame import DAY, TIME_KEY
from training.parts import bucket_part
from training.table import FeatureTable
from training.timecol import normalize_time, window_filter

__all__ = ["Layout", "TableSource", "is_delta", "part_of"]

_BATCH_ROWS = 64 * 1024


class Layout(str, Enum):
    """How a bucket finds its rows."""

    SHARDED = "sharded"
    SCAN = "scan"


def is_delta(path: str) -> bool:
    """Whether a Delta table is at ``path`` (False for a file or nothing)."""
    try:
        return DeltaTable.is_deltatable(path)
    except OSError:  # a file where the table's folder would be
        return False


def part_of(tenant_ids: pa.Array | pa.ChunkedArray, parts: int) -> np.ndarray:
    """Each row's bucket part (:func:`training.bucket.bucket_part` of its tenant id)."""

    encoded = pc.dictionary_encode(tenant_ids)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    per_id = np.asarray([bucket_part(str(t), parts) for t in encoded.dictionary.to_pylist()]
                        + [-1], dtype=np.int64)
    return per_id[encoded.indices.fill_null(len(per_id) - 1).to_numpy(zero_copy_only=False)]


@dataclass(frozen=True)
class TableSource:
    """A handle on the input table (cheap to pickle: the path and what was detected)."""

    path: str
    format: str
    layout: Layout
    time_column: str

    @classmethod
    def open(cls, path: str, fmt: str = "auto", time_column: str = DATE_COLUMN,
             tenant_column: str = TENANT_COLUMN) -> TableSource:
        """Detect the format and layout of the table at ``path``.

        A Delta table partitioned by ``shard`` and ``date`` is read by shard when its
        ``date`` is the day of the spec's time column and its shards were computed from the
        spec's tenant column (as the table's metadata declares, when it does); otherwise
        it is scanned.

        Args:
            path: a Delta table, a Parquet file or a folder of Parquet files (local, s3://).
            fmt: ``auto``, ``delta`` or ``parquet``.
            time_column: the spec's time column.
            tenant_column: the spec's tenant column.

        Raises:
            DataNotFound: nothing readable at ``path``.
        """
        delta = is_delta(path)
        if fmt == "delta" and not delta:
            raise DataNotFound(f"no feature table at {path!r} (no Delta log there)")
        if fmt == "parquet" or not delta:
            if "://" not in path and not os.path.exists(path):
                raise DataNotFound(f"no feature table at {path!r}")
            return cls(path, "parquet", Layout.SCAN, time_column)
        meta = DeltaTable(path).metadata()
        parts = set(meta.partition_columns)
        try:
            declared = json.loads(meta.description or "{}")
        except ValueError:
            declared = {}
        declared = declared if isinstance(declared, dict) else {}
        sharded = {SHARD_COLUMN, DATE_COLUMN} <= parts \
            and time_column in (DATE_COLUMN, declared.get("time_column")) \
            and tenant_column == declared.get("tenant_column", TENANT_COLUMN)
        return cls(path, "delta", Layout.SHARDED if sharded else Layout.SCAN, time_column)

    @property
    def feature_table(self) -> FeatureTable:
        """The Delta handle of a sharded table."""
        return FeatureTable(self.path)

    def dataset(self) -> pads.Dataset:
        """A pyarrow dataset over the table's current files."""
        try:
            if self.format == "delta":
                return DeltaTable(self.path).to_pyarrow_dataset()
            return pads.dataset(self.path, format="parquet", partitioning="hive")
        except (OSError, ValueError, pa.ArrowInvalid) as exc:
            first = (str(exc).splitlines() or [""])[0]
            raise DataNotFound(f"no feature table at {self.path!r} ({first})") from exc

    def schema(self) -> pa.Schema:
        """The table's columns and their Arrow types."""
        return self.dataset().schema

    def dates(self) -> list[str]:
        """Distinct UTC days present, oldest first (the Delta log for a sharded table)."""
        if self.layout is Layout.SHARDED:
            return self.feature_table.dates()
        days: set[str] = set()
        scanner = self.dataset().scanner(columns=[self.time_column], batch_size=_BATCH_ROWS)
        for batch in scanner.to_batches():
            day, _ = normalize_time(batch.column(0), self.time_column)
            days.update(d for d in pc.unique(day).to_pylist() if d is not None)
        return sorted(days)

    def row_counts(self, dates: Sequence[str]) -> dict[int, int]:
        """Rows per shard over ``dates`` (sharded), or ``{-1: rows in the table}`` (scan)."""
        if self.layout is Layout.SHARDED:
            return self.feature_table.shard_row_counts(dates)
        if self.format == "delta":
            actions = pa.table(DeltaTable(self.path).get_add_actions(flatten=True))
            return {-1: int(sum(n or 0 for n in actions.column("num_records").to_pylist()))}
        return {-1: int(self.dataset().count_rows())}

    def read(self, shard: int, part: int, parts: int, dates: Sequence[str],
             columns: Sequence[str], time_key: bool = False) -> pa.Table:
        """One bucket's rows over ``dates``.

        Args:
            shard: the bucket's shard (sharded layout; ignored by a scan).
            part: the bucket's part of its shard (a scan: of the whole table).
            parts: parts per shard (a scan: buckets in the run).
            dates: the window's days.
            columns: data columns to return (the tenant column first).
            time_key: also return :data:`TIME_KEY`.

        Returns:
            ``columns`` + :data:`DAY` (+ :data:`TIME_KEY`), rows of the bucket's tenants only
            when it is a scan (a sharded read leaves parts to the caller, as before).
        """
        if self.layout is Layout.SHARDED:
            wanted = list(dict.fromkeys([*columns, DATE_COLUMN] + (
                [self.time_column] if time_key else [])))
            table = self.feature_table.read_shard(shard, dates, wanted)
            out = table.select(list(columns)).append_column(DAY, table.column(DATE_COLUMN))
            if time_key:
                _, keys = normalize_time(table.column(self.time_column), self.time_column)
                out = out.append_column(TIME_KEY, pa.array(keys))
            return out
        return self._scan(part, parts, dates, columns, time_key)

    def _scan(self, part: int, parts: int, dates: Sequence[str], columns: Sequence[str],
              time_key: bool) -> pa.Table:
        ds = self.dataset()
        wanted = list(dict.fromkeys([*columns, self.time_column]))
        scanner = ds.scanner(columns=wanted, batch_size=_BATCH_ROWS, filter=window_filter(
            ds.schema.field(self.time_column), min(dates), max(dates)))
        keep_days = pa.array(sorted(dates), pa.string())
        pieces = []
        for batch in scanner.to_batches():
            if parts > 1:
                batch = batch.filter(pa.array(part_of(batch.column(columns[0]), parts) == part))
            if not batch.num_rows:
                continue
            day, keys = normalize_time(batch.column(self.time_column), self.time_column)
            mask = pc.is_in(day, value_set=keep_days).to_numpy(zero_copy_only=False)
            cols = {c: batch.column(c).filter(pa.array(mask)) for c in columns}
            cols[DAY] = day.filter(pa.array(mask))
            if time_key:
                cols[TIME_KEY] = pa.array(keys[mask])
            pieces.append(pa.table(cols))
        if not pieces:
            fields = [ds.schema.field(c) for c in columns] + [pa.field(DAY, pa.string())]
            if time_key:
                fields.append(pa.field(TIME_KEY, pa.int64()))
            return pa.schema(fields).empty_table()
        return pa.concat_tables(pieces, promote_options="permissive")

    def column_max(self, column: str, dates: Sequence[str]) -> float | None:
        """The largest value of a numeric ``column`` in the window (None: no value)."""
        table = self._scan(0, 1, dates, [column], False) if self.layout is Layout.SCAN else \
            self.dataset().to_table(columns=[column], filter=pc.field(DATE_COLUMN).isin(
                list(dates)))
        value = pc.max(table.column(column)).as_py()
        return None if value is None else float(value)

    def check_layout(self, num_shards: int) -> None:
        """Refuse a sharded table laid out for another shard count (before any work).

        A scanned table needs no check: its shards are computed from the tenant ids.

        Raises:
            InvalidTrainingInput: the layouts differ.
        """
        if self.layout is Layout.SHARDED:
            self.feature_table.check_shards(num_shards)
