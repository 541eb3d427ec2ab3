"""Capacity search over rate stages and the sizing recommendation derived from it.

Search: ramp through ascending rates and stop at the first stage that breaks the SLO
(p99 above the objective or an error rate of 0.1% or more); optionally run one more
stage halfway between the last pass and the first failure. Capacity is the highest
*achieved* rate of a passing stage.

Recommendation: replicas = ceil(target * (1 + headroom) / per-replica capacity); cache
size from the LRU hit-ratio curve of the same traffic scaled to the target tenant count.
When no stage broke the SLO the capacity found is only a lower bound (the server may take
more), and so the replica count is an upper bound (``lower_bound``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from engine.loadtest.hitratio import HitRatioCurve, hit_ratio_curve
from engine.loadtest.stats import StageResult
from engine.loadtest.workload import ZipfSampler

__all__ = [
    "HEADROOM",
    "MAX_ERROR_RATE",
    "Recommendation",
    "is_lower_bound",
    "max_within_slo",
    "recommend",
    "search",
    "target_curve",
]

HEADROOM = 0.15
MAX_ERROR_RATE = 0.001
_TRACE_PER_TENANT = 50
_TRACE_MIN, _TRACE_MAX = 100_000, 500_000

StageRunner = Callable[[float], StageResult]


def search(rates: Sequence[float], run: StageRunner, refine: bool = True) -> list[StageResult]:
    """Run stages at ascending ``rates`` until one fails; optionally refine once.

    Args:
        rates: offered rates, ascending.
        run: runs one stage at the given offered rate.
        refine: after the first failure, also try the midpoint of last pass and failure.

    Returns:
        every stage result, in the order run.
    """
    results: list[StageResult] = []
    last_pass: float | None = None
    for rate in rates:
        result = run(rate)
        results.append(result)
        if not result.passed:
            if refine and last_pass is not None and rate - last_pass > 1.0:
                results.append(run((last_pass + rate) / 2.0))
            break
        last_pass = rate
    return results


def is_lower_bound(results: Sequence[StageResult]) -> bool:
    """Whether every stage passed, so the highest passing rate is only a lower bound."""
    return bool(results) and all(r.passed for r in results)


def max_within_slo(results: Sequence[StageResult]) -> float | None:
    """Highest achieved rate among passing stages (None when no stage passed)."""
    passing = [r.achieved_rps for r in results if r.passed]
    return max(passing) if passing else None


def target_curve(tenants: int, zipf_s: float, cold_fraction: float = 0.0,
                 seed: int = 0) -> HitRatioCurve:
    """Hit-ratio curve of the same traffic model over ``tenants`` tenants.

    The trace is ~50 requests per tenant (bounded), so the curve reflects steady state
    rather than the first-touch misses of a short test.
    """
    length = min(_TRACE_MAX, max(_TRACE_MIN, _TRACE_PER_TENANT * tenants))
    trace = ZipfSampler(tenants, zipf_s, seed, cold_fraction).sample(length)
    return hit_ratio_curve(trace.tolist())


@dataclass(frozen=True)
class Recommendation:
    """Replicas and cache size for a target rate and tenant count, with headroom."""

    target_rps: float
    target_tenants: int
    headroom: float
    measured_max_rps: float | None
    measured_replicas: int
    per_replica_rps: float | None
    replicas: int | None
    target_hit_rate: float
    cache_models_total: int | None
    cache_models_per_replica: int | None
    model_bytes: float
    cache_mb_per_replica: float | None
    cache_mb_total: float | None
    notes: list[str] = field(default_factory=list)
    lower_bound: bool = False  # capacity is "at least" (no stage failed); replicas "at most"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def recommend(max_rps: float | None, measured_replicas: int, target_rps: float,
              target_tenants: int, curve: HitRatioCurve, target_hit_rate: float,
              model_bytes: float, headroom: float = HEADROOM,
              lower_bound: bool = False) -> Recommendation:
    """Size a deployment from measured capacity and the hit-ratio curve.

    Args:
        max_rps: measured highest rate within SLO (None if no stage passed).
        measured_replicas: replicas of the server that was measured.
        target_rps: request rate to size for.
        target_tenants: tenant count to size for (the curve must be for this count).
        curve: LRU hit-ratio curve of the traffic over ``target_tenants``.
        target_hit_rate: hit rate the caches must reach.
        model_bytes: memory per cached model.
        headroom: fractional headroom on both rate and cache size.
        lower_bound: no stage failed the SLO, so ``max_rps`` is only a lower bound.

    Returns:
        the recommendation (fields None where it cannot be derived, with a note why).
    """
    notes: list[str] = []
    per_replica = max_rps / measured_replicas if max_rps else None
    replicas = None
    if per_replica:
        replicas = max(1, math.ceil(target_rps * (1.0 + headroom) / per_replica - 1e-9))
        if lower_bound:
            notes.append(f"no stage failed the SLO: capacity is at least {per_replica:.1f} "
                         f"req/s per replica; the replica count is an upper bound (test "
                         f"higher --rates to find the limit)")
    else:
        notes.append("no stage met the SLO, so per-replica capacity is unknown")
    models = curve.smallest_size_for(target_hit_rate)
    total = per_rep = None
    mb_rep = mb_total = None
    if models is None:
        notes.append(f"hit rate {target_hit_rate} is unreachable: first requests to each "
                     f"tenant always miss (best {curve.hit_ratio(curve.distinct_keys):.3f})")
    else:
        total = min(target_tenants, math.ceil(models * (1.0 + headroom)))
        per_rep = math.ceil(total / (replicas or 1))
        mb_total = round(total * model_bytes / 2**20, 2)
        mb_rep = round(per_rep * model_bytes / 2**20, 2)
        notes.append("per-replica cache assumes tenant-affinity routing (replica caches "
                     "partition the tenants); with random routing each replica needs "
                     "cache_mb_total")
    return Recommendation(target_rps, target_tenants, headroom, max_rps, measured_replicas,
                          round(per_replica, 3) if per_replica else None, replicas,
                          target_hit_rate, total, per_rep, model_bytes, mb_rep, mb_total, notes,
                          lower_bound=bool(lower_bound and per_replica))
