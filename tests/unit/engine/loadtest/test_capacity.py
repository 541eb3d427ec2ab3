"""SLO search and the sizing arithmetic (replicas with headroom, cache from the curve)."""

from __future__ import annotations

import math

from engine.loadtest.capacity import max_within_slo, recommend, search, target_curve
from engine.loadtest.hitratio import hit_ratio_curve
from engine.loadtest.metrics_probe import diff, parse_metrics
from engine.loadtest.stats import StageResult


def _fake_stage(capacity: float):
    def run(rate: float) -> StageResult:
        ok = rate <= capacity
        return StageResult(rate, min(rate, capacity), 5.0, 10.0 if ok else 900.0, 0.0, None,
                           passed=ok)
    return run


def test_search_stops_at_first_failure_and_refines() -> None:
    calls: list[float] = []
    run = _fake_stage(300.0)
    results = search([100, 200, 400, 800], lambda r: calls.append(r) or run(r))
    assert calls == [100, 200, 400, 300]  # 800 never run; midpoint 300 refines
    assert max_within_slo(results) == 300.0


def test_search_without_pass_or_refine() -> None:
    results = search([100, 200], _fake_stage(50.0), refine=True)
    assert len(results) == 1 and max_within_slo(results) is None
    assert len(search([100, 200, 400], _fake_stage(150.0), refine=False)) == 2


def test_recommendation_replicas_and_cache() -> None:
    curve = hit_ratio_curve([i % 10 for i in range(1000)])  # cyclic: needs all 10
    rec = recommend(max_rps=400.0, measured_replicas=2, target_rps=1000.0, target_tenants=10,
                    curve=curve, target_hit_rate=0.9, model_bytes=2**20)
    assert rec.per_replica_rps == 200.0
    assert rec.replicas == math.ceil(1000 * 1.15 / 200)  # 6
    assert rec.cache_models_total == 10  # 10 * 1.15 capped at the tenant count
    assert rec.cache_models_per_replica == 2
    assert rec.cache_mb_per_replica == 2.0 and rec.cache_mb_total == 10.0


def test_recommendation_exact_multiple_and_unknown_capacity() -> None:
    curve = hit_ratio_curve([0, 0, 0, 0])
    rec = recommend(100.0, 1, 100.0 / 1.15, 1, curve, 0.5, 1000.0)
    assert rec.replicas == 1
    none = recommend(None, 1, 100.0, 1, curve, 0.99, 1000.0)
    assert none.replicas is None and none.cache_models_total is None and len(none.notes) == 2


def test_target_curve_more_tenants_need_bigger_cache() -> None:
    small = target_curve(200, 1.1).smallest_size_for(0.8)
    big = target_curve(2000, 1.1).smallest_size_for(0.8)
    assert small is not None and big is not None and big > 3 * small


METRICS = """# TYPE tenantry_cache_hits_total counter
tenantry_cache_hits_total{replica="0"} %d
tenantry_cache_hits_total{replica="1"} 10
# TYPE tenantry_cache_misses_total counter
tenantry_cache_misses_total %d
# TYPE tenantry_cache_bytes gauge
tenantry_cache_bytes 2000
# TYPE tenantry_cache_models gauge
tenantry_cache_models 4
# TYPE tenantry_model_load_seconds histogram
tenantry_model_load_seconds_bucket{le="+Inf"} %d
tenantry_model_load_seconds_count %d
tenantry_model_load_seconds_sum %f
"""


def test_metrics_diff_sums_replicas_and_computes_rates() -> None:
    before = parse_metrics(METRICS % (0, 5, 5, 5, 0.005))
    after = parse_metrics(METRICS % (80, 15, 15, 15, 0.025))
    assert before.hits == 10 and after.hits == 90
    delta = diff(before, after)
    assert delta.hit_rate == 80 / 90 and delta.loads == 10
    assert abs(delta.mean_load_ms - 2.0) < 1e-9
    assert delta.mean_model_bytes == 500
    assert diff(None, after).hit_rate is None
    coalesced = "# TYPE tenantry_cache_coalesced_total counter\ntenantry_cache_coalesced_total %d\n"
    b2 = parse_metrics(METRICS % (0, 5, 5, 5, 0.005) + coalesced % 0)
    a2 = parse_metrics(METRICS % (80, 15, 15, 15, 0.025) + coalesced % 10)
    # coalesced waits are already inside the server's hits: they do not change the rate
    assert diff(b2, a2).hit_rate == 80 / 90
