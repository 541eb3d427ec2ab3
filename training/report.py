"""What a training run reports: counts, failures by reason, throughput."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TenantFailure", "TrainingReport"]


@dataclass(frozen=True)
class TenantFailure:
    """A tenant that got no new model, and why."""

    tenant_id: str
    reason: str
    detail: str
    status: str  # "skipped" (data cannot give a model) or "failed" (an exception)


@dataclass(frozen=True)
class TrainingReport:
    """The outcome of one ``tenantry train`` run (the ``--json`` document of DESIGN.md)."""

    run_id: str
    date: str
    trained: int
    skipped: int
    failed: int
    published: int
    promoted: int
    shadowed: int
    models_per_s: float
    elapsed_s: float
    already_published: bool = False
    window: tuple[str, ...] = ()
    buckets: int = 0
    failures: tuple[TenantFailure, ...] = field(default_factory=tuple)
    timings: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    """What the spec made of the table: objective, gate metric, layout, features, and
    which features were left out for how many tenants (``dropped_features``)."""

    def reasons(self) -> dict[str, int]:
        """Skipped and failed tenants counted by reason."""
        return dict(sorted(Counter(f.reason for f in self.failures).items()))

    def to_json(self, max_failures: int = 100) -> dict[str, Any]:
        """The JSON document (contract keys first, then extras).

        Args:
            max_failures: how many individual failures to list (all are counted).

        Returns:
            A JSON-serialisable dict.
        """
        return {
            "run_id": self.run_id, "date": self.date, "trained": self.trained,
            "skipped": self.skipped, "failed": self.failed, "published": self.published,
            "promoted": self.promoted, "shadowed": self.shadowed,
            "models_per_s": round(self.models_per_s, 3), "elapsed_s": round(self.elapsed_s, 3),
            "already_published": self.already_published, "window": list(self.window),
            "buckets": self.buckets, "reasons": self.reasons(),
            "failures": [{"tenant_id": f.tenant_id, "status": f.status, "reason": f.reason,
                          "detail": f.detail} for f in self.failures[:max_failures]],
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            **self.details,
        }

    def summary_text(self) -> str:
        """A few human-readable lines."""
        if self.already_published:
            return f"run {self.run_id} ({self.date}) was already published; nothing to do"
        lines = [
            (f"run {self.run_id}  date {self.date}  window "
             f"{self.window[0] if self.window else ''}..{self.date}  buckets {self.buckets}"),
            (f"trained {self.trained}  skipped {self.skipped}  failed {self.failed}  "
             f"published {self.published}  promoted {self.promoted}  shadowed {self.shadowed}"),
            f"{self.models_per_s:.1f} models/s  elapsed {self.elapsed_s:.1f}s",
        ]
        if self.details:
            d = self.details
            lines.append(f"objective {d.get('objective')}  gate {d.get('gate_metric')}  "
                         f"holdout {d.get('holdout')}  {len(d.get('features', []))} features  "
                         f"table layout {d.get('layout')}")
        if self.failures:
            lines.append("not trained: " + ", ".join(f"{k} {v}" for k, v in self.reasons().items()))
        if self.details.get("dropped_features"):
            lines.append("features left out (never sent), tenants: " + ", ".join(
                f"{k} {v}" for k, v in self.details["dropped_features"].items()))
        return "\n".join(lines)
