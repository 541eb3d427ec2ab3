"""Scrape the server's Prometheus /metrics and diff two scrapes into per-stage figures.

Families are parsed with ``prometheus_client.parser`` (which strips ``_total`` from
counter family names; sample names keep it). A missing metric reads as None, so the tool
still works against servers that expose only part of tenantry's metric set.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["CacheDelta", "MetricsSnapshot", "diff", "parse_metrics", "scrape"]

_SCRAPE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class MetricsSnapshot:
    """The cache-related figures of one scrape (None: the server does not expose it)."""

    hits: float | None = None
    misses: float | None = None
    coalesced: float | None = None  # waited on another request's load (already in hits)
    evictions: float | None = None
    loads: float | None = None  # count of tenantry_model_load_seconds observations
    load_seconds: float | None = None  # sum of tenantry_model_load_seconds
    cache_bytes: float | None = None
    cache_models: float | None = None
    replicas: float | None = None  # tenantry_replicas gauge, when the server exports it


@dataclass(frozen=True)
class CacheDelta:
    """What happened to the server's caches during one stage."""

    hit_rate: float | None
    hits: float | None
    misses: float | None
    loads: float | None
    evictions: float | None
    mean_load_ms: float | None
    cache_bytes: float | None  # after the stage
    cache_models: float | None  # after the stage

    @property
    def mean_model_bytes(self) -> float | None:
        """Average bytes per cached model, from the two gauges."""
        if self.cache_bytes and self.cache_models:
            return self.cache_bytes / self.cache_models
        return None


_SAMPLES = {
    "tenantry_cache_hits_total": "hits",
    "tenantry_cache_misses_total": "misses",
    "tenantry_cache_coalesced_total": "coalesced",
    "tenantry_cache_evictions_total": "evictions",
    "tenantry_model_load_seconds_count": "loads",
    "tenantry_model_load_seconds_sum": "load_seconds",
    "tenantry_cache_bytes": "cache_bytes",
    "tenantry_cache_models": "cache_models",
    "tenantry_replicas": "replicas",
}


def parse_metrics(text: str) -> MetricsSnapshot:
    """Sum the samples tenantry cares about over all label sets.

    Args:
        text: Prometheus text exposition.

    Returns:
        the snapshot.
    """
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            field_name = _SAMPLES.get(sample.name)
            if field_name is not None:
                values[field_name] = values.get(field_name, 0.0) + float(sample.value)
    return MetricsSnapshot(**values)


def scrape(url: str) -> MetricsSnapshot | None:
    """GET ``url`` (a /metrics endpoint); None when it is unreachable or not Prometheus text."""
    try:
        with urllib.request.urlopen(url, timeout=_SCRAPE_TIMEOUT_S) as resp:
            text = resp.read().decode("utf-8", "replace")
        return parse_metrics(text)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _delta(after: float | None, before: float | None) -> float | None:
    if after is None or before is None:
        return None
    return max(0.0, after - before)  # a restarted replica resets counters


def diff(before: MetricsSnapshot | None, after: MetricsSnapshot | None) -> CacheDelta:
    """Per-stage cache figures from the scrapes taken before and after a stage."""
    if before is None or after is None:
        return CacheDelta(None, None, None, None, None, None, None, None)
    hits, misses = _delta(after.hits, before.hits), _delta(after.misses, before.misses)
    # The server counts a request that waited on another request's load as a hit (as the
    # trace model of an LRU does); tenantry_cache_coalesced_total reports those waits apart.
    rate = hits / (hits + misses) if hits is not None and misses is not None and hits + misses \
        else None
    loads = _delta(after.loads, before.loads)
    load_s = _delta(after.load_seconds, before.load_seconds)
    mean_ms = 1000.0 * load_s / loads if loads and load_s is not None else None
    return CacheDelta(rate, hits, misses, loads, _delta(after.evictions, before.evictions),
                      mean_ms, after.cache_bytes, after.cache_models)
