"""HAProxy's own counters (``show stat``) as tenantry Prometheus series.

The ingress's part of ``/metrics``: what HAProxy answered and refused before any model host
saw a request (400/408/411/413/503 of its own), connections, retries and redispatches,
and how many model hosts it can route to. No per-tenant labels.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from engine.ingress.config import FRONTEND, HOSTS_BACKEND, SLOT_PREFIX
from engine.ingress.runtime import StatRow

__all__ = ["ingress_page", "up_slots"]

_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "other")


def _num(row: StatRow, key: str) -> float:
    try:
        return float(row.get(key) or 0)
    except ValueError:
        return 0.0


def up_slots(rows: Iterable[StatRow]) -> list[int]:
    """Slots of the hosts backend HAProxy currently routes to (health checks passing)."""
    out = []
    for row in rows:
        name = row.get("svname", "")
        if (row.get("pxname") == HOSTS_BACKEND and name.startswith(SLOT_PREFIX)
                and name[len(SLOT_PREFIX):].isdigit() and row.get("status", "").startswith("UP")):
            out.append(int(name[len(SLOT_PREFIX):]))
    return out


class _StatCollector(Collector):
    def __init__(self, rows: list[StatRow]) -> None:
        self.rows = rows

    def collect(self) -> Iterable[Metric]:
        fe = next((r for r in self.rows if r.get("pxname") == FRONTEND
                   and r.get("svname") == "FRONTEND"), {})
        be = next((r for r in self.rows if r.get("pxname") == HOSTS_BACKEND
                   and r.get("svname") == "BACKEND"), {})
        requests = CounterMetricFamily(
            "tenantry_ingress_requests", "HTTP responses sent by the ingress, by status class",
            labels=["code"])
        for cls in _CLASSES:
            requests.add_metric([cls], _num(fe, f"hrsp_{cls}"))
        yield requests
        for name, doc, key, row in (
            ("tenantry_ingress_connections", "Client connections accepted by the ingress",
             "conn_tot", fe),
            ("tenantry_ingress_denied", "Requests refused by an ingress rule (size, framing)",
             "dreq", fe),
            ("tenantry_ingress_request_errors",
             "Malformed, timed-out or aborted client requests", "ereq", fe),
            ("tenantry_ingress_retries", "Connection retries to model hosts", "wretr", be),
            ("tenantry_ingress_redispatches", "Requests moved to another model host",
             "wredis", be),
        ):
            yield CounterMetricFamily(name, doc, value=_num(row, key))
        yield GaugeMetricFamily("tenantry_ingress_open_connections",
                                "Client connections open now", value=_num(fe, "scur"))
        yield GaugeMetricFamily("tenantry_ingress_queued", "Requests waiting for a model host",
                                value=_num(be, "qcur"))
        yield GaugeMetricFamily("tenantry_ingresses", "Ingress processes answering",
                                value=1.0)
        yield GaugeMetricFamily("tenantry_replicas",
                                "Model-host replicas the ingress routes to (health checks up)",
                                value=float(len(up_slots(self.rows))))


def ingress_page(rows: list[StatRow]) -> str:
    """The Prometheus text of one ingress's HAProxy stats."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatCollector(rows))
    return generate_latest(registry).decode()
