"""Planning a scoring run: which files of the day each bucket reads and which models it loads.

The plan reads only the feature table's Delta log, pinned at one table version (a resumed
run reads the same version, so it sees the same rows in the same order), and the
registry's in-memory snapshot. A bucket is one shard (or one part of a shard): its files
for the day, in row order, and the production (and shadow) version of every registry
tenant of that shard. Buckets are sorted biggest first so the last wave of tasks is short.

A table a training spec describes (other tenant/time column names, Parquet, not laid out
by shard and date) is scanned instead (:mod:`engine.batch.scan`): ``DataSource.scan`` is
set, and a bucket reads the day's rows of the whole table and keeps its shard's tenants.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable

from registry import Alias, ModelVersion, Registry
from training.errors import DataNotFound, InvalidTrainingInput
from training.features import DATE_COLUMN, LABEL_COLUMN, SHARD_COLUMN, TENANT_COLUMN
from training.parts import bucket_part
from training.source import TableSource

__all__ = ["ROW_ID_COLUMN", "ROW_INDEX_COLUMN", "DataSource", "ModelPair", "ScoreBucket",
           "in_blocks", "model_pairs", "open_source", "plan_buckets"]

ROW_ID_COLUMN = "row_id"
"""The feature table column taken as the row identity when present (``--row-key`` names
another); without one, a row is identified by its ordinal within (tenant, date)."""
ROW_INDEX_COLUMN = "row_index"
_NOT_FEATURES = frozenset({TENANT_COLUMN, DATE_COLUMN, SHARD_COLUMN, LABEL_COLUMN})


@dataclass(frozen=True)
class DataSource:
    """The feature table at one version, as far as a scoring run needs it."""

    path: str
    version: int
    schema: pa.Schema  # data columns (partition columns included)
    row_key: str | None  # the row-identity column, or None: ordinals (``row_index``)
    direct: bool  # data files can be read as they are (no deletion vectors, no mapping)
    tenant_column: str = TENANT_COLUMN
    time_column: str = DATE_COLUMN  # a scan's rows are of its UTC day
    label_column: str = LABEL_COLUMN
    scan: TableSource | None = None
    """Set for a table not laid out by shard and date: buckets scan it for their tenants."""
    opened: DeltaTable | None = field(default=None, compare=False, repr=False)
    """The table as the planner opened it at ``version`` (kept for the plan, not pickled)."""

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "opened": None}  # tasks open what they read themselves

    @property
    def key_field(self) -> pa.Field:
        """The output's row-key column: the table's own, or ``row_index`` (int64)."""
        if self.row_key is None:
            return pa.field(ROW_INDEX_COLUMN, pa.int64())
        return pa.field(self.row_key, self.schema.field(self.row_key).type)

    @property
    def feature_columns(self) -> tuple[str, ...]:
        """Columns a model may name as features (everything but keys and the label)."""
        keys = _NOT_FEATURES | {self.tenant_column, self.time_column, self.label_column}
        return tuple(n for n in self.schema.names if n not in keys and n != self.row_key)

    def delta(self) -> DeltaTable:
        """The table at this version (opened once per process that plans with it)."""
        if self.opened is not None:
            return self.opened
        return DeltaTable(self.path, version=self.version)

    def dates(self) -> list[str]:
        """Dates present at this version, oldest first."""
        if self.scan is not None:
            return self.scan.dates()
        return sorted({str(p[DATE_COLUMN]) for p in self.delta().partitions()})

    def shard_files(self, date: str,
                    num_shards: int = 1) -> dict[int, tuple[tuple[str, ...], int]]:
        """Per shard, the URIs of the day's data files in row order, and their row count.

        Row order is the order files were added (their modification time, then path), and
        within a file the file's order: stable for this table version. A scanned table has
        no files per shard: every one of the ``num_shards`` shards gets a bucket (with an
        even share of the table's rows as its estimate) that scans the day for its tenants.
        """
        if self.scan is not None:
            rows = sum(self.scan.row_counts([date]).values())
            return {s: ((), max(1, rows // num_shards)) for s in range(num_shards)}
        dt = self.delta()
        actions = pa.table(dt.get_add_actions(flatten=True))
        base = dt.table_uri.rstrip("/")
        files: dict[int, list[tuple[int, str, int]]] = {}
        for path, mtime, rows, shard, day in zip(
                actions.column("path").to_pylist(),
                actions.column("modification_time").to_pylist(),
                actions.column("num_records").to_pylist(),
                actions.column(f"partition.{SHARD_COLUMN}").to_pylist(),
                actions.column(f"partition.{DATE_COLUMN}").to_pylist(), strict=True):
            if str(day) == date:
                files.setdefault(int(shard), []).append((int(mtime), str(path), int(rows or 0)))
        return {shard: (tuple(f"{base}/{p}" for _, p, _ in sorted(found)),
                        sum(r for _, _, r in found))
                for shard, found in sorted(files.items())}


def open_source(path: str, version: int | None = None,
                row_key: str | None = None) -> DataSource:
    """The feature table at ``path`` (latest version unless told), with its row key.

    Args:
        path: the Delta feature table, partitioned by ``shard`` and ``date``.
        version: the table version to read; None = the latest.
        row_key: the row-identity column; None = ``row_id`` if the table has one.

    Raises:
        DataNotFound: no table there (or not at that version).
        InvalidTrainingInput: a table not partitioned by shard and date, or an unknown
            ``row_key`` column.
    """
    try:
        dt = DeltaTable(path) if version is None else DeltaTable(path, version=version)
    except Exception as exc:  # deltalake raises TableNotFoundError / OSError variants
        first = (str(exc).splitlines() or [""])[0]
        raise DataNotFound(f"no feature table at {path!r} ({first})") from exc
    parts = set(dt.metadata().partition_columns)
    if not {SHARD_COLUMN, DATE_COLUMN} <= parts:
        raise InvalidTrainingInput(f"feature table {path!r} is partitioned by {sorted(parts)}, "
                                   f"not by {SHARD_COLUMN} and {DATE_COLUMN}")
    schema = pa.schema(dt.schema())
    if row_key is not None and row_key not in schema.names:
        raise InvalidTrainingInput(f"feature table {path!r} has no column {row_key!r} "
                                   "(--row-key)")
    if row_key is None and ROW_ID_COLUMN in schema.names:
        row_key = ROW_ID_COLUMN
    if row_key in _NOT_FEATURES:
        raise InvalidTrainingInput(f"{row_key!r} cannot be the row key")
    protocol = dt.protocol()
    return DataSource(path, dt.version(), schema, row_key,
                      direct=protocol.min_reader_version <= 1, opened=dt)


@dataclass(frozen=True)
class ModelPair:
    """The versions one tenant is scored with."""

    tenant_id: str
    production: ModelVersion | None
    shadow: ModelVersion | None = None


@dataclass(frozen=True)
class ScoreBucket:
    """A unit of work: part ``part`` of ``parts`` of one shard's rows of the day."""

    shard: int
    part: int
    parts: int
    files: tuple[str, ...]
    est_rows: int
    models: tuple[ModelPair, ...]


def model_pairs(reg: Registry, shadow: bool) -> dict[str, ModelPair]:
    """Every registry tenant's production version (and shadow version when asked)."""
    snap = reg.snapshot()
    pairs = {}
    for tenant_id in snap.tenants():
        prod_v = snap.alias_version(tenant_id, Alias.PRODUCTION)
        shadow_v = snap.alias_version(tenant_id, Alias.SHADOW) if shadow else None
        pairs[tenant_id] = ModelPair(
            tenant_id, snap.version(tenant_id, prod_v) if prod_v is not None else None,
            snap.version(tenant_id, shadow_v) if shadow_v is not None else None)
    return pairs


def plan_buckets(files: Mapping[int, tuple[tuple[str, ...], int]],
                 pairs: Mapping[str, ModelPair], num_shards: int, parts: int,
                 done: Iterable[tuple[int, int]] = ()) -> list[ScoreBucket]:
    """One bucket per (shard, part) with rows that day and not ``done``, biggest first.

    Args:
        files: per shard, its files of the day and their rows (``DataSource.shard_files``).
        pairs: tenant -> versions (``model_pairs``).
        num_shards: the registry's shard count.
        parts: buckets per shard.
        done: (shard, part) of buckets a killed run of the same id already finished.

    Returns:
        The buckets to run.
    """
    from registry import shard_of

    finished = set(done)
    by_bucket: dict[tuple[int, int], list[ModelPair]] = {}
    for tenant_id, pair in sorted(pairs.items()):
        key = (shard_of(tenant_id, num_shards), bucket_part(tenant_id, parts))
        by_bucket.setdefault(key, []).append(pair)
    buckets = [ScoreBucket(shard, part, parts, found, rows // parts,
                           tuple(by_bucket.get((shard, part), ())))
               for shard, (found, rows) in files.items() if rows > 0
               for part in range(parts) if (shard, part) not in finished]
    return sorted(buckets, key=lambda b: (-b.est_rows, b.shard, b.part))


def in_blocks(buckets: list[ScoreBucket], blocks: int) -> list[ScoreBucket]:
    """``buckets`` reordered so that cutting the list into ``blocks`` contiguous slices as
    Ray Data's ``from_items`` does (the first ``len % blocks`` slices one item longer)
    gives every slice about the same rows: biggest first, each bucket to the slice with
    the fewest rows that still has room."""
    size, extra = divmod(len(buckets), blocks)
    groups: list[list[ScoreBucket]] = [[] for _ in range(blocks)]
    rows = [0] * blocks
    for bucket in sorted(buckets, key=lambda b: (-b.est_rows, b.shard, b.part)):
        i = min((i for i in range(blocks) if len(groups[i]) < size + (i < extra)),
                key=lambda i: rows[i])
        groups[i].append(bucket)
        rows[i] += bucket.est_rows
    return [b for group in groups for b in group]
