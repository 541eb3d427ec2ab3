"""Per-tenant shadow settings and the table every replica reads them from.

A :class:`ShadowConfig` says which version shadows a tenant (None: its ``shadow`` alias,
resolved when a request is mirrored), what fraction of its requests is mirrored and the
optional window ``[start, until)`` after which shadowing stops by itself. Configs are
rows of the append-only ``shadow/config`` Delta table (latest row per tenant wins), so the
CLI and any replica can write them and every replica sees them within a refresh.

Each row also records who changed the setting and why (``actor``, ``reason``: nullable
columns merged into tables written before they existed), so the table is the audit trail of
shadow changes (:meth:`ConfigStore.history`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from engine.shadow.tables import CONFIG, SCHEMAS, ShadowTables
from registry import validate_tenant_id
from registry.delta import DeltaTableHandle, sql_str
from registry.errors import ValidationError

__all__ = ["CONFIG_SCHEMA", "ConfigChange", "ConfigStore", "ConfigWatcher", "ShadowConfig",
           "build_config", "parse_time"]

CONFIG_SCHEMA = pa.schema(list(SCHEMAS[CONFIG]) + [
    pa.field("actor", pa.string()),  # who: OS user (CLI), "admin" (admin API, console)
    pa.field("reason", pa.string()),  # why, as they said it
])
"""``shadow/config`` with its audit columns (older tables gain them on the next write)."""


def _now() -> datetime:
    return datetime.now(UTC)


def parse_time(value: str | datetime | None) -> datetime | None:
    """An aware UTC datetime from ISO 8601 text (naive times are taken as UTC).

    Raises:
        ValidationError: ``value`` is not ISO 8601.
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValidationError(f"not an ISO 8601 time: {value!r} "
                                  "(e.g. 2026-12-01T18:00:00Z)") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class ShadowConfig:
    """How one tenant is shadowed."""

    tenant_id: str
    fraction: float
    version: int | None = None
    start: datetime | None = None
    until: datetime | None = None
    set_at: datetime | None = None
    actor: str | None = None
    reason: str | None = None

    def active(self, now: datetime | None = None) -> bool:
        """True while ``now`` lies in the window and the fraction is positive."""
        now = now or _now()
        if self.fraction <= 0:
            return False
        if self.start is not None and now < self.start:
            return False
        return self.until is None or now < self.until

    def window(self) -> tuple[float, float]:
        """The window as epoch seconds (``-inf``/``inf`` when open), for the hot path."""
        return (self.start.timestamp() if self.start else float("-inf"),
                self.until.timestamp() if self.until else float("inf"))

    def to_json(self) -> dict[str, Any]:
        """JSON form used by the CLI and the HTTP routes."""
        def iso(t: datetime | None) -> str | None:
            return t.isoformat() if t else None

        return {"tenant_id": self.tenant_id, "version": self.version,
                "fraction": self.fraction, "start": iso(self.start),
                "until": iso(self.until), "set_at": iso(self.set_at),
                "active": self.active(), "actor": self.actor, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """One row of ``shadow/config``: a tenant's shadow set or cleared, by whom and why."""

    tenant_id: str
    cleared: bool
    version: int | None
    fraction: float
    start: datetime | None
    until: datetime | None
    set_at: datetime | None
    actor: str | None
    reason: str | None

    def to_json(self) -> dict[str, Any]:
        """JSON form (times as ISO 8601)."""
        def iso(t: datetime | None) -> str | None:
            return t.isoformat() if t else None

        return {"tenant_id": self.tenant_id, "cleared": self.cleared, "version": self.version,
                "fraction": self.fraction, "start": iso(self.start), "until": iso(self.until),
                "set_at": iso(self.set_at), "actor": self.actor, "reason": self.reason}


def build_config(tenant_id: str, fraction: float, version: int | None = None,
                 start: str | datetime | None = None,
                 until: str | datetime | None = None, *, actor: str | None = None,
                 reason: str | None = None) -> ShadowConfig:
    """A validated config stamped with the current time (``actor``/``reason``: the audit).

    Raises:
        InvalidTenantId: bad tenant id.
        ValidationError: fraction outside [0, 1], version < 1, bad times or an empty window.
    """
    validate_tenant_id(tenant_id)
    fraction = float(fraction)
    if not 0.0 <= fraction <= 1.0:
        raise ValidationError(f"fraction must be between 0 and 1, got {fraction}")
    if version is not None and int(version) < 1:
        raise ValidationError(f"version must be >= 1, got {version}")
    t0, t1 = parse_time(start), parse_time(until)
    if t0 is not None and t1 is not None and t1 <= t0:
        raise ValidationError("until must be later than start")
    return ShadowConfig(tenant_id, fraction, None if version is None else int(version),
                        t0, t1, _now(), actor, reason or None)


class ConfigStore:
    """Reads and appends rows of ``shadow/config``."""

    def __init__(self, tables: ShadowTables) -> None:
        self.tables = tables
        # The same table with its audit columns (older tables gain them on this write).
        self._audited = DeltaTableHandle(tables.uri(CONFIG), CONFIG_SCHEMA,
                                         tables.storage_options, label=f"shadow/{CONFIG}")

    def set(self, config: ShadowConfig) -> None:
        """Record ``config`` as the tenant's current shadow setting."""
        self.set_many([config])

    def set_many(self, configs: Sequence[ShadowConfig]) -> None:
        """Record several tenants' settings in one commit."""
        self._append([(c.tenant_id, c.version, c.fraction, c.start, c.until, False, c.actor,
                       c.reason) for c in configs])

    def clear(self, tenant_id: str, actor: str | None = None,
              reason: str | None = None) -> None:
        """Stop shadowing ``tenant_id`` (``actor`` and ``reason`` are recorded)."""
        self.clear_many([tenant_id], actor, reason)

    def clear_many(self, tenant_ids: Sequence[str], actor: str | None = None,
                   reason: str | None = None) -> None:
        """Stop shadowing several tenants in one commit."""
        self._append([(validate_tenant_id(t), None, 0.0, None, None, True, actor,
                       reason or None) for t in tenant_ids])

    def _append(self, rows: list[tuple[str, int | None, float, datetime | None,
                                       datetime | None, bool, str | None, str | None]]) -> None:
        if not rows:
            return
        cols = list(zip(*rows))
        ts = pa.timestamp("us", tz="UTC")
        self._write(pa.table({
            "tenant_id": pa.array(cols[0], pa.string()),
            "version": pa.array(cols[1], pa.int64()),
            "fraction": pa.array(cols[2], pa.float64()),
            "start": pa.array(cols[3], ts),
            "until": pa.array(cols[4], ts),
            "cleared": pa.array(cols[5], pa.bool_()),
            "set_at": pa.array([_now()] * len(rows), ts),
            "actor": pa.array(cols[6], pa.string()),
            "reason": pa.array(cols[7], pa.string())}, schema=CONFIG_SCHEMA))

    def _write(self, rows: pa.Table) -> None:
        """Append in one commit, as :meth:`ShadowTables.append`, merging the audit columns
        into a table created before they existed.

        Raises:
            RegistryConflict: concurrent commits could not be reconciled.
            RegistryError: the table could not be written.
        """
        self._audited.append(rows)

    def history(self, tenant_id: str) -> list[ConfigChange]:
        """Every shadow change of ``tenant_id``, newest first (who, when, why)."""
        rows = self.tables.query(CONFIG, f"tenant_id = {sql_str(validate_tenant_id(tenant_id))}"
                                 ).to_pylist()
        rows.sort(key=lambda r: r["set_at"], reverse=True)
        return [ConfigChange(r["tenant_id"], bool(r["cleared"]), r["version"],
                             float(r["fraction"]), r["start"], r["until"], r["set_at"],
                             r.get("actor"), r.get("reason")) for r in rows]

    def version(self) -> int:
        """Current table version (-1 before the first config)."""
        return self.tables.version(CONFIG)

    def load(self) -> dict[str, ShadowConfig]:
        """tenant -> current config, for every tenant not cleared.

        The table keeps every change; DataFusion picks each tenant's newest row, so a
        replica re-reading it handles only the live configs in Python, however long the
        history (a reload holds the GIL for the Python part, stalling the replica).
        """
        rows = self.tables.sql(CONFIG, _LATEST).to_pylist()
        return {r["tenant_id"]: ShadowConfig(r["tenant_id"], float(r["fraction"]), r["version"],
                                             r["start"], r["until"], r["set_at"])
                for r in rows}

    def get(self, tenant_id: str) -> ShadowConfig | None:
        """The tenant's current config, if any."""
        return self.load().get(tenant_id)


_LATEST = (  # each tenant's newest row, unless it cleared the config
    "SELECT tenant_id, version, fraction, start, until, set_at FROM ("
    "SELECT *, ROW_NUMBER() OVER (PARTITION BY tenant_id ORDER BY set_at DESC) AS newest "
    "FROM t) WHERE newest = 1 AND NOT cleared")


class ConfigWatcher:
    """Background thread that re-reads the config table whenever its version moves."""

    def __init__(self, store: ConfigStore, interval_s: float,
                 on_change: Callable[[dict[str, ShadowConfig]], None]) -> None:
        self.store = store
        self.interval_s = interval_s
        self.on_change = on_change
        self._seen = -2
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    def refresh(self) -> bool:
        """Reload if the table changed; True when it did.

        Raises:
            RegistryError: the table could not be read.
        """
        version = self.store.version()
        if version == self._seen:
            return False
        configs = self.store.load() if version >= 0 else {}
        self._seen = version
        self.on_change(configs)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - keep the last good configs
                self.errors += 1

    def start(self) -> None:
        """Start refreshing every ``interval_s`` seconds on a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="tenantry-shadow-config",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (waits briefly)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
