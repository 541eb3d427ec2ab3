"""Where the model-host replicas are: a small Ray actor the router reads.

Replicas heartbeat their HTTP endpoint every second; an endpoint silent for ``ttl_s`` is
dropped, so a killed replica leaves routing within seconds and its Serve-started successor
joins as soon as it reports. The router also leaves per-tenant request counts here, so a
starting replica knows which tenants are hot.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import ray

__all__ = ["Endpoint", "Directory", "directory_name", "find_directory",
           "get_or_create_directory", "NAMESPACE"]

NAMESPACE = "tenantry"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One model-host replica's HTTP address."""

    replica_id: str
    host: str
    port: int
    started_at: float
    models: int = 0
    nbytes: int = 0

    @property
    def address(self) -> str:
        """``host:port``."""
        return f"{self.host}:{self.port}"


class _Directory:
    """Actor body: endpoints with last-seen times, and tenant heat."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self.endpoints: dict[str, tuple[Endpoint, float]] = {}
        self.heat: Counter[str] = Counter()

    def heartbeat(self, endpoint: Endpoint) -> None:
        self.endpoints[endpoint.replica_id] = (endpoint, time.monotonic())

    def leave(self, replica_id: str) -> None:
        self.endpoints.pop(replica_id, None)

    def live(self) -> list[Endpoint]:
        now = time.monotonic()
        for rid, (_, seen) in list(self.endpoints.items()):
            if now - seen > self.ttl_s:
                del self.endpoints[rid]
        return [ep for ep, _ in self.endpoints.values()]

    def report_heat(self, counts: dict[str, int]) -> None:
        # Exponential decay keeps "hot" meaning "hot lately".
        for tenant in list(self.heat):
            self.heat[tenant] //= 2
            if not self.heat[tenant]:
                del self.heat[tenant]
        self.heat.update(counts)
        if len(self.heat) > 100_000:
            self.heat = Counter(dict(self.heat.most_common(50_000)))

    def hot_tenants(self, limit: int) -> list[str]:
        return [t for t, _ in self.heat.most_common(limit)]

    def ping(self) -> bool:
        return True


Directory = ray.remote(num_cpus=0, max_restarts=-1)(_Directory)


def directory_name(app_name: str) -> str:
    """The actor name of an app's directory."""
    return f"tenantry-directory:{app_name}"


def get_or_create_directory(app_name: str, ttl_s: float) -> Any:
    """The app's directory actor, created on the caller's node if it is not running.

    The router calls this, so the directory lives beside it (on the head node of a
    cluster) and does not die with a worker node that hosts model replicas.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return Directory.options(name=directory_name(app_name), namespace=NAMESPACE,
                             get_if_exists=True, lifetime="detached",
                             scheduling_strategy=here).remote(ttl_s)


def find_directory(app_name: str) -> Any | None:
    """The app's directory actor if the router has created it, else None."""
    try:
        return ray.get_actor(directory_name(app_name), namespace=NAMESPACE)
    except ValueError:
        return None
