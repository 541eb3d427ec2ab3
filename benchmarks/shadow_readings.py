"""What ``w_shadow.py`` reads from a running deployment around each phase: the shadow
outcome counters, the hot tenant's replica (pid, spool, niceness, loop-lag histogram), and
the CPU seconds of that replica, its shadow worker, the box and every process."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from procs import box_busy_s, cpu_by_process, pid_cpu_seconds

__all__ = ["cpu_between", "lag_p99_ms", "replica_reading", "shadow_counts"]


def shadow_counts(url: str) -> dict[str, float]:
    """``tenantry_shadow_requests_total`` by outcome, from the deployment's ``/metrics``."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    return {s.labels["outcome"]: s.value for fam in text_string_to_metric_families(text)
            for s in fam.samples if s.name == "tenantry_shadow_requests_total"}


def replica_reading(url: str, tenant: str) -> dict[str, Any]:
    """The replica serving ``tenant``: its pid, spool, niceness and loop-lag histogram
    buckets, and CPU seconds so far (it, its shadow worker, the box, every process)."""
    doc = json.loads(urllib.request.urlopen(f"{url}/v1/tenants/{tenant}/shadow",
                                            timeout=10).read())
    replica = doc["replica"]
    worker_pid = (replica.get("worker") or {}).get("pid")
    cpu = {"replica": pid_cpu_seconds(replica["pid"]), "worker": pid_cpu_seconds(worker_pid),
           "box": box_busy_s()}
    return {"pid": replica["pid"], "spool": replica["spool"], "niceness": replica.get("niceness"),
            "loop_lag": [(float(le), float(n)) for le, n in replica["loop_lag"]],
            "cpu_s": cpu, "by_process": cpu_by_process()}


def lag_p99_ms(before: list[tuple[float, float]], after: list[tuple[float, float]]) -> float:
    """p99 of the loop lag observed between two cumulative histogram readings (the upper
    bound of the bucket holding it; inf: beyond the last bound)."""
    deltas = [(le, n - dict(before).get(le, 0.0)) for le, n in after]
    total = deltas[-1][1] if deltas else 0.0
    if total <= 0:
        return float("nan")
    return next(le for le, n in deltas if n >= 0.99 * total) * 1e3


def cpu_between(before: dict[str, Any], after: dict[str, Any]
                ) -> tuple[dict[str, float], dict[str, float]]:
    """CPU seconds between two :func:`replica_reading` s: of the hot replica, its
    shadow worker and the box (nan: a process changed), and of every process by name."""
    cpu = {k: after["cpu_s"][k] - before["cpu_s"][k] for k in after["cpu_s"]}
    used = {k: v - before["by_process"].get(k, 0.0) for k, v in after["by_process"].items()}
    return cpu, {k: round(v, 2) for k, v in used.items() if v > 0}
