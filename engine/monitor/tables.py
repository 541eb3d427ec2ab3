"""The monitoring Delta tables below the registry root, and how to write and read them.

::

    <root>/predictions     the sampled prediction log, one row per logged row, by date
    <root>/monitoring      one row per tenant per monitoring run, by date (the console's
                           tenant page reads it: engine/console/tables.py)
    <root>/monitoring.prom the monitor job's Prometheus text file (node-exporter textfile)

Each is a :class:`registry.delta.DeltaTableHandle` (reads through DataFusion).
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa
from deltalake import DeltaTable

from registry import Registry
from registry.delta import DeltaTableHandle
from registry.errors import RegistryError

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
        self._table = DeltaTableHandle(self.uri, SCHEMAS[name], self.storage_options,
                                       _PARTITIONS[name], name)

    @classmethod
    def for_registry(cls, registry: Registry, name: str) -> DeltaAppender:
        """Table ``name`` below ``registry``'s root."""
        return cls(registry.store.uri(name), name, registry.storage_options)

    def handle(self) -> DeltaTable | None:
        """An up-to-date handle, or None while nothing was written."""
        return self._table.open()

    def app_version(self, app_id: str) -> int | None:
        """The version recorded for application transaction ``app_id`` (None: never)."""
        return self._table.transaction_version(app_id)

    def append(self, rows: pa.Table, app_id: str | None = None) -> None:
        """Append ``rows`` in one commit, marked with ``app_id`` when given.

        Raises:
            RegistryConflict: concurrent commits could not be reconciled.
            RegistryError: the table could not be written.
        """
        self._table.append(rows, {app_id: 1} if app_id else None)

    def sql(self, statement: str) -> pa.Table:
        """``statement`` over this table as ``t`` (the empty schema while it does not exist).

        Raises:
            RegistryError: the query failed.
        """
        try:
            return self._table.sql(statement)
        except Exception as exc:  # DataFusion errors carry no common base class
            raise RegistryError(f"cannot query {self.name}: {exc}") from exc
