"""Summarize one stage's per-request outcomes into the figures a capacity report shows."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from engine.loadtest.metrics_probe import CacheDelta
from engine.loadtest.schedule import Stage
from engine.loadtest.workers import StageOutcome

__all__ = ["LATE_THRESHOLD_S", "StageResult", "summarize"]

LATE_THRESHOLD_S = 0.005  # a send dispatched later than this counts as "behind schedule"
_BEHIND_FRACTION = 0.01  # more than this share of late sends flags the generator


@dataclass(frozen=True)
class StageResult:
    """Measured figures of one hold period (contract keys first, then extras)."""

    offered_rps: float
    achieved_rps: float
    p50_ms: float
    p99_ms: float
    error_rate: float
    hit_rate: float | None
    p90_ms: float = 0.0
    p999_ms: float = 0.0
    max_ms: float = 0.0
    requests: int = 0
    errors: int = 0
    status_counts: dict[str, int] = field(default_factory=dict)
    behind_schedule_max_ms: float = 0.0
    behind_schedule_count: int = 0
    generator_behind: bool = False
    generator_cpu_util: float = 0.0  # busiest load process, CPU seconds / wall seconds
    cache_hits: float | None = None
    cache_misses: float | None = None
    loads: float | None = None
    evictions: float | None = None
    mean_load_ms: float | None = None
    cache_bytes: float | None = None
    cache_models: float | None = None
    hold_s: float = 0.0
    passed: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) * 1000.0 if len(values) else float("nan")


def summarize(stage: Stage, outcome: StageOutcome, cache: CacheDelta, slo_p99_ms: float,
              max_error_rate: float) -> StageResult:
    """Stage figures over requests intended during the hold period.

    Latency is from the intended send time. Achieved rate counts successful responses
    that *completed* during the hold window, so an overloaded server shows its real
    throughput rather than the offered rate.

    Args:
        stage: the stage that ran.
        outcome: merged per-request outcomes.
        cache: the /metrics diff over the stage.
        slo_p99_ms: latency objective for pass/fail.
        max_error_rate: error-rate bound (exclusive) for pass/fail.

    Returns:
        the stage result.
    """
    hold = outcome.offsets >= stage.ramp_s
    status = outcome.status[hold]
    latency = outcome.latency_s[hold]
    ok_all = (outcome.status >= 200) & (outcome.status < 300)
    done = outcome.done_offset_s
    in_window = (done >= stage.ramp_s) & (done <= stage.total_s)
    achieved = float(np.count_nonzero(ok_all & in_window)) / stage.hold_s
    n = len(status)
    errors = int(np.count_nonzero((status < 200) | (status >= 300)))
    lag = outcome.lag_s[hold]
    late = int(np.count_nonzero(lag > LATE_THRESHOLD_S))
    labels = {0: "conn_error", -1: "timeout"}
    counts = Counter(labels.get(int(s), str(int(s))) for s in status)
    cpu = max(outcome.cpu_s) / outcome.wall_s if outcome.cpu_s and outcome.wall_s > 0 else 0.0
    error_rate = errors / n if n else 1.0
    p99 = _pct(latency, 99)
    return StageResult(
        offered_rps=round(stage.rate_rps, 3), achieved_rps=round(achieved, 3),
        p50_ms=round(_pct(latency, 50), 3), p99_ms=round(p99, 3),
        error_rate=round(error_rate, 6), hit_rate=cache.hit_rate,
        p90_ms=round(_pct(latency, 90), 3), p999_ms=round(_pct(latency, 99.9), 3),
        max_ms=round(float(latency.max()) * 1000.0, 3) if n else float("nan"),
        requests=n, errors=errors, status_counts=dict(sorted(counts.items())),
        behind_schedule_max_ms=round(float(lag.max()) * 1000.0, 3) if n else 0.0,
        behind_schedule_count=late, generator_behind=n > 0 and late / n > _BEHIND_FRACTION,
        generator_cpu_util=round(cpu, 3), cache_hits=cache.hits,
        cache_misses=cache.misses, loads=cache.loads, evictions=cache.evictions,
        mean_load_ms=cache.mean_load_ms, cache_bytes=cache.cache_bytes,
        cache_models=cache.cache_models, hold_s=stage.hold_s,
        passed=bool(n > 0 and p99 <= slo_p99_ms and error_rate < max_error_rate))
