"""The three shadow-mode Delta tables below the registry root, and how to read them.

::

    <root>/shadow/config   append-only settings: the latest row per tenant wins
    <root>/shadow/log      one row per compared prediction, partitioned by date
    <root>/shadow/stats    per-flush counts of dropped / failed mirrors, partitioned by date

Each is a :class:`registry.delta.DeltaTableHandle` (reads through DataFusion).
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa
from deltalake import DeltaTable

from registry import Registry
from registry.delta import DeltaTableHandle

__all__ = ["CONFIG", "PAIRS", "SCHEMAS", "STATS", "ShadowTables", "app_id"]

_TS = pa.timestamp("us", tz="UTC")
CONFIG, PAIRS, STATS = "config", "log", "stats"

SCHEMAS: dict[str, pa.Schema] = {
    CONFIG: pa.schema([
        ("tenant_id", pa.string()),
        ("version", pa.int64()),  # null: the tenant's shadow alias
        ("fraction", pa.float64()),
        ("start", _TS),
        ("until", _TS),
        ("cleared", pa.bool_()),
        ("set_at", _TS),
    ]),
    PAIRS: pa.schema([
        ("date", pa.string()),
        ("ts", _TS),
        ("request_id", pa.string()),
        ("row", pa.int32()),
        ("tenant_id", pa.string()),
        ("production_version", pa.int64()),
        ("shadow_version", pa.int64()),
        ("production", pa.float64()),
        ("shadow", pa.float64()),
        ("abs_diff", pa.float64()),
        ("production_latency_ms", pa.float64()),
        ("shadow_latency_ms", pa.float64()),
        ("replica", pa.string()),
    ]),
    STATS: pa.schema([
        ("date", pa.string()),
        ("ts", _TS),
        ("tenant_id", pa.string()),
        ("shadow_version", pa.int64()),
        ("outcome", pa.string()),  # dropped | error | timeout
        ("count", pa.int64()),
        ("replica", pa.string()),
    ]),
}
_PARTITIONS: dict[str, list[str] | None] = {CONFIG: None, PAIRS: ["date"], STATS: ["date"]}


def app_id(spool_id: str) -> str:
    """The Delta app-transaction id recording how far a spool was committed."""
    return f"tenantry-shadow-{spool_id}"


class ShadowTables:
    """Append to and query the shadow tables of one registry."""

    def __init__(self, base_uri: str, storage_options: Mapping[str, str]) -> None:
        self.base_uri = base_uri.rstrip("/")
        self.storage_options = dict(storage_options)
        self._tables = {name: DeltaTableHandle(self.uri(name), schema, self.storage_options,
                                               _PARTITIONS[name], f"shadow/{name}")
                        for name, schema in SCHEMAS.items()}

    @classmethod
    def for_registry(cls, registry: Registry) -> ShadowTables:
        """The shadow tables that live below ``registry``'s root."""
        return cls(registry.store.uri("shadow"), registry.storage_options)

    def uri(self, name: str) -> str:
        """URI of table ``name``."""
        return f"{self.base_uri}/{name}"

    def handle(self, name: str) -> DeltaTable | None:
        """An up-to-date handle on ``name``, or None while nothing was written to it."""
        return self._tables[name].open()

    def append(self, name: str, rows: pa.Table,
               transactions: Mapping[str, int] | None = None) -> None:
        """Append ``rows`` to ``name`` in one commit (creating the table on first write).

        ``transactions`` (spool id -> highest record seq) are recorded in the same commit
        as Delta app transactions (see :meth:`engine.shadow.log.PairLog.high_water`).

        Raises:
            RegistryConflict: concurrent commits could not be reconciled.
            RegistryError: the table could not be written.
        """
        self._tables[name].append(
            rows, {app_id(k): v for k, v in (transactions or {}).items()} or None)

    def query(self, name: str, where: str | None = None, columns: str = "*") -> pa.Table:
        """Rows of ``name`` matching the SQL predicate ``where`` (empty if no table yet)."""
        return self._tables[name].query(where, columns)

    def sql(self, name: str, statement: str) -> pa.Table:
        """The result of ``statement``, a DataFusion query over table ``name`` as ``t``
        (``name``'s empty schema if the table does not exist yet)."""
        return self._tables[name].sql(statement)

    def version(self, name: str) -> int:
        """The table's current version (-1 while it does not exist)."""
        return self._tables[name].version()
