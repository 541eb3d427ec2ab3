"""What a scoring run reports: rows, tenants, per-tenant failures with reasons, throughput."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

__all__ = ["FailureReason", "ScoreReport", "TenantFailure"]


class FailureReason(str, Enum):
    """Why a tenant (or its shadow model) got no scores."""

    NO_MODEL = "no_model"  # no version under the alias
    CORRUPT_ARTIFACT = "corrupt_artifact"  # sha256 mismatch against the index
    LOAD_FAILED = "load_failed"  # artifact missing, outside the root or not a valid model
    FEATURE_MISMATCH = "feature_mismatch"  # the model's features are not columns of the data
    WRONG_SHARD = "wrong_shard"  # rows stored in a shard the tenant does not hash to
    PREDICT_ERROR = "predict_error"  # anything else while predicting


@dataclass(frozen=True)
class TenantFailure:
    """One tenant's alias that produced no scores, and why."""

    tenant_id: str
    reason: str
    detail: str
    alias: str = "production"
    rows: int = 0  # the tenant's rows that day (not written when production failed)

    def to_json(self) -> dict[str, Any]:
        """``{"tenant_id", "reason", "detail", "alias", "rows"}``."""
        return {"tenant_id": self.tenant_id, "reason": self.reason, "detail": self.detail,
                "alias": self.alias, "rows": self.rows}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TenantFailure:
        """Inverse of :meth:`to_json`."""
        return cls(str(doc["tenant_id"]), str(doc["reason"]), str(doc.get("detail", "")),
                   str(doc.get("alias", "production")), int(doc.get("rows", 0)))


@dataclass(frozen=True)
class ScoreReport:
    """The outcome of one ``tenantry score`` run (DESIGN.md's ``score --json`` keys and more).

    ``failed`` lists tenants that got no production scores (none of their rows are in the
    output); ``shadow_failed`` lists tenants scored by production whose shadow model failed
    (their ``shadow_*`` columns are null).
    """

    run_id: str
    date: str
    rows: int
    tenants: int
    failed: tuple[TenantFailure, ...]
    rows_per_s: float
    output: str
    elapsed_s: float
    alias: str = "production"
    already_published: bool = False
    buckets: int = 0
    resumed_buckets: int = 0
    shadow_tenants: int = 0
    shadow_failed: tuple[TenantFailure, ...] = ()
    invalid_rows: int = 0
    row_key: str = "row_index"
    data_version: int = -1
    table_version: int | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def reasons(self) -> dict[str, int]:
        """Failed tenants (production) counted by reason."""
        return dict(sorted(Counter(f.reason for f in self.failed).items()))

    def to_json(self, max_failures: int | None = None) -> dict[str, Any]:
        """The JSON document: DESIGN.md's keys first, then the rest.

        Args:
            max_failures: list at most this many failures per list (all are counted).
        """
        return {
            "run_id": self.run_id, "rows": self.rows, "tenants": self.tenants,
            "failed": [f.to_json() for f in self.failed[:max_failures]],
            "rows_per_s": round(self.rows_per_s, 1), "output": self.output,
            "failed_count": len(self.failed), "failed_reasons": self.reasons(),
            "date": self.date, "alias": self.alias,
            "already_published": self.already_published, "buckets": self.buckets,
            "resumed_buckets": self.resumed_buckets, "shadow_tenants": self.shadow_tenants,
            "shadow_failed": [f.to_json() for f in self.shadow_failed[:max_failures]],
            "shadow_failed_count": len(self.shadow_failed), "invalid_rows": self.invalid_rows,
            "row_key": self.row_key, "data_version": self.data_version,
            "table_version": self.table_version, "elapsed_s": round(self.elapsed_s, 3),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ScoreReport:
        """Rebuild a report stored by :meth:`to_json` (lists may have been truncated)."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in doc.items() if k in names}
        values["failed"] = tuple(TenantFailure.from_json(f) for f in doc.get("failed", ()))
        values["shadow_failed"] = tuple(TenantFailure.from_json(f)
                                        for f in doc.get("shadow_failed", ()))
        return cls(**values)

    def summary_text(self) -> str:
        """A few human-readable lines."""
        if self.already_published:
            return (f"run {self.run_id} ({self.date}) was already published to {self.output}"
                    f" ({self.rows} rows, {self.tenants} tenants); nothing to do")
        lines = [
            f"run {self.run_id}  date {self.date}  alias {self.alias}  buckets {self.buckets}"
            + (f" ({self.resumed_buckets} resumed)" if self.resumed_buckets else ""),
            f"scored {self.rows} rows of {self.tenants} tenants  failed {len(self.failed)}"
            + (f"  shadow {self.shadow_tenants} (failed {len(self.shadow_failed)})"
               if self.alias == "shadow" else ""),
            (f"{self.rows_per_s:,.0f} rows/s  elapsed {self.elapsed_s:.1f}s  -> {self.output}"
             f" (table version {self.table_version}, key {self.row_key})"),
        ]
        if self.failed:
            lines.append("not scored: " + ", ".join(f"{k} {v}" for k, v in self.reasons().items()))
        if self.invalid_rows:
            lines.append(f"{self.invalid_rows} rows had infinite or out-of-float32-range "
                         "features: their score is null")
        return "\n".join(lines)
