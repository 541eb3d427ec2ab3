"""The predictions table: a Delta table partitioned by date and shard, one commit per run.

Bucket tasks write their Parquet files straight into the table's directory, where they
stay invisible (Delta reads only files its log adds), and then a small manifest under
``_tenantry_score/<run_id>/``. The driver adds every bucket's file in ONE commit that
carries the Delta application transaction ``tenantry-score-<run_id>`` and the run's
report, so:

- re-running a published run id commits nothing (the transaction is already there);
- a run killed before its commit leaves nothing visible; re-running the same id skips the
  buckets whose manifests are complete and publishes every bucket exactly once;
- two processes committing the same run id at once: Delta refuses the second
  ("concurrent transaction"), which then reports the run as already published.

Files of a run that is never resumed are not in the log: ``vacuum`` removes them.

``score`` is a probability (binary) or a value (regression). A table that holds (or is
about to hold) multi-class models' scores has two more columns, ``scores`` and
``shadow_scores`` (list<float64>: the K class probabilities, class 0 first; ``score``
is null on those rows); tables without multi-class tenants keep the original columns.
"""

from __future__ import annotations

import json
import os
import posixpath
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, Schema, Transaction
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions

from registry.errors import Conflict, RegistryConflict

__all__ = ["PARTITION_COLUMNS", "REPORT_KEY", "STAGING_DIR", "OutputTable", "StagedFile",
           "output_schema", "score_app_id"]

PARTITION_COLUMNS = ("date", "shard")
STAGING_DIR = "_tenantry_score"  # '_' prefix: Delta's vacuum leaves it alone
REPORT_KEY = "tenantry.score"  # commit metadata key holding the run's report
_TS = pa.timestamp("us", tz="UTC")


def score_app_id(run_id: str) -> str:
    """The Delta application-transaction id that marks ``run_id`` as published."""
    return f"tenantry-score-{run_id}"


def output_schema(key: pa.Field, class_scores: bool = False) -> pa.Schema:
    """The table's columns; ``key`` is the row identity (``row_index`` or the table's own);
    ``class_scores`` adds the multi-class ``scores`` and ``shadow_scores`` lists."""
    classes = [pa.field("scores", pa.list_(pa.float64())),
               pa.field("shadow_scores", pa.list_(pa.float64()))] if class_scores else []
    return pa.schema([
        pa.field("tenant_id", pa.string()), key, pa.field("version", pa.int64()),
        pa.field("score", pa.float64()), pa.field("shadow_version", pa.int64()),
        pa.field("shadow_score", pa.float64()), *classes, pa.field("run_id", pa.string()),
        pa.field("scored_at", _TS), pa.field("date", pa.string()),
        pa.field("shard", pa.int32()),
    ])


@dataclass(frozen=True)
class StagedFile:
    """One written (not yet committed) data file."""

    path: str  # relative to the table root
    size: int
    rows: int
    date: str
    shard: int
    stats: str  # Delta file statistics (JSON)
    modification_time: int  # ms since the epoch

    def action(self) -> AddAction:
        """The Delta ``add`` action of this file."""
        return AddAction(self.path, self.size, {"date": self.date, "shard": str(self.shard)},
                         self.modification_time, True, self.stats)


class OutputTable:
    """The predictions table at ``path`` (a local path or object-store URI)."""

    def __init__(self, path: str, key: pa.Field, class_scores: bool = False) -> None:
        self.path = path
        self.class_scores = class_scores
        self.schema = output_schema(key, class_scores)
        self.file_schema = pa.schema([f for f in self.schema if f.name not in PARTITION_COLUMNS])
        local = "://" not in path
        self._fs, root = pafs.FileSystem.from_uri(os.path.abspath(path) if local else path)
        self._root = root.rstrip("/")
        self._local = local

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "key": self.schema.field(1),
                "class_scores": self.class_scores}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["key"],  # type: ignore[misc]  # rebuild fs handle
                      state.get("class_scores", False))

    # -- the Delta table ------------------------------------------------------------------
    def delta(self) -> DeltaTable | None:
        """The table, or None when nothing was ever published there."""
        return DeltaTable(self.path) if DeltaTable.is_deltatable(self.path) else None

    def has_class_scores(self) -> bool:
        """Whether the published table already has the multi-class ``scores`` column."""
        dt = self.delta()
        return dt is not None and "scores" in pa.schema(dt.schema()).names

    def check_compatible(self) -> None:
        """Refuse an existing table whose columns differ from this run's.

        Raises:
            Conflict: e.g. it was written from a feature table with another row key.
        """
        dt = self.delta()
        if dt is None:
            return
        have = pa.schema(dt.schema())
        mine = [(f.name, f.type) for f in self.schema]
        theirs = [(f.name, f.type) for f in have]
        if sorted(mine, key=str) != sorted(theirs, key=str):
            raise Conflict(f"output table {self.path!r} has columns {have.names}; this run "
                           f"writes {self.schema.names}: use another --out")

    def published(self, run_id: str) -> dict[str, Any] | None:
        """The stored report of ``run_id`` if it is published (``{}`` if none stored)."""
        dt = self.delta()
        if dt is None or dt.transaction_version(score_app_id(run_id)) is None:
            return None
        return _find_report(dt, run_id, None) or {}

    def commit(self, run_id: str, files: Iterable[StagedFile],
               report: dict[str, Any]) -> int | None:
        """Add ``files`` in one commit marked with the run id; None if already published.

        Raises:
            RegistryConflict: other writers kept winning the commit race.
        """
        actions: list[AddAction | RemoveAction] = [f.action() for f in files]
        props = CommitProperties(app_transactions=[Transaction(score_app_id(run_id), 1)],
                                 max_commit_retries=20,
                                 custom_metadata={REPORT_KEY: json.dumps(report, default=str)})
        try:
            dt = self.delta()
            if dt is None:
                try:
                    create_table_with_add_actions(
                        self.path, Schema.from_arrow(self.schema),
                        [a for a in actions if isinstance(a, AddAction)], mode="error",
                        partition_by=list(PARTITION_COLUMNS), commit_properties=props)
                    return 0
                except DeltaError:
                    dt = self.delta()  # created meanwhile: append below
                    if dt is None:
                        raise
            if dt.transaction_version(score_app_id(run_id)) is not None:
                return None
            dt.create_write_transaction(actions, "append", self.schema,
                                        partition_by=list(PARTITION_COLUMNS),
                                        commit_properties=props)
            found = _find_report(DeltaTable(self.path), run_id, 50)
            return int(found["table_version"]) if found else -1
        except CommitFailedError as exc:
            dt = self.delta()
            if dt is not None and dt.transaction_version(score_app_id(run_id)) is not None:
                return None  # the same run id was committed by another process first
            raise RegistryConflict(f"could not commit to {self.path!r}: {exc}") from exc

    # -- staging ----------------------------------------------------------------------------
    def _full(self, rel: str) -> str:
        return f"{self._root}/{rel}"

    def write_file(self, run_id: str, date: str, shard: int, part: int,
                   rows: pa.Table) -> StagedFile:
        """Write one bucket's rows (file columns only) as a new, uncommitted data file."""
        tag = uuid.uuid4().hex[:12]  # unique per attempt: a retried task never overwrites
        rel = f"date={date}/shard={shard}/part-{_safe(run_id)}-p{part:03d}-{tag}.parquet"
        self._fs.create_dir(posixpath.dirname(self._full(rel)), recursive=True)
        table = rows.select(self.file_schema.names).cast(self.file_schema)
        with self._fs.open_output_stream(self._full(rel)) as out:
            pq.write_table(table, out, compression="zstd")
        size = self._fs.get_file_info(self._full(rel)).size or 0
        return StagedFile(rel, int(size), table.num_rows, date, shard, _stats(table),
                          int(time.time() * 1000))

    def _staging(self, run_id: str) -> str:
        return self._full(f"{STAGING_DIR}/{run_id}")

    def _write_json(self, full: str, doc: dict[str, Any]) -> None:
        data = json.dumps(doc, default=str).encode()
        self._fs.create_dir(posixpath.dirname(full), recursive=True)
        if not self._local:  # one PUT is atomic on an object store
            with self._fs.open_output_stream(full) as out:
                out.write(data)
            return
        tmp = f"{full}.{uuid.uuid4().hex[:8]}.tmp"
        with self._fs.open_output_stream(tmp) as out:
            out.write(data)
        self._fs.move(tmp, full)  # rename: readers see the whole manifest or none

    def _read_json(self, full: str) -> dict[str, Any] | None:
        try:
            with self._fs.open_input_stream(full) as src:
                return dict(json.loads(src.read()))
        except (FileNotFoundError, ValueError):
            return None

    def write_manifest(self, run_id: str, shard: int, part: int, doc: dict[str, Any]) -> None:
        """Record a finished bucket (after its file is complete)."""
        self._write_json(f"{self._staging(run_id)}/bucket-{shard:05d}-{part:03d}.json", doc)

    def manifests(self, run_id: str) -> dict[tuple[int, int], dict[str, Any]]:
        """Finished buckets of an unpublished run, whose data files are all still there."""
        selector = pafs.FileSelector(self._staging(run_id), allow_not_found=True)
        found: dict[tuple[int, int], dict[str, Any]] = {}
        for info in self._fs.get_file_info(selector):
            name = posixpath.basename(info.path)
            if not (name.startswith("bucket-") and name.endswith(".json")):
                continue
            doc = self._read_json(info.path)
            file = (doc or {}).get("file")
            if doc is None or (file and self._fs.get_file_info(
                    self._full(file["path"])).size != file["size"]):
                continue  # unreadable, or its data file is gone: run the bucket again
            found[(int(doc["shard"]), int(doc["part"]))] = doc
        return found

    def run_record(self, run_id: str) -> dict[str, Any] | None:
        """The parameters an unpublished attempt of ``run_id`` started with, if any."""
        return self._read_json(f"{self._staging(run_id)}/run.json")

    def record_run(self, run_id: str, params: dict[str, Any]) -> None:
        """Record the parameters of a run's first attempt (a resumed run must match)."""
        self._write_json(f"{self._staging(run_id)}/run.json", params)

    def clean_staging(self, run_id: str) -> None:
        """Remove a published run's manifests (best effort)."""
        try:
            self._fs.delete_dir(self._staging(run_id))
        except (FileNotFoundError, OSError):
            pass


def _find_report(dt: DeltaTable, run_id: str, limit: int | None) -> dict[str, Any] | None:
    """The report stored with the commit of ``run_id`` (newest commits first)."""
    for commit in dt.history(limit):
        raw = commit.get(REPORT_KEY)
        if raw:
            doc = json.loads(raw)
            if doc.get("run_id") == run_id:
                return dict(doc, table_version=commit.get("version"))
    return None


def staged_from_json(doc: dict[str, Any]) -> StagedFile:
    """Inverse of ``dataclasses.asdict(StagedFile)``."""
    return StagedFile(**doc)


def staged_to_json(f: StagedFile) -> dict[str, Any]:
    """A manifest's ``file`` entry."""
    return asdict(f)


def _safe(run_id: str) -> str:
    return run_id.replace(":", "_")


def _stats(table: pa.Table) -> str:
    """Delta file statistics: row count, and null counts / min / max of simple columns."""
    mins, maxs, nulls = {}, {}, {}
    for name in table.column_names:
        col = table.column(name)
        nulls[name] = col.null_count
        if col.null_count == len(col) or not (pa.types.is_integer(col.type)
                                              or pa.types.is_floating(col.type)
                                              or pa.types.is_string(col.type)):
            continue
        bounds = pc.min_max(col).as_py()
        if bounds["min"] is None or bounds["min"] != bounds["min"]:  # NaN: skip
            continue
        mins[name], maxs[name] = bounds["min"], bounds["max"]
    return json.dumps({"numRecords": table.num_rows, "minValues": mins, "maxValues": maxs,
                       "nullCount": nulls})
