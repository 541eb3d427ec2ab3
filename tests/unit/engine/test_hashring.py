from __future__ import annotations

from collections import Counter
from typing import Any

from engine.serving.hashring import BoundedLoadBalancer, rendezvous_order


def test_owner_is_stable_and_balanced() -> None:
    replicas = ["r1", "r2", "r3"]
    owners = Counter(rendezvous_order(f"t{i}", replicas)[0] for i in range(3000))
    assert set(owners) == set(replicas)
    assert min(owners.values()) > 800
    assert rendezvous_order("acme", replicas) == rendezvous_order("acme", list(reversed(replicas)))


def test_removing_a_replica_moves_only_its_tenants() -> None:
    before = {f"t{i}": rendezvous_order(f"t{i}", ["r1", "r2", "r3"])[0] for i in range(2000)}
    after = {t: rendezvous_order(t, ["r1", "r3"])[0] for t in before}
    moved = [t for t in before if before[t] != after[t]]
    assert moved and all(before[t] == "r2" for t in moved)


def test_bounded_load_spills_a_hot_tenant_to_its_second_choice() -> None:
    lb = BoundedLoadBalancer(load_factor=1.25, min_bound=4)
    lb.set_replicas(["r1", "r2"])
    owner, second = lb.order("hot")
    assert lb.choose("hot", {owner: 3, second: 0})[0] == owner
    assert lb.choose("hot", {owner: 12, second: 0}) == [second, owner]
    assert lb.spills == 1


def test_small_queues_never_spill() -> None:
    lb = BoundedLoadBalancer(load_factor=1.25, min_bound=8)
    lb.set_replicas(["r1", "r2"])
    owner = lb.owner("t")
    for depth in range(8):
        assert lb.choose("t", {owner: depth})[0] == owner
    assert lb.spills == 0


def test_membership_change_resets_memo() -> None:
    lb = BoundedLoadBalancer()
    assert lb.set_replicas(["a", "b"]) is True
    assert lb.set_replicas(["b", "a"]) is False
    lb.order("t")
    lb.set_replicas(["a"])
    assert lb.order("t") == ["a"]


def test_router_keeps_a_silent_replica_until_it_refuses() -> None:
    from engine.serving.directory import Endpoint
    from engine.serving.router import RouterCore
    from engine.settings import ServeSettings

    class NoDirectory:
        async def live(self) -> list[Endpoint]:
            return []

        async def report_heat(self, counts: dict[str, int]) -> None:
            return None

    core = RouterCore(ServeSettings(replica_ttl_s=5.0), NoDirectory())
    a, b = Endpoint("a", "127.0.0.1", 1, 0.0), Endpoint("b", "127.0.0.1", 2, 0.0)
    core.set_endpoints([a, b])
    core.set_endpoints([a])  # b missed heartbeats (e.g. a stalled core worker): still routed
    assert sorted(core.endpoints) == ["a", "b"]
    core.mark_unreachable("b")  # b refused a connection: gone at once
    assert sorted(core.endpoints) == ["a"]
    core.set_endpoints([a, b])  # listed again right away (stale heartbeat): stays out
    assert sorted(core.endpoints) == ["a"]
    core.set_endpoints([])  # a directory hiccup never empties routing
    assert sorted(core.endpoints) == ["a"]


def test_router_forgets_replicas_long_gone(monkeypatch: Any) -> None:
    from engine.serving import router as router_module
    from engine.serving.directory import Endpoint
    from engine.serving.router import RouterCore
    from engine.settings import ServeSettings

    class NoDirectory:
        async def live(self) -> list[Endpoint]:
            return []

        async def report_heat(self, counts: dict[str, int]) -> None:
            return None

    now = [1000.0]

    class Clock:
        @staticmethod
        def monotonic() -> float:
            return now[0]

    monkeypatch.setattr(router_module, "time", Clock)
    core = RouterCore(ServeSettings(replica_ttl_s=5.0), NoDirectory())
    keep = Endpoint("keep", "127.0.0.1", 1, 0.0)
    for i in range(200):  # replicas come and go: each listed once, some refuse
        ep = Endpoint(f"r{i}", "127.0.0.1", 100 + i, 0.0)
        core.set_endpoints([keep, ep])
        if i % 2:
            core.mark_unreachable(ep.replica_id)
        now[0] += 3.0
    core.set_endpoints([keep])
    assert sorted(core.endpoints) == ["keep", "r194", "r196", "r198"]  # silent < 4 TTLs
    assert len(core._listed_at) <= 12 and len(core._unreachable) <= 2
    now[0] += 100.0
    core.set_endpoints([keep])
    assert sorted(core.endpoints) == ["keep"]
    assert set(core._listed_at) == {"keep"} and not core._unreachable
