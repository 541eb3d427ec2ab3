"""Tenant -> replica placement: rendezvous hashing with bounded load.

Every tenant ranks the replicas by ``hash(tenant, replica)``; its first choice is its
owner, so R replicas' caches partition the tenants and add up. A replica whose in-flight
count reaches ``ceil(c * mean)`` is skipped for the next in the tenant's order (Mirrokni
et al., "Consistent Hashing with Bounded Loads"), so a very hot tenant spills onto a second
replica instead of saturating one. Membership changes move only the tenants of the
replica that came or went.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

__all__ = ["rendezvous_order", "BoundedLoadBalancer"]


def _score(tenant: str, replica: str) -> int:
    digest = hashlib.blake2b(f"{tenant}\x00{replica}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous_order(tenant: str, replicas: Sequence[str]) -> list[str]:
    """Replicas in the tenant's preference order (highest score first)."""
    return sorted(replicas, key=lambda r: _score(tenant, r), reverse=True)


class BoundedLoadBalancer:
    """Chooses a replica per request from rendezvous order and live in-flight counts."""

    def __init__(self, load_factor: float = 1.25, min_bound: int = 8,
                 memo_size: int = 65536) -> None:
        if load_factor < 1.0:
            raise ValueError("load_factor must be >= 1")
        self.load_factor = load_factor
        # Below this many in-flight requests a replica is never "overloaded": spilling a
        # tenant at tiny queue depths would only cost cache misses.
        self.min_bound = min_bound
        self.replicas: tuple[str, ...] = ()
        self._memo: dict[str, list[str]] = {}
        self._memo_size = memo_size
        self.spills = 0  # requests sent to a replica other than the tenant's owner

    def set_replicas(self, replicas: Sequence[str]) -> bool:
        """Set the live replica ids; True if membership changed."""
        new = tuple(sorted(replicas))
        if new == self.replicas:
            return False
        self.replicas = new
        self._memo.clear()
        return True

    def order(self, tenant: str) -> list[str]:
        """The tenant's preference order over the live replicas (memoised)."""
        order = self._memo.get(tenant)
        if order is None:
            if len(self._memo) >= self._memo_size:
                self._memo.clear()
            order = self._memo[tenant] = rendezvous_order(tenant, self.replicas)
        return order

    def owner(self, tenant: str) -> str | None:
        """The replica that owns (caches) the tenant when load is even."""
        order = self.order(tenant)
        return order[0] if order else None

    def choose(self, tenant: str, inflight: Mapping[str, int]) -> list[str]:
        """Replicas to try, in order: the first under the load bound, then the rest."""
        order = self.order(tenant)
        if len(order) <= 1:
            return list(order)
        total = sum(inflight.get(r, 0) for r in order)
        bound = max(self.min_bound, math.ceil(self.load_factor * (total + 1) / len(order)))
        for i, replica in enumerate(order):
            if inflight.get(replica, 0) < bound:
                if i:
                    self.spills += 1
                    return [replica] + order[:i] + order[i + 1:]
                return list(order)
        return list(order)
