"""The Delta Lake index: ``models``, ``aliases``, ``runs`` and ``profiles`` tables under
``<root>/index``.

Every table has change data feed on, so readers can follow new rows incrementally from
the Delta log. ``aliases`` rows also carry the table version they were committed in
(``commit_version``, written by :meth:`DeltaIndex.append_sequenced`), so a reader that
loads the current files (no change feed) orders alias events by commit, exactly as one
following the change feed does -- never by a writer's clock. Publishing is idempotent per
run id through Delta application transactions (``txn`` actions): a table that already
carries ``tenantry-run-<id>`` is never appended for that run again. Each table is a
:class:`registry.delta.DeltaTableHandle` (reads through DataFusion).

``profiles`` holds each version's reference profile for drift monitoring, one row per
(tenant, version, feature) plus one ``kind = 'score'`` row for its holdout scores; a
registry made before it existed gains the table on its first publish with profiles.
"""

from __future__ import annotations

import posixpath
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError

from registry.delta import DeltaTableHandle, to_arrow
from registry.errors import RegistryConflict, RegistryError, RegistryNotFound
from registry.types import BinnedDistribution, ModelProfile, StagedArtifact

__all__ = ["AUDIT_COLUMNS", "TABLES", "DeltaIndex", "RowsAt", "profile_rows",
           "profiles_from_rows", "run_app_id", "table_schema"]

_TS = pa.timestamp("us", tz="UTC")
_SEQUENCED_ATTEMPTS = 100

RowsAt = Callable[[int], pa.Table]
"""Builds the rows to commit given the table version the commit will have."""

TABLES: dict[str, pa.Schema] = {
    "models": pa.schema([
        ("tenant_id", pa.string()),
        ("shard", pa.int32()),
        ("version", pa.int64()),
        ("artifact_uri", pa.string()),
        ("sha256", pa.string()),
        ("size_bytes", pa.int64()),
        ("feature_names", pa.list_(pa.string())),
        ("auc", pa.float64()),
        ("logloss", pa.float64()),
        ("n_train", pa.int64()),
        ("n_holdout", pa.int64()),
        ("base_rate", pa.float64()),
        ("metrics_json", pa.string()),
        ("params_json", pa.string()),
        ("data_date", pa.string()),
        ("run_id", pa.string()),
        ("created_at", _TS),
        # Added with training specs; rows written before have nulls (= binary, all floats).
        ("objective", pa.string()),
        ("num_class", pa.int64()),
        ("feature_types", pa.list_(pa.string())),
        # The forest compiler version that checked the artifact at publish time; added
        # later (tables gain it on their next append), so older rows are null = unchecked.
        ("forest_check", pa.string()),
    ]),
    "aliases": pa.schema([
        ("tenant_id", pa.string()),
        ("shard", pa.int32()),
        ("alias", pa.string()),
        ("version", pa.int64()),
        ("action", pa.string()),  # set | rollback | clear
        ("reason", pa.string()),
        ("run_id", pa.string()),
        ("set_at", _TS),
        ("commit_version", pa.int64()),  # the Delta version of the commit holding the row
    ]),
    "runs": pa.schema([
        ("run_id", pa.string()),
        ("data_date", pa.string()),
        ("published", pa.int64()),
        ("alias_moves", pa.int64()),
        ("record_json", pa.string()),
        ("created_at", _TS),
    ]),
    "profiles": pa.schema([
        ("tenant_id", pa.string()),
        ("shard", pa.int32()),
        ("version", pa.int64()),
        ("kind", pa.string()),  # feature | score
        ("name", pa.string()),  # the feature's name; "score" for the score row
        ("position", pa.int32()),  # the feature's column in the model; null for the score
        ("edges", pa.list_(pa.float64())),  # inner quantile edges; bins are right-closed
        ("shares", pa.list_(pa.float64())),  # share of non-missing values per bin
        ("missing_rate", pa.float64()),
        ("count", pa.int64()),  # non-missing values behind the shares
        ("run_id", pa.string()),
        ("created_at", _TS),
    ]),
}
_PARTITIONS = {"models": ["shard"], "aliases": ["shard"], "runs": [], "profiles": ["shard"]}

AUDIT_COLUMNS: dict[str, tuple[pa.Field, ...]] = {
    "aliases": (pa.field("actor", pa.string()),),  # who: OS user (CLI), "admin" (API,
}                                                  # console); null: a run, or older rows
"""Nullable columns added to :data:`TABLES` later: a table made before them gains them on
its next sequenced write, and its older rows read them as null."""


def table_schema(name: str) -> pa.Schema:
    """The full schema new rows of table ``name`` are written with."""
    return pa.schema(list(TABLES[name]) + list(AUDIT_COLUMNS.get(name, ())))


def run_app_id(run_id: str) -> str:
    """The Delta application-transaction id that marks ``run_id`` as written."""
    return f"tenantry-run-{run_id}"


class DeltaIndex:
    """Handles on the index tables of one registry."""

    def __init__(self, index_uri: str, storage_options: Mapping[str, str]) -> None:
        self.index_uri = index_uri.rstrip("/")
        self.storage_options = dict(storage_options)
        self._handles: dict[str, DeltaTableHandle] = {}

    def uri(self, name: str) -> str:
        """URI of table ``name``."""
        return posixpath.join(self.index_uri, name)

    def _handle(self, name: str) -> DeltaTableHandle:
        handle = self._handles.get(name)
        if handle is None:
            handle = self._handles[name] = DeltaTableHandle(
                self.uri(name), table_schema(name), self.storage_options,
                _PARTITIONS[name] or None, f"the {name} index")
        return handle

    def create(self) -> None:
        """Create the tables that do not exist yet."""
        for name in TABLES:
            self.ensure(name)

    def ensure(self, name: str) -> None:
        """Create table ``name`` unless it exists (a table added to :data:`TABLES` later)."""
        self._handle(name).create({"delta.enableChangeDataFeed": "true"})

    def exists(self, name: str) -> bool:
        """Whether table ``name`` exists (registries made before it was added lack it)."""
        return self._handle(name).open(refresh=False) is not None

    def table(self, name: str, refresh: bool = True) -> DeltaTable:
        """An up-to-date handle on table ``name``."""
        dt = self._handle(name).open(refresh)
        if dt is None:
            raise RegistryNotFound(f"no registry index at {self.uri(name)}")
        return dt

    def has_run(self, name: str, run_id: str) -> bool:
        """True if ``run_id`` was already appended to table ``name``."""
        return self.table(name).transaction_version(run_app_id(run_id)) is not None

    def append(self, name: str, rows: pa.Table, run_id: str | None = None) -> int:
        """Append ``rows`` in one commit, marked with ``run_id`` when given (tables made
        before a column was added to :data:`TABLES` gain it).

        Returns:
            The table version of the commit.

        Raises:
            RegistryNotFound: no such index table.
            RegistryConflict: a concurrent commit could not be reconciled.
            RegistryError: the table could not be written.
        """
        self.table(name)
        return self._handle(name).append(
            rows, {run_app_id(run_id): 1} if run_id is not None else None,
            {"tenantry.run_id": run_id or ""}, attempts=1)

    def append_sequenced(self, name: str, rows_at: RowsAt, run_id: str | None = None) -> int:
        """Append rows that record the version of their own commit, in one commit.

        Delta's own retry would land a commit at a later version than the rows say, so
        each attempt targets exactly ``current + 1`` (no automatic retries) and a lost race
        rebuilds the rows for the next version.

        Args:
            name: the table (its schema has a ``commit_version`` column).
            rows_at: builds the rows for a given commit version.
            run_id: marks the commit (application transaction) like :meth:`append`; a run
                already marked is not appended again.

        Returns:
            The table version of the commit.

        Raises:
            RegistryConflict: other writers won the race every time.
            RegistryError: the table could not be written.
        """
        schema = table_schema(name)
        for attempt in range(_SEQUENCED_ATTEMPTS):
            dt = self.table(name)
            if run_id is not None and dt.transaction_version(run_app_id(run_id)) is not None:
                return dt.version()
            target = dt.version() + 1
            txns = [Transaction(run_app_id(run_id), 1)] if run_id is not None else None
            props = CommitProperties(app_transactions=txns, max_commit_retries=0,
                                     custom_metadata={"tenantry.run_id": run_id or ""})
            # Tables made before a column existed (commit_version, actor) gain it on the
            # first sequenced write; their older rows read it as null.
            have = {f.name for f in dt.schema().fields}
            merge = any(f.name not in have for f in schema)
            try:
                write_deltalake(dt, rows_at(target).cast(schema), mode="append",
                                commit_properties=props, schema_mode="merge" if merge else None)
            except CommitFailedError:
                time.sleep(random.uniform(0, min(0.2, 0.002 * 2 ** attempt)))
                continue
            except (DeltaError, OSError) as exc:  # OSError: e.g. no space left on the device
                raise RegistryError(f"could not write the {name} index: {exc}") from exc
            if dt.version() != target:  # cannot happen without retries; never mis-order
                raise RegistryError(f"{name} commit landed at version {dt.version()}, "
                                    f"not {target}")
            return target
        raise RegistryConflict(f"concurrent updates of the {name} index kept winning "
                               f"({_SEQUENCED_ATTEMPTS} attempts)")

    def query(self, name: str, where: str | None = None,
              columns: str = "*", refresh: bool = True) -> pa.Table:
        """Rows of table ``name`` matching the SQL predicate ``where``."""
        self.table(name, refresh=refresh)
        return self._handle(name).query(where, columns, refresh=False)

    def changes_since(self, name: str, version: int) -> tuple[pa.Table, int]:
        """Rows added to ``name`` after table version ``version`` (CDF), and the new version."""
        dt = self.table(name)
        new_version = dt.version()
        if new_version <= version:
            return table_schema(name).empty_table(), version
        if version < 0:
            # First load: read the current files, not the whole log (old files may be vacuumed).
            return self.query(name, refresh=False), new_version
        cdf = to_arrow(dt.load_cdf(starting_version=version + 1, ending_version=new_version))
        if "_change_type" in cdf.column_names:
            kinds = cdf.column("_change_type").to_pylist()
            mask = pa.array([k in ("insert", "update_postimage") for k in kinds], pa.bool_())
            cdf = cdf.filter(mask)
        return cdf, new_version


def profile_rows(versions: Sequence[tuple[StagedArtifact, ModelProfile]], run_id: str,
                 created_at: Any) -> pa.Table:
    """``profiles`` rows of a run's versions: one per feature plus one for the score."""
    cols: dict[str, list[Any]] = {f.name: [] for f in TABLES["profiles"]}
    for art, profile in versions:
        parts: list[tuple[str, int | None, BinnedDistribution]] = [
            ("feature", i, d) for i, d in enumerate(profile.features)]
        if profile.score is not None:
            parts.append(("score", None, profile.score))
        for kind, position, d in parts:
            for key, value in (("tenant_id", art.tenant_id), ("shard", art.shard),
                               ("version", art.version), ("kind", kind), ("name", d.name),
                               ("position", position), ("edges", list(d.edges)),
                               ("shares", list(d.shares)), ("missing_rate", d.missing_rate),
                               ("count", d.count), ("run_id", run_id),
                               ("created_at", created_at)):
                cols[key].append(value)
    return pa.table(cols, schema=TABLES["profiles"])


def profiles_from_rows(rows: pa.Table) -> dict[tuple[str, int], ModelProfile]:
    """Profiles by ``(tenant_id, version)`` from ``profiles`` rows."""
    parts: dict[tuple[str, int], dict[str, Any]] = {}
    for r in rows.to_pylist():
        entry = parts.setdefault((r["tenant_id"], int(r["version"])),
                                 {"features": {}, "score": None})
        d = BinnedDistribution(r["name"], tuple(r["edges"] or ()), tuple(r["shares"] or ()),
                               float(r["missing_rate"] or 0.0), int(r["count"] or 0))
        if r["kind"] == "score":
            entry["score"] = d
        else:
            entry["features"][int(r["position"])] = d
    return {key: ModelProfile(tuple(e["features"][i] for i in sorted(e["features"])), e["score"])
            for key, e in parts.items()}
