"""What ``tenantry monitor run`` and ``monitor report`` print, and the monitoring rows.

A run writes one ``monitoring`` row per tenant (:func:`monitoring_rows`); a report reads a
tenant's rows back: the latest run's figures and reasons, and its last runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa

from engine.monitor.judge import TenantFigures, Verdict, Volume
from engine.monitor.tables import MONITORING, SCHEMAS, DeltaAppender
from registry.delta import sql_str
from registry.errors import NotFound

__all__ = ["MonitorRunReport", "TenantReport", "monitoring_rows", "tenant_report"]


@dataclass(frozen=True)
class MonitorRunReport:
    """The outcome of one monitoring run (DESIGN.md's ``monitor run --json`` keys and more)."""

    run_id: str
    date: str
    tenants: int
    flagged: tuple[str, ...]
    rows: int
    judged: int = 0
    too_few_rows: int = 0
    no_profile: int = 0
    elapsed_s: float = 0.0
    already_done: bool = False
    table: str = ""
    metrics_file: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """``{"run_id", "tenants", "flagged", "rows", ...}``."""
        return {"run_id": self.run_id, "date": self.date, "tenants": self.tenants,
                "flagged": list(self.flagged), "rows": self.rows, "judged": self.judged,
                "too_few_rows": self.too_few_rows, "no_profile": self.no_profile,
                "already_done": self.already_done, "elapsed_s": round(self.elapsed_s, 3),
                "table": self.table, "metrics_file": self.metrics_file,
                "timings": {k: round(v, 3) for k, v in self.timings.items()}}

    def summary_text(self) -> str:
        """The human summary."""
        head = (f"monitoring run {self.run_id} ({self.date})"
                + (" was already written; nothing recomputed" if self.already_done else ""))
        flagged = ", ".join(self.flagged[:20]) + (" …" if len(self.flagged) > 20 else "")
        return (f"{head}\n  {self.tenants} tenants ({self.judged} judged, {self.too_few_rows} "
                f"with too few rows, {self.no_profile} without a profile), {self.rows} rows\n"
                f"  flagged {len(self.flagged)}: {flagged or '-'}\n  -> {self.table}")

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]], run_id: str, **extra: Any) -> MonitorRunReport:
        """The report of a run already written, from its monitoring rows."""
        return cls(run_id, str(rows[0]["date"]) if rows else "", len(rows),
                   tuple(sorted(r["tenant_id"] for r in rows if r["flagged"])),
                   sum(int(r["volume"] or 0) for r in rows),
                   sum(r["status"] == "judged" for r in rows),
                   sum(r["status"] == "too_few_rows" for r in rows),
                   sum(r["status"] == "no_profile" for r in rows), **extra)


def monitoring_rows(run_id: str, date: str, judged: Sequence[tuple[TenantFigures, Volume,
                                                                   Verdict]],
                    now: datetime) -> pa.Table:
    """The ``monitoring`` rows of one run: one per tenant."""
    def feature(d: Any) -> dict[str, Any]:
        return {"name": d.name, "psi": d.psi, "missing_rate": d.missing_rate,
                "reference_missing_rate": d.reference_missing_rate}

    return pa.Table.from_pylist([{
        "date": date, "run_id": run_id, "tenant_id": fig.tenant_id, "version": fig.version,
        "status": fig.status.value, "rows": fig.rows,
        "score_psi": fig.score.psi if fig.score else None,
        "score_psi_bound": fig.score.bound if fig.score else None,
        "flagged": verdict.flagged, "reasons": list(verdict.reasons),
        "features": [feature(d) for d in fig.features], "volume": vol.rows,
        "baseline_volume": vol.baseline,
        "volume_ratio": vol.ratio if vol.ratio not in (None, float("inf")) else None,
        "created_at": now,
    } for fig, vol, verdict in judged], schema=SCHEMAS[MONITORING])


@dataclass(frozen=True)
class TenantReport:
    """A tenant's latest monitoring row and its last runs."""

    latest: dict[str, Any]
    runs: tuple[dict[str, Any], ...]

    def to_json(self) -> dict[str, Any]:
        """DESIGN.md's ``monitor report --json`` keys, plus the run, date, status, volume
        and ``runs`` (newest first)."""
        r = self.latest
        return {"tenant_id": r["tenant_id"], "version": r["version"], "rows": r["rows"],
                "score_psi": r["score_psi"], "flagged": bool(r["flagged"]),
                "reasons": list(r["reasons"] or []),
                "features": [dict(f) for f in r["features"] or []],
                "run_id": r["run_id"], "date": r["date"], "status": r["status"],
                "volume": r["volume"], "baseline_volume": r["baseline_volume"],
                "volume_ratio": r["volume_ratio"],
                "runs": [{k: run[k] for k in ("run_id", "date", "version", "status", "rows",
                                              "score_psi", "flagged", "reasons")}
                         for run in self.runs]}

    def text(self) -> str:
        """The human report."""
        r = self.latest
        psi = "-" if r["score_psi"] is None else f"{r['score_psi']:.3f}"
        lines = [f"tenant {r['tenant_id']}: v{r['version']} on {r['date']} (run {r['run_id']}), "
                 f"{r['rows']} rows, {r['status']}, score PSI {psi} -> "
                 + ("FLAGGED" if r["flagged"] else "not flagged")]
        lines += [f"  reason: {x}" for x in r["reasons"] or []]
        feats = sorted(r["features"] or [], key=lambda f: -(f["psi"] or 0.0))
        if feats:
            lines.append(f"  {'feature':<28} {'psi':>7} {'missing':>8} {'train':>7}")
            lines += [f"  {f['name']:<28} {_num(f['psi']):>7} {_num(f['missing_rate']):>8} "
                      f"{_num(f['reference_missing_rate']):>7}" for f in feats[:10]]
        lines.append("  last runs: " + "; ".join(
            f"{x['date']} v{x['version']} {'flagged' if x['flagged'] else 'ok'}"
            for x in self.runs))
        return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def tenant_report(table: DeltaAppender, tenant_id: str, last: int = 10) -> TenantReport:
    """The tenant's newest monitoring row (by run time) and its ``last`` runs.

    Raises:
        NotFound: no monitoring run has a row for the tenant.
    """
    rows = table.sql(f"SELECT * FROM t WHERE tenant_id = {sql_str(tenant_id)}").to_pylist()
    if not rows:
        raise NotFound(f"no monitoring run has a row for tenant {tenant_id!r} yet (run: "
                       "tenantry monitor run)")
    rows.sort(key=lambda r: (r["created_at"], r["date"]), reverse=True)
    return TenantReport(rows[0], tuple(rows[:last]))
