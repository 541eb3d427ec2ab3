"""One Delta Lake table, as every tenantry table is used: opened lazily and kept current,
created with its schema and partitioning (or on the first append), appended in one commit
with retries on concurrent commits and optional application transactions, and read
through DataFusion's ``QueryBuilder`` (``DeltaTable.to_pyarrow_*`` aborts the process at
exit with this deltalake build).

The registry index (:mod:`registry.index`), the shadow tables, the monitoring tables and
the console's reads all go through :class:`DeltaTableHandle`; each keeps its own schema,
partitioning and error wording.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, QueryBuilder, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from registry.errors import RegistryConflict, RegistryError

__all__ = ["DeltaTableHandle", "sql_str", "to_arrow"]

COMMIT_RETRIES = 50  # Delta's own retries of a commit that lost a race it can reconcile


def sql_str(value: str) -> str:
    """Quote ``value`` as a SQL string literal (ids are validated, this is belt and braces)."""
    return "'" + value.replace("'", "''") + "'"


def to_arrow(stream: Any) -> pa.Table:
    """Materialise an Arrow C stream (DataFusion / CDF result) as a pyarrow Table."""
    reader = stream if isinstance(stream, pa.RecordBatchReader) \
        else pa.RecordBatchReader.from_stream(stream)
    table = reader.read_all()
    # DataFusion answers with string_view; plain strings keep downstream code simple.
    fields = []
    for f in table.schema:
        t = f.type
        if pa.types.is_string_view(t):
            t = pa.string()
        elif pa.types.is_list(t) and pa.types.is_string_view(t.value_type):
            t = pa.list_(pa.string())
        fields.append(pa.field(f.name, t))
    return table.cast(pa.schema(fields))


class DeltaTableHandle:
    """The Delta table at ``uri`` with rows of ``schema``.

    Args:
        uri: the table's path or object-store URI.
        schema: the schema rows are cast to on append (and an absent table reads as).
        storage_options: object-store options (none for a local path).
        partition_by: partition columns, used when the table is created.
        label: how errors name the table (``the models index``, ``shadow/log``).
    """

    def __init__(self, uri: str, schema: pa.Schema,
                 storage_options: Mapping[str, str] | None = None,
                 partition_by: Sequence[str] | None = None, label: str | None = None) -> None:
        self.uri = uri.rstrip("/")
        self.schema = schema
        self.storage_options = dict(storage_options or {})
        self.partition_by = list(partition_by) if partition_by else None
        self.label = label or self.uri
        self._dt: DeltaTable | None = None

    def __getstate__(self) -> dict[str, Any]:
        # A DeltaTable handle does not pickle (Ray tasks): a copy opens its own.
        return {**self.__dict__, "_dt": None}

    def open(self, refresh: bool = True) -> DeltaTable | None:
        """A handle on the table, brought up to date unless ``refresh`` is False; None while
        the table does not exist."""
        try:
            if self._dt is None:
                self._dt = DeltaTable(self.uri, storage_options=self.storage_options)
            elif refresh:
                self._dt.update_incremental()
        except TableNotFoundError:
            return None
        return self._dt

    def create(self, configuration: Mapping[str, str] | None = None) -> None:
        """Create the table with its schema and partitioning unless it exists."""
        DeltaTable.create(self.uri, self.schema, mode="ignore", partition_by=self.partition_by,
                          configuration=dict(configuration) if configuration else None,
                          storage_options=self.storage_options)
        self._dt = None

    def version(self) -> int:
        """The table's current version (-1 while it does not exist)."""
        dt = self.open()
        return -1 if dt is None else dt.version()

    def transaction_version(self, app_id: str) -> int | None:
        """The version recorded for application transaction ``app_id`` (None: never)."""
        dt = self.open()
        return None if dt is None else dt.transaction_version(app_id)

    def append(self, rows: pa.Table, transactions: Mapping[str, int] | None = None,
               metadata: Mapping[str, str] | None = None, attempts: int = 3) -> int:
        """Append ``rows`` (cast to the schema) in one commit; the table is created by the
        first append. Columns the schema gained since the table was made are merged in
        (older rows read them as null).

        Args:
            rows: the rows.
            transactions: application transactions (id -> version) in the same commit.
            metadata: custom commit metadata.
            attempts: tries; a lost creation race or a stale handle is tried again.

        Returns:
            The table version of the commit.

        Raises:
            RegistryConflict: concurrent commits could not be reconciled.
            RegistryError: the table could not be written.
        """
        txns = [Transaction(k, v) for k, v in (transactions or {}).items()]
        props = CommitProperties(max_commit_retries=COMMIT_RETRIES,
                                 app_transactions=txns or None,
                                 custom_metadata=dict(metadata) if metadata else None)
        rows = rows.cast(self.schema)
        last: Exception | None = None
        for _ in range(max(1, attempts)):
            dt = self.open()
            try:
                if dt is None:
                    write_deltalake(self.uri, rows, mode="append", partition_by=self.partition_by,
                                    commit_properties=props, storage_options=self.storage_options)
                    return self.version()
                have = {f.name for f in dt.schema().fields}
                merge = any(name not in have for name in self.schema.names)
                write_deltalake(dt, rows, mode="append", commit_properties=props,
                                schema_mode="merge" if merge else None)
                return dt.version()
            except CommitFailedError as exc:
                last = exc
            except (DeltaError, OSError) as exc:  # OSError: e.g. no space left on the device
                last = exc
                self._dt = None
        if isinstance(last, CommitFailedError):
            raise RegistryConflict(f"concurrent update of {self.label}: {last}") from last
        raise RegistryError(f"could not write {self.label}: {last}") from last

    def sql(self, statement: str, refresh: bool = True) -> pa.Table:
        """The result of the DataFusion ``statement`` over this table as ``t`` (the schema's
        empty table while the table does not exist)."""
        dt = self.open(refresh)
        if dt is None:
            return self.schema.empty_table()
        return to_arrow(QueryBuilder().register("t", dt).execute(statement))

    def query(self, where: str | None = None, columns: str = "*",
              refresh: bool = True) -> pa.Table:
        """Rows matching the SQL predicate ``where`` (every row without it)."""
        return self.sql(f"SELECT {columns} FROM t" + (f" WHERE {where}" if where else ""),
                        refresh)
