"""Where the model-host replicas are: a small Ray actor every node's ingress reads.

Replicas heartbeat their HTTP endpoint every second and get back their **slot**: the
lowest free number in ``1..slots``, kept while the replica lives. Every ingress puts a
replica in the HAProxy server slot of that number, so all ingresses hash tenants onto the
same ring; a replica that replaces a dead one takes its free slot, and with it the same
tenants. An endpoint silent for ``ttl_s`` is dropped and its slot freed. Replicas also
leave the tenants they hold here, by slot, so a replica taking a slot over preloads what
its predecessor held.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import ray

__all__ = [
    "NAMESPACE",
    "Directory",
    "Endpoint",
    "directory_name",
    "find_directory",
    "get_or_create_directory",
]

NAMESPACE = "tenantry"
HELD_LIMIT = 20_000


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One model-host replica's HTTP address."""

    replica_id: str
    host: str
    port: int
    started_at: float
    models: int = 0
    nbytes: int = 0
    slot: int = 0

    @property
    def address(self) -> str:
        """``host:port``."""
        return f"{self.host}:{self.port}"


class _Directory:
    """Actor body: endpoints with last-seen times and slots, and held tenants by slot."""

    def __init__(self, ttl_s: float, slots: int = 64) -> None:
        self.ttl_s = ttl_s
        self.slots = slots
        self.endpoints: dict[str, tuple[Endpoint, float]] = {}
        self.held: dict[int, list[str]] = {}

    def heartbeat(self, endpoint: Endpoint) -> int:
        """Record a replica as alive; returns its slot (0: every slot is taken)."""
        self._expire()
        known = self.endpoints.get(endpoint.replica_id)
        slot = known[0].slot if known else self._free_slot()
        self.endpoints[endpoint.replica_id] = (replace(endpoint, slot=slot), time.monotonic())
        return slot

    def _free_slot(self) -> int:
        taken = {ep.slot for ep, _ in self.endpoints.values()}
        return next((s for s in range(1, self.slots + 1) if s not in taken), 0)

    def _expire(self) -> None:
        now = time.monotonic()
        for rid, (_, seen) in list(self.endpoints.items()):
            if now - seen > self.ttl_s:
                del self.endpoints[rid]

    def leave(self, replica_id: str) -> None:
        self.endpoints.pop(replica_id, None)

    def live(self) -> list[Endpoint]:
        """Endpoints heard from within ``ttl_s`` (with their slots)."""
        self._expire()
        return [ep for ep, _ in self.endpoints.values() if ep.slot]

    def report_held(self, slot: int, tenants: list[str]) -> None:
        """The tenants the replica in ``slot`` holds now, most recently used first."""
        self.held[slot] = tenants[:HELD_LIMIT]

    def held_tenants(self, slot: int) -> list[str]:
        """What the replicas of ``slot`` last held, most recently used first."""
        return list(self.held.get(slot, []))

    def ping(self) -> bool:
        return True


Directory = ray.remote(num_cpus=0, max_restarts=-1)(_Directory)


def directory_name(app_name: str) -> str:
    """The actor name of an app's directory."""
    return f"tenantry-directory:{app_name}"


def get_or_create_directory(app_name: str, ttl_s: float, slots: int = 64,
                            node_id: str | None = None) -> Any:
    """The app's directory actor, created on ``node_id`` (soft) if it is not running.

    The launcher creates it from the driver, so on a cluster it lives on the head node
    and does not die with a worker node that hosts model replicas.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = node_id or ray.get_runtime_context().get_node_id()
    here = NodeAffinitySchedulingStrategy(node, soft=True)
    return Directory.options(name=directory_name(app_name), namespace=NAMESPACE,
                             get_if_exists=True, lifetime="detached",
                             scheduling_strategy=here).remote(ttl_s, slots)


def head_node_id() -> str | None:
    """The Ray head node's id (the directory's home), or None if it cannot be told."""
    for node in ray.nodes():
        if node.get("Alive") and "node:__internal_head__" in node.get("Resources", {}):
            return str(node["NodeID"])
    return None


def find_directory(app_name: str) -> Any | None:
    """The app's directory actor if it is running, else None."""
    try:
        return ray.get_actor(directory_name(app_name), namespace=NAMESPACE)
    except ValueError:
        return None
