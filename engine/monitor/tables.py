"""The monitoring Delta tables below the registry root, and how to write and read them.

::

    <root>/predictions     the sampled prediction log, one row per logged row, by date
    <root>/monitoring      one row per tenant per monitoring run, by date (the console's
                           tenant page reads it: engine/console/tables.py)
    <root>/monitoring.prom the monitor job's Prometheus text file (node-exporter textfile)

Reads go through DataFusion (``QueryBuilder``), as the shadow tables' do.
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, QueryBuilder, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from registry import Registry
from registry.errors import RegistryConflict, RegistryError
from registry.index import to_arrow

__all__ = ["FEATURE_DRIFT", "MONITORING", "PREDICTIONS", "PROM_FILE", "SCHEMAS", "DeltaAppender",
           "monitor_app_id"]

_TS = pa.timestamp("us", tz="UTC")
PREDICTIONS, MONITORING = "predictions", "monitoring"
PROM_FILE = "monitoring.prom"

FEATURE_DRIFT = pa.struct([("name", pa.string()), ("psi", pa.float64()),
                           ("missing_rate", pa.float64()),
                           ("reference_missing_rate", pa.float64())])

SCHEMAS: dict[str, pa.Schema] = {
    PREDICTIONS: pa.schema([
        ("date", pa.string()),  # UTC day of ts
        ("ts", _TS),
        ("tenant_id", pa.string()),
        ("version", pa.int64()),  # the production version that answered
        ("request_id", pa.string()),
        ("row", pa.int32()),  # the row's index in its request
        ("score", pa.float64()),  # see training.profile.score_values
        ("features", pa.list_(pa.float64())),  # in the version's feature order; null = missing
        ("sampled", pa.string()),  # first (of the tenant's hour) | fraction
        ("replica", pa.string()),
    ]),
    MONITORING: pa.schema([
        ("date", pa.string()),  # the day judged
        ("run_id", pa.string()),
        ("tenant_id", pa.string()),
        ("version", pa.int64()),  # the version judged (null: none had a profile)
        ("status", pa.string()),  # judged | too_few_rows | no_profile
        ("rows", pa.int64()),  # rows of that version on the day
        ("score_psi", pa.float64()),
        ("score_psi_bound", pa.float64()),  # what sampling noise alone could reach
        ("flagged", pa.bool_()),
        ("reasons", pa.list_(pa.string())),
        ("features", pa.list_(FEATURE_DRIFT)),
        ("volume", pa.int64()),  # every logged row of the tenant on the day
        ("baseline_volume", pa.float64()),  # median of the previous days'
        ("volume_ratio", pa.float64()),
        ("created_at", _TS),
    ]),
}
_PARTITIONS: dict[str, list[str]] = {PREDICTIONS: ["date"], MONITORING: ["date"]}


def monitor_app_id(run_id: str) -> str:
    """The Delta application-transaction id marking a monitoring run as written."""
    return f"tenantry-monitor-{run_id}"


class DeltaAppender:
    """Append to and query one of the monitoring tables (created on the first write)."""

    def __init__(self, uri: str, name: str, storage_options: Mapping[str, str]) -> None:
        self.uri = uri.rstrip("/")
        self.name = name
        self.storage_options = dict(storage_options)
        self._dt: DeltaTable | None = None

    def __getstate__(self) -> dict[str, object]:
        return {"uri": self.uri, "name": self.name, "storage_options": self.storage_options}

    def __setstate__(self, state: dict[str, object]) -> None:
        # A DeltaTable handle does not pickle (Ray tasks): a copy opens its own.
        self.__dict__.update(state)
        self._dt = None

    @classmethod
    def for_registry(cls, registry: Registry, name: str) -> DeltaAppender:
        """Table ``name`` below ``registry``'s root."""
        return cls(registry.store.uri(name), name, registry.storage_options)

    def handle(self) -> DeltaTable | None:
        """An up-to-date handle, or None while nothing was written."""
        try:
            if self._dt is None:
                self._dt = DeltaTable(self.uri, storage_options=self.storage_options)
            else:
                self._dt.update_incremental()
        except TableNotFoundError:
            return None
        return self._dt

    def app_version(self, app_id: str) -> int | None:
        """The version recorded for application transaction ``app_id`` (None: never)."""
        dt = self.handle()
        return None if dt is None else dt.transaction_version(app_id)

    def append(self, rows: pa.Table, app_id: str | None = None) -> None:
        """Append ``rows`` in one commit, marked with ``app_id`` when given.

        Raises:
            RegistryConflict: concurrent commits could not be reconciled.
            RegistryError: the table could not be written.
        """
        txns = [Transaction(app_id, 1)] if app_id else None
        props = CommitProperties(max_commit_retries=50, app_transactions=txns)
        rows = rows.cast(SCHEMAS[self.name])
        last: Exception | None = None
        for _ in range(3):  # several writers may race to create the table
            dt = self.handle()
            try:
                write_deltalake(dt if dt is not None else self.uri, rows, mode="append",
                                partition_by=_PARTITIONS[self.name], commit_properties=props,
                                storage_options=None if dt is not None
                                else self.storage_options)
                return
            except CommitFailedError as exc:
                last = exc
            except DeltaError as exc:
                last = exc
                self._dt = None
        if isinstance(last, CommitFailedError):
            raise RegistryConflict(f"concurrent update of {self.name}: {last}") from last
        raise RegistryError(f"could not write {self.name}: {last}") from last

    def sql(self, statement: str) -> pa.Table:
        """``statement`` over this table as ``t`` (the empty schema while it does not exist).

        Raises:
            RegistryError: the query failed.
        """
        dt = self.handle()
        if dt is None:
            return SCHEMAS[self.name].empty_table()
        try:
            return to_arrow(QueryBuilder().register("t", dt).execute(statement))
        except Exception as exc:  # DataFusion errors carry no common base class
            raise RegistryError(f"cannot query {self.name}: {exc}") from exc
