"""What the console reads from the Delta tables beside the snapshot: runs, monitoring,
shadow pairs and the audit trail. These reads back one page each (a tenant's, the runs
page), never the tenants list.

The ``monitoring`` table is optional: the console looks for a Delta table at
``<root>/monitoring`` (or ``<root>/monitoring/reports``) with one row per tenant, version
and day, in the shape of ``tenantry monitor report --json``: ``tenant_id``, ``version``,
``date``, ``rows``, ``score_psi``, ``flagged``, ``reasons`` (a list, or JSON text) and
``features`` (a list of ``{name, psi, missing_rate, reference_missing_rate}``, or JSON
text in ``features`` / ``features_json``). Without it the tenant page says "no monitoring
yet".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from engine.shadow.config import ConfigChange, ConfigStore, ShadowConfig
from engine.shadow.report import ShadowReport, shadow_report
from engine.shadow.tables import PAIRS, ShadowTables
from registry import Registry
from registry.delta import DeltaTableHandle, sql_str
from registry.errors import RegistryError
from registry.registry import AliasEvent

__all__ = ["AuditEntry", "FeatureDrift", "MonitoringReport", "MonitoringTable", "RunRow", "ShadowView",
           "audit_trail", "read_runs", "shadow_view"]

MONITORING_TABLES = ("monitoring", "monitoring/reports")


@dataclass(frozen=True, slots=True)
class RunRow:
    """One nightly run as the ``runs`` index table records it."""

    run_id: str
    date: str | None
    created_at: datetime | None
    published: int
    alias_moves: int
    trained: int | None
    skipped: int | None
    failed: int | None
    promoted: int | None
    shadowed: int | None
    elapsed_s: float | None
    models_per_s: float | None
    reasons: tuple[tuple[str, int], ...]
    failures: tuple[dict[str, str], ...]  # tenant_id, status, reason, detail


def read_runs(reg: Registry, limit: int = 500) -> list[RunRow]:
    """The newest ``limit`` runs, newest first (their record says trained/skipped/failed)."""
    rows = reg.index.query("runs").to_pylist()
    rows.sort(key=lambda r: r["created_at"], reverse=True)
    out = []
    for r in rows[:limit]:
        try:
            rec = json.loads(r.get("record_json") or "{}")
        except ValueError:
            rec = {}
        rec = rec if isinstance(rec, dict) else {}
        reasons: dict[str, Any] = rec.get("reasons") or {}
        reasons = reasons if isinstance(reasons, dict) else {}
        failures = [f for f in rec.get("failures") or [] if isinstance(f, dict)]
        out.append(RunRow(
            r["run_id"], r.get("data_date") or rec.get("date"), r.get("created_at"),
            int(r.get("published") or 0), int(r.get("alias_moves") or 0),
            _int(rec.get("trained")), _int(rec.get("skipped")), _int(rec.get("failed")),
            _int(rec.get("promoted")), _int(rec.get("shadowed")), _float(rec.get("elapsed_s")),
            _float(rec.get("models_per_s")),
            tuple(sorted((str(k), int(v)) for k, v in reasons.items())),
            tuple({k: str(f.get(k, "")) for k in ("tenant_id", "status", "reason", "detail")}
                  for f in failures)))
    return out


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    """One feature's drift against the model's training profile."""

    name: str
    psi: float | None
    missing_rate: float | None
    reference_missing_rate: float | None


@dataclass(frozen=True)
class MonitoringReport:
    """The newest monitoring row of one tenant."""

    tenant_id: str
    version: int | None
    date: str | None
    rows: int | None
    score_psi: float | None
    flagged: bool
    reasons: tuple[str, ...]
    features: tuple[FeatureDrift, ...]


class MonitoringTable:
    """The optional ``monitoring`` Delta table under the registry root."""

    def __init__(self, reg: Registry) -> None:
        # The table's schema is the monitor job's; the console reads whatever columns it has.
        self._candidates = [DeltaTableHandle(reg.store.uri(name), pa.schema([]),
                                             reg.storage_options, label=name)
                            for name in MONITORING_TABLES]
        self._found: DeltaTableHandle | None = None

    def _table(self) -> DeltaTableHandle | None:
        if self._found is None:
            self._found = next((t for t in self._candidates if t.open() is not None), None)
        return self._found

    def latest(self, tenant_id: str) -> MonitoringReport | None:
        """The tenant's newest report, or None (no table yet, or no row for it)."""
        table = self._table()
        if table is None:
            return None
        try:
            rows = table.query(f"tenant_id = {sql_str(tenant_id)}").to_pylist()
        except Exception as exc:  # DataFusion errors: say so on the page
            raise RegistryError(f"cannot read the monitoring table: {exc}") from exc
        if not rows:
            return None
        order = next((c for c in ("date", "data_date", "ts", "created_at", "version")
                      if c in rows[0]), None)
        if order is not None:
            rows.sort(key=lambda r: (r.get(order) is not None, r.get(order)))
        return _report(rows[-1])


def _report(r: dict[str, Any]) -> MonitoringReport:
    reasons = _jsonish(r.get("reasons"))
    if isinstance(reasons, str):
        reasons = [x.strip() for x in reasons.split(",") if x.strip()]
    features = _jsonish(r.get("features", r.get("features_json")))
    feats = tuple(FeatureDrift(str(f.get("name")), _float(f.get("psi")),
                               _float(f.get("missing_rate")),
                               _float(f.get("reference_missing_rate")))
                  for f in features or [] if isinstance(f, dict))
    date = r.get("date", r.get("data_date"))
    return MonitoringReport(str(r["tenant_id"]), _int(r.get("version")),
                            None if date is None else str(date), _int(r.get("rows")),
                            _float(r.get("score_psi")), bool(r.get("flagged")),
                            tuple(str(x) for x in reasons or []),
                            tuple(sorted(feats, key=lambda f: -(f.psi or 0.0))))


def _jsonish(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


@dataclass(frozen=True)
class ShadowView:
    """A tenant's shadow state: its config, the report and the score differences."""

    config: ShadowConfig | None
    report: ShadowReport
    diffs: np.ndarray  # shadow - production, for the reported version pair


def shadow_view(reg: Registry, tenant_id: str) -> ShadowView:
    """The shadow report of ``tenant_id`` plus its per-row score differences."""
    tables = ShadowTables.for_registry(reg)
    report = shadow_report(reg, tenant_id)
    diffs = np.zeros(0)
    if report.comparison.pairs and report.shadow_version is not None:
        where = (f"tenant_id = {sql_str(tenant_id)} AND shadow_version = "
                 f"{int(report.shadow_version)}")
        if report.production_version is not None:
            where += f" AND production_version = {int(report.production_version)}"
        pairs = tables.query(PAIRS, where, "production, shadow")
        diffs = (np.asarray(pairs.column("shadow").to_numpy(zero_copy_only=False), float)
                 - np.asarray(pairs.column("production").to_numpy(zero_copy_only=False),
                              float))
    return ShadowView(ConfigStore(tables).get(tenant_id), report, diffs)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of a tenant's audit trail: an alias move or a shadow change."""

    at: datetime | None
    what: str
    actor: str | None
    reason: str | None
    kind: str  # alias | shadow


def audit_trail(reg: Registry, tenant_id: str) -> list[AuditEntry]:
    """Alias moves and shadow changes of a tenant, newest first (who, when, why)."""
    entries = [_alias_entry(e) for e in reg.alias_events(tenant_id)]
    for c in ConfigStore(ShadowTables.for_registry(reg)).history(tenant_id):
        entries.append(_shadow_entry(c))
    entries.sort(key=lambda e: (e.at is not None, e.at), reverse=True)
    return entries


def _alias_entry(e: AliasEvent) -> AuditEntry:
    target = f"v{e.version}" if e.version is not None else ""
    what = {"set": f"{e.alias} → {target}", "rollback": f"{e.alias} rolled back to {target}",
            "clear": f"{e.alias} cleared"}.get(e.action, f"{e.alias} {e.action} {target}")
    return AuditEntry(e.at, what, e.actor or (f"run {e.run_id}" if e.run_id else None),
                      e.reason, "alias")


def _shadow_entry(c: ConfigChange) -> AuditEntry:
    if c.cleared:
        what = "shadow mirroring cleared"
    else:
        target = f"v{c.version}" if c.version is not None else "the shadow alias"
        what = f"shadow mirroring {c.fraction:.0%} to {target}" + (
            f" until {c.until:%Y-%m-%d %H:%M}" if c.until else "")
    return AuditEntry(c.set_at, what, c.actor, c.reason, "shadow")
