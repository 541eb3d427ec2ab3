"""What the pair log says about a shadow version: agreement, differences, shift, latency.

:func:`compare` is the pure statistics (unit-tested against hand-computed values);
:func:`shadow_report` reads one tenant's pairs from ``shadow/log`` and drop counts from
``shadow/stats`` and returns a :class:`ShadowReport`, the document behind
``tenantry shadow report``.

What agreement and difference mean follows the production model's objective:

- binary: both probabilities on the same side of 0.5; diff ``|shadow - production|``;
- regression: the shadow value within ``REGRESSION_RTOL`` (1%) of production's, or within
  0.01 when the value is under 1 in magnitude (``|s - p| <= 0.01 * max(1, |p|)``); diff
  ``|shadow - production|`` in the target's units;
- multiclass: the same most likely class; diff the largest absolute difference over the
  classes' probabilities. PSI, KS and the means use each side's top-class probability.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from engine.shadow.config import ConfigStore
from engine.shadow.tables import PAIRS, STATS, ShadowTables
from registry import Alias, Registry, validate_tenant_id
from registry.delta import sql_str
from registry.errors import NotFound

__all__ = ["Comparison", "ShadowReport", "compare", "ks_statistic", "psi", "shadow_report"]

THRESHOLD = 0.5
REGRESSION_RTOL = 0.01  # regression agreement: |s - p| <= REGRESSION_RTOL * max(1, |p|)
MULTICLASS = "multi:softprob"
REGRESSION = "reg:squarederror"
AGREEMENT_RULES = {MULTICLASS: "same class", REGRESSION: "within 1%"}  # else "at 0.5"
PSI_BINS = 10
PSI_EPS = 1e-4


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population stability index of ``actual`` against ``expected``.

    Bins are the deciles of ``expected`` (ties merged); each side's share per bin is
    floored at 1e-4 so an empty bin stays finite. Under 0.1 is usually read as no shift,
    0.1-0.25 as moderate, above 0.25 as a significant shift.
    """
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)[1:-1]))
    e = np.bincount(np.searchsorted(edges, expected, side="right"), minlength=len(edges) + 1)
    a = np.bincount(np.searchsorted(edges, actual, side="right"), minlength=len(edges) + 1)
    pe = np.maximum(e / max(1, len(expected)), PSI_EPS)
    pa_ = np.maximum(a / max(1, len(actual)), PSI_EPS)
    return float(np.sum((pa_ - pe) * np.log(pa_ / pe)))


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two ECDFs."""
    grid = np.concatenate([a, b])
    fa = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    fb = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.max(np.abs(fa - fb)))


@dataclass(frozen=True)
class Comparison:
    """Statistics of paired production/shadow predictions."""

    pairs: int
    agreement: float | None
    mean_abs_diff: float | None
    max_abs_diff: float | None
    psi: float | None
    ks: float | None
    production_mean: float | None
    shadow_mean: float | None
    agreement_rule: str = "at 0.5"
    """What agreement counts: ``at 0.5`` (binary), ``within 1%`` (regression) or
    ``same class`` (multiclass)."""


def compare(production: np.ndarray, shadow: np.ndarray, objective: str = "binary:logistic",
            num_class: int | None = None) -> Comparison:
    """Agreement, mean/max absolute difference, PSI and KS of two paired sets.

    Args:
        production: production predictions, one per row; multiclass: ``(rows, K)`` or
            flat row-major with ``num_class`` given.
        shadow: the shadow's, shaped alike.
        objective: the production model's objective (see the module docstring).
        num_class: K, to regroup flat multiclass pairs.

    Returns:
        The :class:`Comparison` (``pairs`` counts rows).
    """
    p = np.asarray(production, dtype=np.float64)
    s = np.asarray(shadow, dtype=np.float64)
    rule = AGREEMENT_RULES.get(objective, "at 0.5")
    if objective == MULTICLASS and p.ndim == 1 and num_class:
        p, s = p.reshape(-1, num_class), s.reshape(-1, num_class)
    if len(p) == 0:
        return Comparison(0, None, None, None, None, None, None, None, rule)
    if p.ndim == 2:  # class probabilities
        diff = np.abs(p - s).max(axis=1)
        agree = p.argmax(axis=1) == s.argmax(axis=1)
        p, s = p.max(axis=1), s.max(axis=1)
    else:
        diff = np.abs(p - s)
        agree = (diff <= REGRESSION_RTOL * np.maximum(1.0, np.abs(p))
                 if objective == REGRESSION else (p >= THRESHOLD) == (s >= THRESHOLD))
    return Comparison(len(p), float(np.mean(agree)), float(diff.mean()), float(diff.max()),
                      psi(p, s), ks_statistic(p, s), float(p.mean()), float(s.mean()), rule)


def _pct(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


@dataclass(frozen=True)
class ShadowReport:
    """``tenantry shadow report`` for one tenant and one (production, shadow) pair."""

    tenant_id: str
    production_version: int | None
    shadow_version: int | None
    comparison: Comparison
    dropped: int
    errors: int
    timeouts: int
    requests: int
    production_p50_ms: float | None
    production_p99_ms: float | None
    shadow_p50_ms: float | None
    shadow_p99_ms: float | None
    first_at: datetime | None
    last_at: datetime | None
    config: dict[str, Any] | None
    other_pairs: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The contract document (DESIGN.md) plus shift, latency and window keys."""
        doc: dict[str, Any] = {"tenant_id": self.tenant_id,
                               "production_version": self.production_version,
                               "shadow_version": self.shadow_version}
        doc.update(asdict(self.comparison))
        doc.update({k: v for k, v in asdict(self).items()
                    if k not in doc and k != "comparison"})
        for k in ("first_at", "last_at"):
            doc[k] = doc[k].isoformat() if doc[k] else None
        doc["promote_command"] = (
            f"tenantry registry promote {self.tenant_id} {self.shadow_version}"
            if self.comparison.pairs and self.shadow_version else None)
        return doc

    def text(self) -> str:
        """Human-readable summary."""
        c = self.comparison

        def f(v: float | None, fmt: str = ".4f") -> str:
            return "n/a" if v is None else format(v, fmt)

        lines = [
            (f"shadow report for {self.tenant_id}: production v{self.production_version} "
             f"vs shadow v{self.shadow_version}"),
            (f"  pairs {c.pairs} ({self.requests} requests)   agreement ({c.agreement_rule}) "
             f"{f(c.agreement)}   mean |diff| {f(c.mean_abs_diff)}   max |diff| "
             f"{f(c.max_abs_diff)}"),
            (f"  shift: PSI {f(c.psi)}  KS {f(c.ks)}   mean prediction "
             f"{f(c.production_mean)} -> {f(c.shadow_mean)}"),
            (f"  latency ms p50/p99: production {f(self.production_p50_ms, '.2f')}/"
             f"{f(self.production_p99_ms, '.2f')}  shadow {f(self.shadow_p50_ms, '.2f')}/"
             f"{f(self.shadow_p99_ms, '.2f')}"),
            f"  dropped {self.dropped}  errors {self.errors}  timeouts {self.timeouts}",
        ]
        if self.config:
            lines.append(f"  config: fraction {self.config['fraction']} until "
                         f"{self.config['until'] or 'cleared'} (active: {self.config['active']})")
        if self.other_pairs:
            lines.append(f"  other version pairs in the log: {self.other_pairs}")
        if c.pairs and self.shadow_version:
            lines.append(f"  to promote: tenantry registry promote {self.tenant_id} "
                         f"{self.shadow_version}")
        return "\n".join(lines)


def shadow_report(registry: Registry, tenant_id: str, since: datetime | None = None,
                  shadow_version: int | None = None) -> ShadowReport:
    """Read the tenant's pairs (since ``since``) and summarise one version pair.

    Args:
        registry: the registry whose ``shadow/`` tables to read.
        tenant_id: the tenant.
        since: only pairs at or after this time (aware datetime).
        shadow_version: which shadow version to report on; default the latest logged.

    Returns:
        the report (zero pairs when nothing was logged yet).

    Raises:
        InvalidTenantId: bad tenant id.
    """
    validate_tenant_id(tenant_id)
    tables = ShadowTables.for_registry(registry)
    where = f"tenant_id = {sql_str(tenant_id)}" + (
        "" if since is None else f" AND date >= {sql_str(since.strftime('%Y-%m-%d'))}")
    pairs = _since(tables.query(PAIRS, where, "ts, request_id, row, production_version, "
                                "shadow_version, production, shadow, production_latency_ms, "
                                "shadow_latency_ms").to_pandas(), since)
    snap = registry.snapshot()
    prod_v = snap.alias_version(tenant_id, Alias.PRODUCTION)
    shadow_v = shadow_version
    config = ConfigStore(tables).get(tenant_id)
    other: dict[str, int] = {}
    if len(pairs):
        latest = pairs.sort_values("ts").iloc[-1]
        if shadow_v is None:
            shadow_v = int(latest["shadow_version"])
        mine = pairs[pairs["shadow_version"] == shadow_v]
        if len(mine):
            prod_v = int(mine.sort_values("ts").iloc[-1]["production_version"])
            mine = mine[mine["production_version"] == prod_v]
        other = _other_pairs(pairs, prod_v, shadow_v)
        pairs = mine
    elif shadow_v is None:
        shadow_v = (config.version if config and config.version is not None
                    else snap.alias_version(tenant_id, Alias.SHADOW))
    firsts = pairs[pairs["row"] == 0]
    objective, classes = _objective(snap, tenant_id, prod_v)
    if objective == MULTICLASS and classes and len(pairs):
        # one pair per (row, class), row = row * K + class: rows regroup in that order
        pairs = pairs.sort_values(["ts", "request_id", "row"], kind="stable")
    counted = _outcomes(_since(tables.query(STATS, where, "ts, shadow_version, outcome, count")
                               .to_pandas(), since), shadow_v)
    return ShadowReport(
        tenant_id, prod_v, shadow_v,
        compare(pairs["production"].to_numpy(), pairs["shadow"].to_numpy(), objective,
                classes),
        counted["dropped"], counted["error"], counted["timeout"], len(firsts),
        _pct(firsts["production_latency_ms"].to_numpy(), 50),
        _pct(firsts["production_latency_ms"].to_numpy(), 99),
        _pct(firsts["shadow_latency_ms"].to_numpy(), 50),
        _pct(firsts["shadow_latency_ms"].to_numpy(), 99),
        pairs["ts"].min().to_pydatetime() if len(pairs) else None,
        pairs["ts"].max().to_pydatetime() if len(pairs) else None,
        config.to_json() if config else None, other)


def _other_pairs(pairs: Any, production: int | None, shadow: int | None) -> dict[str, int]:
    """Pair counts of the version pairs other than the reported one (``v1->v2``: n)."""
    counts = pairs.groupby(["production_version", "shadow_version"]).size()
    return {f"v{int(p)}->v{int(s)}": int(n) for (p, s), n in counts.items()
            if (p, s) != (production, shadow)}


def _since(frame: Any, since: datetime | None) -> Any:
    """The rows of a pandas frame at or after ``since`` (all without it)."""
    return frame[frame["ts"] >= since] if since is not None and len(frame) else frame


def _outcomes(stats: Any, shadow_version: int | None) -> dict[str, int]:
    """Dropped, error and timeout counts of a shadow version from the stats rows."""
    if shadow_version is not None and len(stats):
        stats = stats[stats["shadow_version"] == shadow_version]
    return {outcome: int(stats.loc[stats["outcome"] == outcome, "count"].sum())
            if len(stats) else 0 for outcome in ("dropped", "error", "timeout")}


def _objective(snap: Any, tenant_id: str, version: int | None) -> tuple[str, int | None]:
    """The objective and class count of a production version (binary if unknown)."""
    if version is None:
        return "binary:logistic", None
    try:
        mv = snap.version(tenant_id, version)
    except NotFound:
        return "binary:logistic", None
    return mv.objective, mv.num_class
