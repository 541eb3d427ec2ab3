"""Every Prometheus metric tenantry exports, defined once (no per-tenant labels).

Each model-host replica owns a :class:`Metrics` with its own ``CollectorRegistry``; the
ingress's control app sums replicas' samples and HAProxy's own counters
(:mod:`engine.ingress.stats`) into one /metrics page. The monitor job is a batch job:
:class:`MonitorJobMetrics` is written as a Prometheus text file (node-exporter textfile
collector style), not scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

__all__ = ["DIFF_BUCKETS", "LATENCY_BUCKETS", "LOOP_LAG_BUCKETS", "MAX_GAUGES",
           "MONITOR_OUTCOMES", "Metrics", "MonitorJobMetrics", "ShadowTotals"]

disable_created_metrics()

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LOAD_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0)
DIFF_BUCKETS = (1e-6, 1e-4, 1e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
LOOP_LAG_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01,
                    0.02, 0.05, 0.1, 0.25, 1.0)
# (outcome -> count, abs-diff counts per DIFF_BUCKETS bound and +Inf, abs-diff sum)
ShadowTotals = tuple[dict[str, float], list[int], float]
# Gauges merged across replicas with max() rather than sum().
# Gauges merged across replicas and ingresses with max() rather than sum(): lag (the worst
# replica counts) and replicas (every ingress routes to the same set).
MAX_GAUGES = frozenset({"tenantry_registry_lag_seconds", "tenantry_replicas"})


class Metrics:
    """The metric objects of one process."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("tenantry_requests", "HTTP requests answered, by route and code",
                                ["route", "code"], registry=r)
        self.request_seconds = Histogram("tenantry_request_seconds",
                                         "Time to answer a request inside tenantry",
                                         ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.cache_hits = Counter("tenantry_cache_hits", "Predictions served from a cached model",
                                  registry=r)
        self.cache_misses = Counter("tenantry_cache_misses",
                                    "Predictions that had to load their model", registry=r)
        self.cache_coalesced = Counter("tenantry_cache_coalesced",
                                       "Hits that waited for a load another request started",
                                       registry=r)
        self.cache_evictions = Counter("tenantry_cache_evictions",
                                       "Models evicted from a cache (budget or new version)",
                                       registry=r)
        self.cache_bytes = Gauge("tenantry_cache_bytes", "Bytes of loaded models held in caches",
                                 registry=r)
        self.cache_models = Gauge("tenantry_cache_models", "Models held in caches", registry=r)
        self.model_load_seconds = Histogram("tenantry_model_load_seconds",
                                            "Time to read, verify and load one model",
                                            buckets=LOAD_BUCKETS, registry=r)
        self.model_load_failures = Counter("tenantry_model_load_failures",
                                           "Model loads that failed (missing, corrupt, invalid)",
                                           registry=r)
        self.model_selfcheck_fallbacks = Counter(
            "tenantry_model_selfcheck_fallbacks",
            "Models whose compiled forest disagreed with XGBoost at load (served by XGBoost)",
            registry=r)
        # Shadow counters are kept by the replica's mirror and its worker (in another
        # process), and read when scraped: see engine.shadow.mirror.
        self.shadow_source: Callable[[], ShadowTotals] | None = None
        r.register(_ShadowCollector(self))
        self.event_loop_lag = Histogram(
            "tenantry_event_loop_lag_seconds",
            "How late a replica's event loop ran a periodic probe: time in which no "
            "request on that replica could move", buckets=LOOP_LAG_BUCKETS, registry=r)
        self.registry_refresh_seconds = Histogram("tenantry_registry_refresh_seconds",
                                                  "Time to refresh the registry snapshot",
                                                  buckets=LOAD_BUCKETS, registry=r)
        self.registry_lag_seconds = Gauge("tenantry_registry_lag_seconds",
                                          "Seconds since the snapshot was last known current",
                                          registry=r)
        self.prediction_log_rows = Counter(
            "tenantry_prediction_log_rows",
            "Rows of sampled production requests, by outcome: logged (written to the "
            "prediction log) or dropped (buffer full, or writes failing)", ["outcome"],
            registry=r)

    def render(self) -> bytes:
        """The Prometheus text exposition of this process's metrics."""
        return generate_latest(self.registry)

    def loop_lag_buckets(self) -> list[tuple[float, float]]:
        """``(upper bound, cumulative count)`` of the event-loop lag histogram."""
        return [(float(s.labels["le"]), s.value) for m in self.event_loop_lag.collect()
                for s in m.samples if s.name.endswith("_bucket")]


class _ShadowCollector:
    """``tenantry_shadow_requests_total{outcome}`` and ``tenantry_shadow_abs_diff`` from
    the mirror's totals (zero while the replica has no shadow mode)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return self._families({}, [0] * (len(DIFF_BUCKETS) + 1), 0.0)

    def collect(self) -> Iterator[Metric]:
        source = self._metrics.shadow_source
        counts, buckets, total = source() if source else ({}, [0] * (len(DIFF_BUCKETS) + 1),
                                                          0.0)
        yield from self._families(counts, buckets, total)

    @staticmethod
    def _families(counts: Mapping[str, float], buckets: list[int],
                  total: float) -> list[Metric]:
        requests = CounterMetricFamily("tenantry_shadow_requests",
                                       "Mirrored shadow predictions, by outcome",
                                       labels=["outcome"])
        for outcome, n in sorted(counts.items()):
            requests.add_metric([outcome], n)
        cumulative, running = [], 0
        for bound, n in zip((*map(str, DIFF_BUCKETS), "+Inf"), buckets, strict=True):
            running += n
            cumulative.append((bound, float(running)))
        diff = HistogramMetricFamily("tenantry_shadow_abs_diff",
                                     "Absolute difference between shadow and production",
                                     buckets=cumulative, sum_value=total)
        return [requests, diff]


MONITOR_OUTCOMES = ("ok", "already_done", "failed")


class MonitorJobMetrics:
    """The monitor job's series, carried from one run's text file to the next (a batch
    job's counters live in the file, not in a process)."""

    def __init__(self, previous: Mapping[str, float] | None = None) -> None:
        """Start from ``previous`` (see :meth:`parse`): counters and last values."""
        prev = dict(previous or {})
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.runs = Counter("tenantry_monitor_runs",
                            "Monitoring runs, by outcome: ok, already_done (the run id had "
                            "been written), failed", ["outcome"], registry=r)
        self.flagged = Gauge("tenantry_monitor_flagged_tenants",
                             "Tenants the last successful monitoring run flagged", registry=r)
        self.tenants = Gauge("tenantry_monitor_tenants",
                             "Tenants the last successful monitoring run wrote a row for",
                             registry=r)
        self.last_success = Gauge("tenantry_monitor_last_success_timestamp_seconds",
                                  "When the last successful monitoring run ended (Unix time)",
                                  registry=r)
        for outcome in MONITOR_OUTCOMES:
            self.runs.labels(outcome).inc(prev.get(f"runs:{outcome}", 0.0))
        self.flagged.set(prev.get("flagged", 0.0))
        self.tenants.set(prev.get("tenants", 0.0))
        self.last_success.set(prev.get("last_success", 0.0))

    @staticmethod
    def parse(text: str) -> dict[str, float]:
        """The values of a text file this class wrote (unknown lines are ignored)."""
        from prometheus_client.parser import text_string_to_metric_families

        names = {"tenantry_monitor_flagged_tenants": "flagged",
                 "tenantry_monitor_tenants": "tenants",
                 "tenantry_monitor_last_success_timestamp_seconds": "last_success"}
        out: dict[str, float] = {}
        try:
            for family in text_string_to_metric_families(text):
                for s in family.samples:
                    if s.name == "tenantry_monitor_runs_total":
                        out[f"runs:{s.labels.get('outcome', '')}"] = s.value
                    elif s.name in names:
                        out[names[s.name]] = s.value
        except ValueError:  # a damaged file: start again from zero
            return {}
        return out

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
