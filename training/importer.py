"""``tenantry data import``: a CSV or Parquet file into a feature table the job reads fast.

The output is a Delta table partitioned by ``(shard, date)`` -- ``shard`` from the
registry's hash of the tenant id and shard count, ``date`` the row's UTC day -- holding the
spec's tenant, time, label and feature columns. Rows are checked against the spec
(:mod:`training.rowcheck`); bad rows are left out, counted by reason, and written with
their reason to the ``_rejects`` Delta table inside the output (``<out>/_rejects``).

Idempotent per source: both commits carry the Delta application transaction
``tenantry-import-<sha256 of the file>``, so importing the same bytes again adds nothing
(as the registry's publish does per run id). Rejects are committed first: a crash between
the two commits re-imports the rows and keeps the one rejects commit.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from registry import Registry, shard_of
from training.errors import DataNotFound, InvalidTrainingInput
from training.features import DATE_COLUMN, PARTITION_COLUMNS, SHARD_COLUMN
from training.resolve import column_kind, select_features
from training.rowcheck import (
    Verdict,
    check_label,
    check_numeric,
    check_tenant,
    check_time,
    numeric_share,
)
from training.source import is_delta
from training.spec import SpecError, TrainingSpec

__all__ = ["REJECTS", "ImportReport", "import_file", "source_sha256"]

REJECTS = "_rejects"
"""The rejects table's folder inside the output table."""
_NUMERIC_SHARE = 0.9
_EXAMPLES = 5


@dataclass(frozen=True)
class ImportReport:
    """What one import did (``tenantry data import --json``)."""

    source: str
    sha256: str
    out: str
    rows_read: int
    rows_imported: int
    rows_rejected: int
    already_imported: bool = False
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    examples: tuple[dict[str, Any], ...] = ()
    tenants: int = 0
    dates: tuple[str, ...] = ()
    columns: dict[str, str] = field(default_factory=dict)
    """Imported feature -> ``numeric`` or ``categorical``."""
    rejects_table: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON document."""
        doc = dict(self.__dict__)
        doc.update(examples=list(self.examples), dates=list(self.dates))
        return doc

    def summary_text(self) -> str:
        """A few human-readable lines."""
        if self.already_imported:
            return (f"{self.source} (sha256 {self.sha256[:12]}) was already imported into "
                    f"{self.out}; nothing added")
        lines = [(f"imported {self.rows_imported} of {self.rows_read} rows "
                 f"({self.tenants} tenants, {self.dates[0] if self.dates else '-'}.."
                 f"{self.dates[-1] if self.dates else '-'}) into {self.out}")]
        if self.rows_rejected:
            lines.append(f"rejected {self.rows_rejected} rows: " + ", ".join(
                f"{k} {v}" for k, v in self.rejected_by_reason.items())
                + f" (all in {self.rejects_table})")
            lines += [f"  row {e['row']}: {e['reason']} ({e['value']!r})" for e in self.examples]
        return "\n".join(lines)


def source_sha256(path: str) -> str:
    """The sha256 of a file's bytes (what makes an import idempotent)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_source(path: str) -> pa.Table:
    with open(path, "rb") as fh:
        parquet = fh.read(4) == b"PAR1"
    if parquet:
        return pq.read_table(path)
    header = pcsv.open_csv(path).schema.names  # every column read as text, checked later
    options = pcsv.ConvertOptions(column_types={n: pa.string() for n in header},
                                  strings_can_be_null=True)
    try:
        return pcsv.read_csv(path, convert_options=options)
    except pa.ArrowInvalid as exc:
        raise InvalidTrainingInput(f"{path}: not a readable CSV or Parquet file "
                                   f"({str(exc).splitlines()[0]})") from None


def _features(spec: TrainingSpec, schema: pa.Schema, name: str) -> list[str]:
    layout = {SHARD_COLUMN} | ({DATE_COLUMN} if spec.time_column != DATE_COLUMN else set())
    features, problems = select_features(spec, schema, layout)
    for key in ("tenant_column", "time_column", "label_column"):
        if getattr(spec, key) not in schema.names:
            problems.append(f"{key}: column {getattr(spec, key)!r} not in the source "
                            f"(it has: {', '.join(schema.names[:12])})")
    if problems:
        raise SpecError(name, problems)
    return features


def _convert(spec: TrainingSpec, table: pa.Table, features: list[str], existing: pa.Schema | None,
             spec_name: str) -> tuple[dict[str, Any], list[Verdict], dict[str, str]]:
    tenant, v_tenant = check_tenant(table.column(spec.tenant_column))
    ts, v_time = check_time(table.column(spec.time_column))
    label, v_label = check_label(table.column(spec.label_column), spec.objective,
                                 spec.num_class)
    cols: dict[str, Any] = {spec.tenant_column: tenant, spec.time_column: ts}
    verdicts, kinds = [v_tenant, *v_time, *v_label], {}
    for name in features:
        arr = table.column(name)
        kind = column_kind(arr.type)
        if existing is not None and name in existing.names:
            kind = column_kind(existing.field(name).type)
        elif kind == "categorical" and numeric_share(arr) >= _NUMERIC_SHARE:
            kind = "numeric"
        if kind is None:
            raise SpecError(spec_name, [
                f"features: column {name!r} has type {arr.type}; features are numeric or text"])
        if kind == "numeric":
            arr, verdict = check_numeric(arr, name)
            verdicts.append(verdict)
        else:
            arr = pc.cast(arr, pa.string())
        cols[name], kinds[name] = arr, kind
    cols[spec.label_column] = label
    return cols, verdicts, kinds


def _first_reason(verdicts: list[Verdict], n: int) -> tuple[np.ndarray, np.ndarray]:
    """(bad mask, index of the first failing verdict per row)."""
    stacked = np.vstack([v.bad for v in verdicts]) if verdicts else np.zeros((1, n), bool)
    bad: np.ndarray = np.asarray(stacked.any(axis=0), dtype=bool)
    return bad, np.argmax(stacked, axis=0)


def _commit(path: str, rows: pa.Table, txn: str, partition_by: list[str] | None,
            description: str | None) -> None:
    props = CommitProperties(app_transactions=[Transaction(txn, 1)],
                             custom_metadata={"tenantry.import": txn})
    write_deltalake(path, rows, mode="append", partition_by=partition_by,
                    description=description, commit_properties=props, schema_mode="merge")


def _imported(path: str, txn: str) -> bool:
    return is_delta(path) and DeltaTable(path).transaction_version(txn) is not None


def _existing(out: str, num_shards: int) -> DeltaTable | None:
    """The feature table at ``out`` if there is one; raises InvalidTrainingInput when it is
    laid out for another shard count."""
    existing = DeltaTable(out) if is_delta(out) else None
    if existing is not None:
        meta = json.loads(existing.metadata().description or "{}")
        if meta.get("num_shards") not in (None, num_shards):
            raise InvalidTrainingInput(f"{out!r} is laid out with {meta['num_shards']} shards "
                                       f"but the registry has {num_shards}")
    return existing


def _examples(verdicts: list[Verdict], first: np.ndarray, bad: np.ndarray) -> tuple[dict[str, Any], ...]:
    """The first rejected rows: their row number, reason and offending value."""
    return tuple({"row": int(i) + 1, "reason": verdicts[first[i]].reason,
                  "value": verdicts[first[i]].values[int(i)].as_py()}
                 for i in np.flatnonzero(bad)[:_EXAMPLES])


def _laid_out(rows: pa.Table, spec: TrainingSpec, num_shards: int
              ) -> tuple[pa.Table, pa.ChunkedArray, list[str]]:
    """``rows`` with the day and shard partition columns, the days, and the tenants."""
    days = pc.strftime(rows.column(spec.time_column), "%Y-%m-%d")
    tenants = rows.column(spec.tenant_column)
    unique = pc.unique(tenants).to_pylist()
    shard_by = dict(zip(unique, (shard_of(t, num_shards) for t in unique), strict=True))
    shards = pa.array([shard_by[t] for t in tenants.to_pylist()], pa.int32())
    if spec.time_column == DATE_COLUMN:
        rows = rows.drop_columns([DATE_COLUMN])  # the day partition is the time column
    return rows.append_column(DATE_COLUMN, days).append_column(SHARD_COLUMN, shards), days, \
        unique


def import_file(source: str, out: str | None, spec: TrainingSpec, registry: Registry | str,
                spec_name: str = "<spec>") -> ImportReport:
    """Import one CSV or Parquet file into the feature table ``out``.

    Args:
        source: the file.
        out: the Delta table to append to (created if absent); default the spec's table.
        spec: what the columns are (tenant, time, label, features, objective).
        registry: the registry (or its root) whose shard count lays the table out.
        spec_name: how to name the spec in errors (its file).

    Returns:
        The :class:`ImportReport`.

    Raises:
        DataNotFound: no file at ``source``.
        RegistryNotFound: no registry (``tenantry registry init`` creates one).
        SpecError: the spec's columns are not in the source, or a feature has an unusable type.
        InvalidTrainingInput: an unreadable file, or a table laid out for another shard count.
    """
    out = out or spec.table
    reg = registry if isinstance(registry, Registry) else Registry.open(registry)
    try:
        sha = source_sha256(source)
    except FileNotFoundError:
        raise DataNotFound(f"no file at {source!r}") from None
    txn, rejects_path = f"tenantry-import-{sha}", f"{out.rstrip('/')}/{REJECTS}"
    existing = _existing(out, reg.num_shards)
    if _imported(out, txn):
        return ImportReport(source, sha, out, 0, 0, 0, already_imported=True,
                            rejects_table=rejects_path)
    table = _read_source(source)
    name = f"{spec_name} (for {source})"
    features = _features(spec, table.schema, name)
    schema = pa.schema(existing.schema().to_arrow()) if existing is not None else None
    cols, verdicts, kinds = _convert(spec, table, features, schema, name)
    bad, first = _first_reason(verdicts, table.num_rows)
    reasons = Counter(verdicts[k].reason for k in first[bad])
    good = pa.array(~bad)
    rows = pa.table({k: v.filter(good) for k, v in cols.items()})
    rows, days, unique = _laid_out(rows, spec, reg.num_shards)
    if bad.any():
        rejected = {"source_sha256": [sha] * int(bad.sum()),
                    "row": pa.array(np.flatnonzero(bad) + 1, pa.int64()),
                    "reason": [verdicts[k].reason for k in first[bad]]}
        rejected.update({c: pc.cast(table.column(c), pa.string()).filter(pa.array(bad))
                         for c in [spec.tenant_column, spec.time_column, spec.label_column,
                                   *features]})
        if not _imported(rejects_path, txn):
            _commit(rejects_path, pa.table(rejected), txn, None, None)
    _commit(out, rows, txn, list(PARTITION_COLUMNS), json.dumps({
        "tenantry_feature_table": 1, "num_shards": reg.num_shards,
        "tenant_column": spec.tenant_column, "time_column": spec.time_column}))
    return ImportReport(source, sha, out, table.num_rows, rows.num_rows, int(bad.sum()),
                        rejected_by_reason=dict(sorted(reasons.items())),
                        examples=_examples(verdicts, first, bad),
                        tenants=len(unique), dates=tuple(sorted(set(days.to_pylist()))),
                        columns=kinds, rejects_table=rejects_path if bad.any() else None)
